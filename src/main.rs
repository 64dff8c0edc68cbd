//! The `bucketftp` binary: flags → config → [`bucketftp::run`].

use anyhow::Context;
use bucketftp::config::{self, Overrides, UserConfig};
use clap::{Parser, Subcommand};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;

/// mimalloc instead of glibc's malloc: upload buffers are filled on tokio
/// workers and freed on the store client's threads, a pattern under which
/// glibc's per-thread arenas keep tens of MiB that are no longer in use
/// (measured by tests/it/memory_bound.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An FTP server that stores files in S3, GCS, Azure Blob or a local directory.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

/// The flags of `bucketftp` itself. Each one that stands for a key of the
/// file is handed to the loader as that key (see `load`), the top layer
/// over file and environment, so it is parsed and reported like the key.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "BUCKETFTP_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// FTP control address, e.g. 0.0.0.0:21 (overrides server.listen).
    #[arg(long)]
    listen: Option<String>,
    /// Metrics/health address, or "off" (overrides http.listen).
    #[arg(long)]
    http: Option<String>,
    /// Storage URL: file:///dir, memory://, s3://bucket/prefix, gs://…, az://… (overrides storage.url).
    #[arg(long)]
    storage: Option<String>,
    /// Storage option KEY=VALUE (object_store's names, e.g. aws_endpoint=http://127.0.0.1:9000); repeatable.
    #[arg(long = "storage-option", value_name = "KEY=VALUE")]
    storage_options: Vec<String>,
    /// A user with full access to the whole store, NAME:PASSWORD; repeatable.
    /// Also from BUCKETFTP_USER (one user), which keeps the password out of
    /// the command line (/proc/PID/cmdline is readable by every local user).
    #[arg(
        long = "user",
        value_name = "NAME:PASSWORD",
        env = "BUCKETFTP_USER",
        hide_env_values = true
    )]
    users: Vec<String>,
    /// Passive data port range LOW-HIGH (overrides server.passive_ports).
    #[arg(long)]
    passive_ports: Option<String>,
    /// Log format: text or json (overrides log.format).
    #[arg(long)]
    log_format: Option<String>,
    /// Implicit FTPS address, e.g. 0.0.0.0:990 (overrides tls.implicit_listen; needs [tls]).
    #[arg(long)]
    tls_implicit_listen: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print an argon2id hash for users[].password_hash (password from the argument or stdin).
    HashPassword {
        /// The password; read from standard input when omitted.
        password: Option<String>,
    },
    /// Validate the configuration and exit.
    CheckConfig,
    /// Exit 0 when the running gateway's /readyz answers 200, 1 otherwise
    /// (for Docker's HEALTHCHECK and compose, where the image has no curl).
    Healthcheck {
        /// The http endpoint to ask, IP:PORT; default: http.listen from the
        /// configuration, a wildcard address asked on loopback.
        #[arg(long)]
        address: Option<std::net::SocketAddr>,
    },
}

/// mimalloc's number for its `purge_delay` option (the `mi_option_e` enum
/// of the mimalloc.h that libmimalloc-sys builds; the crate names only some
/// options). `purge_delay_option_is_the_right_one` checks it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before returning it to the
/// system, in milliseconds (its own default is 1 s in the v3 we build).
///
/// A second is long enough for a download to hold freed range frames on one
/// thread while the next ones are allocated on another: a single S3 RETR
/// 1 GiB peaked at 61 MiB RSS with it, 51 MiB at 0. But 0 makes every buffer
/// freed and allocated again within a transfer a fresh mapping, a page
/// fault and a zeroed page per 4 KiB: at 0 a local RETR 1 GiB took 1.0 s of
/// CPU instead of 0.45 and ran at 0.42× vsftpd (docs/benchmarks.md, "Every
/// buffer a fresh page"). 20 ms keeps buffers reused within a transfer and
/// returns them as soon as it pauses: 56 MiB for that RETR, 0.45 s of CPU.
/// An operator's own `MIMALLOC_PURGE_DELAY` still wins.
const PURGE_DELAY_MS: std::ffi::c_long = 20;

fn set_purge_delay() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option, which mimalloc reads whenever it
        // schedules a purge; no memory is touched.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

fn main() -> std::process::ExitCode {
    set_purge_delay();
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "bucketftp: {}",
                e.chain()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(": ")
            );
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let env: BTreeMap<String, String> = std::env::vars().collect();
    match cli.command {
        Some(Command::HashPassword { password }) => {
            let password = match password {
                Some(p) => p,
                None => {
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            anyhow::ensure!(!password.is_empty(), "empty password");
            println!(
                "{}",
                bucketftp::hash_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?
            );
            Ok(())
        }
        Some(Command::CheckConfig) => {
            let config = load(&cli.serve, &env)?;
            bucketftp::build_accounts(&config, &env)?;
            println!(
                "configuration ok: {} user(s), storage {}",
                config.users.len(),
                config.storage.url
            );
            Ok(())
        }
        Some(Command::Healthcheck { address }) => {
            let listen = match address {
                Some(address) => Some(address),
                None => load(&cli.serve, &env)?.http.listen,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(bucketftp::healthcheck(
                listen,
                bucketftp::HEALTHCHECK_TIMEOUT,
            ))?;
            println!("ready");
            Ok(())
        }
        None => serve(cli.serve, env),
    }
}

fn load(args: &ServeArgs, env: &BTreeMap<String, String>) -> anyhow::Result<config::Config> {
    let mut overrides = Overrides::default();
    for (key, flag) in [
        ("server.listen", &args.listen),
        ("http.listen", &args.http),
        ("storage.url", &args.storage),
        ("server.passive_ports", &args.passive_ports),
        ("log.format", &args.log_format),
        ("tls.implicit_listen", &args.tls_implicit_listen),
    ] {
        if let Some(value) = flag {
            overrides.set(key, value.as_str());
        }
    }
    for kv in &args.storage_options {
        let (name, value) = kv
            .split_once('=')
            .with_context(|| format!("--storage-option {kv:?}: expected KEY=VALUE"))?;
        overrides.set_storage_option(name, value);
    }
    let mut config = config::load(args.config.as_deref(), env, &overrides)?;
    for spec in &args.users {
        let (name, password) = spec
            .split_once(':')
            .with_context(|| "--user: expected NAME:PASSWORD".to_string())?;
        config.users.retain(|u| u.name != name);
        config.users.push(full_access_user(name, password)?);
    }
    Ok(config)
}

fn full_access_user(name: &str, password: &str) -> anyhow::Result<UserConfig> {
    let hash = bucketftp::hash_password(password).map_err(|e| anyhow::anyhow!("{e}"))?;
    UserConfig::full_access(name, hash).with_context(|| format!("--user {name}"))
}

fn serve(args: ServeArgs, env: BTreeMap<String, String>) -> anyhow::Result<()> {
    let mut config = load(&args, &env)?;
    bucketftp::init_logging(&config.log);
    let descriptors = bucketftp::descriptor_limit::raise();
    if descriptors.before != descriptors.now {
        tracing::info!(before = ?descriptors.before, now = ?descriptors.now, "open-file limit raised to the hard limit");
    }
    if !descriptors.fits(config.server.max_sessions) {
        tracing::warn!(
            limit = ?descriptors.now,
            max_sessions = config.server.max_sessions,
            "open-file limit below server.max_sessions + {}: connections over it fail to be accepted; raise the hard limit (ulimit -n, the container's nofile)",
            bucketftp::descriptor_limit::SPARE
        );
    }
    let generated = if config.users.is_empty() && !config.auth.anonymous {
        let password: String = {
            use rand::Rng;
            rand::thread_rng()
                .sample_iter(&rand::distributions::Alphanumeric)
                .take(16)
                .map(char::from)
                .collect()
        };
        config.users.push(full_access_user("bucketftp", &password)?);
        Some(password)
    } else {
        None
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let ftp = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {} (server.listen)", config.server.listen))?;
        let http = match config.http.listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (http.listen)"))?,
            ),
            None => None,
        };
        let ftps_implicit = match config.tls.as_ref().and_then(|t| t.implicit_listen) {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (tls.implicit_listen)"))?,
            ),
            None => None,
        };
        let addr = ftp.local_addr()?;
        let (accounts, stores) = bucketftp::build_accounts(&config, &env)?;
        // The banner only once the storage answered: a wrong bucket or
        // endpoint shows as one error line, not as a server that seems up.
        bucketftp::check_storage(&stores).await?;
        println!("bucketftp serving {} on ftp://{addr}/", config.storage.url);
        match &generated {
            Some(password) => println!("log in as user \"bucketftp\" with password \"{password}\", e.g.: curl -T FILE ftp://bucketftp:{password}@{addr}/"),
            None => println!("log in with a configured user, e.g.: curl -u NAME -T FILE ftp://{addr}/"),
        }
        if let Some(implicit) = &ftps_implicit {
            println!("implicit FTPS on ftps://{}/", implicit.local_addr()?);
        }
        if let Some(http) = &http {
            println!("metrics and health on http://{}/metrics", http.local_addr()?);
        }
        let transfers = bucketftp::Transfers::new(config.server.max_uploads);
        bucketftp::serve_checked(
            config,
            accounts,
            stores,
            transfers,
            bucketftp::Listeners {
                ftp,
                ftps_implicit,
                http,
            },
            shutdown_signal(),
        )
        .await?;
        anyhow::Ok(())
    })
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_delay_option_is_the_right_one() {
        // mimalloc v3's options.c: purge_delay defaults to 1000 (ms), its
        // neighbours deprecated_eager_commit_delay to 1 and use_numa_nodes
        // to 0, so a shifted enum would show here.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        let get = |option| unsafe { libmimalloc_sys::mi_option_get(option) };
        assert_eq!(get(MI_OPTION_PURGE_DELAY), 1000);
        assert_eq!(get(MI_OPTION_PURGE_DELAY - 1), 1);
        assert_eq!(get(MI_OPTION_PURGE_DELAY + 1), 0);
        set_purge_delay();
        assert_eq!(get(MI_OPTION_PURGE_DELAY), PURGE_DELAY_MS);
    }
}
