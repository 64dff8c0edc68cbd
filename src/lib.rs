//! bucketftp: an FTP server whose files live in an object store.
//!
//! Devices and programs that only speak FTP (cameras, scanners, PLCs, lab
//! instruments, old batch jobs) upload to bucketftp; the files land as
//! objects in S3, GCS, Azure Blob, a local directory or memory.
//!
//! # Layout
//! Listed from the bottom up: a module imports only from modules above it
//! in this list, never from below, and none from the crate root.
//! - [`errors`]: an error and its causes as one line.
//! - [`descriptor_limit`]: the open-file limit raised at start-up.
//! - [`proxy_protocol`]: the PROXY header a load balancer sends first.
//! - [`metrics`]: Prometheus metrics (and the transfer [`metrics::Direction`]
//!   their labels name).
//! - [`paths`]: FTP path → object key, jailed under the user's home.
//! - [`permissions`], [`passwords`]: what an account may do; PHC hashes.
//! - [`memory_budget`]: the bytes of transfer buffers the process may hold,
//!   shared by every upload and download.
//! - [`read_buffers`]: upload read buffers, recycled instead of freed.
//! - [`integrity`]: digests computed while uploads stream, stored as object
//!   metadata; `Content-Type` from names.
//! - [`instrumented`], [`local_attributes`], [`cloud_attributes`]: the
//!   object_store wrappers every store gets: request metrics; attributes as
//!   xattrs on `file://` and uploads linked into place from anonymous
//!   files; digests written on S3 and Azure multipart objects once
//!   committed.
//! - [`store_url`]: storage URL + options → object store (one code path),
//!   options refused before any request, the probe request.
//! - [`config`]: TOML + environment + flags → validated [`config::Config`].
//! - [`logging`]: the log subscriber and the filter that keeps libunftp's
//!   and object_store's noise (and secrets) out of it.
//! - [`storage_check`]: start-up storage errors worded with endpoint and fix.
//! - [`transfers`]: in-flight transfer registry for graceful shutdown.
//! - [`events`]: a CloudEvents webhook per committed upload.
//! - [`tls`]: the FTPS certificate, parsed once and reloaded on change.
//! - [`backend`]: the libunftp `StorageBackend`: one wrapper (permissions,
//!   jail and home guards, REST offsets, transfers, the upload commit rule,
//!   audit) around the storage engine chosen per account: object_store
//!   (listing, streaming uploads and downloads, directories, the error
//!   table) or unftp-sbe-gcs.
//! - [`auth`]: logins: the libunftp authenticator, lockout.
//! - [`extension_commands`]: HASH, OPTS HASH, XSHA256/XSHA1/XMD5/XCRC and
//!   MFMT through the engine's extension-command hook.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`server`]: the FTP accept loop and session limits.
//! - this file: [`run`] and [`serve`], which wire the above together.
//!
//! The binary (`src/main.rs`) only parses flags and calls [`run`]; tests call
//! [`run`] in-process with listeners bound to port 0.

#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod auth;
mod backend;
mod cloud_attributes;
pub mod config;
pub mod descriptor_limit;
mod errors;
mod events;
mod extension_commands;
mod http;
mod instrumented;
mod integrity;
mod local_attributes;
mod logging;
mod memory_budget;
mod metrics;
mod passwords;
pub mod paths;
mod permissions;
mod proxy_protocol;
mod read_buffers;
mod server;
mod storage_check;
mod store_url;
mod tls;
mod transfers;

use auth::{Lockout, Login};
use backend::download::DownloadSettings;
use backend::upload::UploadSettings;
use backend::Account;
use backend::BackendSettings;
use config::Config;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use store_url::{open_store, StoreUrlError};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::Accounts;
pub use cloud_attributes::Precondition;
pub use errors::error_chain;
pub use http::{healthcheck, HEALTHCHECK_TIMEOUT};
pub use local_attributes::AwaitDigest;
pub use logging::init_logging;
pub use metrics::LIBUNFTP_NAMES;
pub use passwords::hash_password;
pub use store_url::OpenedStore;
pub use transfers::Transfers;

/// Why the gateway could not start.
#[derive(Debug, Error)]
pub enum RunError {
    /// A storage URL could not be opened.
    #[error("storage {url} cannot be used")]
    Storage {
        /// The URL (credentials removed).
        url: String,
        /// What went wrong.
        #[source]
        source: StoreUrlError,
    },
    /// A storage answered the start-up probe with an error (missing bucket,
    /// wrong credentials, unreachable endpoint).
    #[error("storage {url} is not usable: {reason}")]
    StorageUnreachable {
        /// The URL (credentials removed).
        url: String,
        /// The storage's answer.
        reason: String,
    },
    /// A user's home cannot become a key prefix.
    #[error("home of user {user} is not a valid path")]
    Home {
        /// The user.
        user: String,
        /// Why.
        #[source]
        source: paths::PathError,
    },
    /// The unftp-sbe-gcs engine could not be configured.
    #[error("storage.engine unftp-sbe-gcs: {0}")]
    Engine(String),
    /// Hashing failed (no OS randomness).
    #[error("cannot prepare password verification: {0}")]
    Hash(String),
    /// The upload-event sender could not start.
    #[error("events")]
    Events(#[source] events::EventsError),
}

/// The engine that stores an account's files, chosen once: unftp-sbe-gcs
/// when `storage.engine` names it (accounts on the default store only),
/// object_store otherwise.
fn engine_for(
    store: &OpenedStore,
    jail: &paths::Jail,
    sbe_gcs: Option<&backend::sbe_gcs::SbeGcsConfig>,
) -> Arc<dyn backend::Engine> {
    match sbe_gcs {
        Some(gcs) => gcs.engine(jail),
        None => Arc::new(backend::ObjectEngine::new(
            store.clone(),
            jail.root().clone(),
        )),
    }
}

/// Opens every store the configuration names and builds the accounts.
///
/// Returns the accounts and the distinct stores (for readiness).
pub fn build_accounts(
    config: &Config,
    env: &BTreeMap<String, String>,
) -> Result<(Accounts, Vec<OpenedStore>), RunError> {
    let retry = config.storage.retry();
    let open = |url: &url::Url, options: &BTreeMap<String, String>| {
        open_store(url, options, env, &retry).map_err(|source| RunError::Storage {
            url: url.to_string(),
            source,
        })
    };
    let default_store = open(&config.storage.url, &config.storage.options)?;
    let sbe_gcs = match config.storage.engine {
        config::StorageEngine::ObjectStore => None,
        config::StorageEngine::UnftpSbeGcs => Some(
            backend::sbe_gcs::SbeGcsConfig::from_options(
                config.storage.url.host_str().unwrap_or_default(),
                &config.storage.options,
                env,
            )
            .map_err(|e| RunError::Engine(error_chain(&e)))?,
        ),
    };
    let mut stores = vec![default_store.clone()];
    let mut users = Vec::new();
    for user in &config.users {
        let store = match &user.storage {
            Some(url) => {
                let store = open(url, &user.storage_options)?;
                stores.push(store.clone());
                store
            }
            None => default_store.clone(),
        };
        let jail = Account::jail_for(&store, &user.home).map_err(|source| RunError::Home {
            user: user.name.clone(),
            source,
        })?;
        let own_store = user.storage.is_some();
        let engine = engine_for(&store, &jail, sbe_gcs.as_ref().filter(|_| !own_store));
        users.push(Login {
            account: Arc::new(Account {
                name: user.name.clone(),
                store,
                permissions: user.permissions,
                enabled: user.enabled,
                engine,
                jail,
            }),
            password_hash: Some(user.password_hash.clone()),
            allowed_networks: user.allowed_networks.clone(),
            tls_required: user.tls_required,
        });
    }
    let auth = &config.auth;
    let anonymous = if auth.anonymous {
        let jail = Account::jail_for(&default_store, &auth.anonymous_home).map_err(|source| {
            RunError::Home {
                user: "anonymous".into(),
                source,
            }
        })?;
        Some(Login {
            account: Arc::new(Account {
                name: "anonymous".into(),
                store: default_store.clone(),
                engine: engine_for(&default_store, &jail, sbe_gcs.as_ref()),
                jail,
                permissions: auth.anonymous_permissions,
                enabled: true,
            }),
            password_hash: None,
            allowed_networks: Vec::new(),
            tls_required: false,
        })
    } else {
        None
    };
    let lockout = Lockout::new(
        config.auth.lockout_attempts,
        config.auth.lockout_attempts_per_address,
        config.auth.lockout_period,
    );
    let accounts =
        Accounts::new(users, anonymous, lockout).map_err(|e| RunError::Hash(e.to_string()))?;
    Ok((accounts, stores))
}

/// The listeners the gateway serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// FTP control connections.
    pub ftp: TcpListener,
    /// Implicit FTPS control connections (`tls.implicit_listen`).
    pub ftps_implicit: Option<TcpListener>,
    /// `/metrics`, `/healthz`, `/readyz` (optional).
    pub http: Option<TcpListener>,
}

/// Runs the gateway until `shutdown` resolves, then drains gracefully.
///
/// Storage is probed once before serving, so a wrong bucket or bad
/// credentials stop start-up with one clear line instead of failing every
/// later session.
pub async fn run(
    config: Config,
    env: &BTreeMap<String, String>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let (accounts, stores) = build_accounts(&config, env)?;
    let transfers = transfers::Transfers::new(config.server.max_uploads);
    serve(config, accounts, stores, transfers, listeners, shutdown).await
}

/// Like [`run`], with accounts, stores and the transfer registry made by the
/// caller (tests keep handles on them to check what landed in the store and
/// to wait until transfers have finished).
pub async fn serve(
    config: Config,
    accounts: Accounts,
    stores: Vec<OpenedStore>,
    transfers: Arc<transfers::Transfers>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    check_storage(&stores).await?;
    serve_checked(config, accounts, stores, transfers, listeners, shutdown).await
}

/// Probes every store once; the error is one line naming the store, its
/// endpoint and the fix (see [`storage_check`]).
pub async fn check_storage(stores: &[OpenedStore]) -> Result<(), RunError> {
    for store in stores {
        if let Err(failure) = store_url::probe::probe_store(store).await {
            return Err(RunError::StorageUnreachable {
                url: store.display_url.clone(),
                reason: storage_check::explain(store, failure).await,
            });
        }
    }
    Ok(())
}

/// [`serve`] after [`check_storage`] passed (the binary prints its banner
/// in between, so nothing claims to serve a store that does not work).
pub async fn serve_checked(
    config: Config,
    accounts: Accounts,
    stores: Vec<OpenedStore>,
    transfers: Arc<transfers::Transfers>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    metrics::init();
    let config = Arc::new(config);
    let events = config
        .events
        .webhook_url
        .as_ref()
        .map(|url| events::Events::start(url, &config.events))
        .transpose()
        .map_err(RunError::Events)?;
    let budget = memory_budget::MemoryBudget::new(
        config.storage.memory_budget.bytes(),
        config.storage.memory_wait,
    );
    let settings = Arc::new(BackendSettings {
        upload: UploadSettings {
            part_size: config.storage.part_size,
            concurrency: config.storage.upload_concurrency,
            budget: budget.clone(),
            idle_timeout: config.server.idle_timeout,
            storage_class: config.storage.storage_class.clone(),
            content_types: config.storage.content_types,
            sha256: config.storage.upload_sha256,
            defer_sha256: false,
            events: events.clone(),
        },
        rename_limit: config.storage.rename_limit,
        mkd_existing_ok: config.server.mkd_existing_ok,
        download: DownloadSettings {
            chunk: config.storage.part_size as u64,
            max_ranges: config.storage.download_concurrency,
            budget,
        },
        listing_mtime_limit: config.storage.listing_mtime_limit,
        // Without [tls] there is no FTPS upload to judge.
        require_close_notify: config.tls.as_ref().is_none_or(|t| t.require_close_notify),
    });
    tracing::info!(
        memory_budget_bytes = settings.upload.budget.total(),
        memory_wait = ?config.storage.memory_wait,
        "transfer buffers bounded by the memory budget"
    );
    let tls = config
        .tls
        .as_ref()
        .map(|t| tls::TlsCertificates::new(t.cert.clone(), t.key.clone()));
    let health = http::Health::new(stores, tls.clone());
    let service = Arc::new(server::FtpService::new(
        config.clone(),
        Arc::new(accounts),
        settings,
        transfers,
        tls,
    ));

    let stop_ftp = CancellationToken::new();
    let stop_http = CancellationToken::new();
    {
        let stop_ftp = stop_ftp.clone();
        let health = health.clone();
        tokio::spawn(async move {
            shutdown.await;
            health.set_shutting_down();
            stop_ftp.cancel();
        });
    }
    let http_task = listeners.http.map(|listener| {
        let health = health.clone();
        let stop = stop_http.clone();
        tokio::spawn(async move {
            http::serve(listener, health, async move { stop.cancelled().await }).await
        })
    });
    health.set_accepting(true);
    metrics::set_ready(true);
    let stop = stop_ftp.clone();
    service
        .serve(listeners.ftp, listeners.ftps_implicit, async move {
            stop.cancelled().await
        })
        .await;
    health.set_accepting(false);
    // Committed files whose SHA-256 is still being computed get it before
    // the process ends (and their events are queued before the drain).
    let left = local_attributes::settle_digests(config.server.shutdown_grace).await;
    if left > 0 {
        tracing::warn!(
            files = left,
            "shutdown grace period over: files left without a stored SHA-256 (HASH computes it on demand)"
        );
    }
    if let Some(events) = &events {
        events.drain(config.server.shutdown_grace).await;
    }
    stop_http.cancel();
    if let Some(task) = http_task {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The modules in the order the `# Layout` section lists them.
    fn layout() -> Vec<String> {
        let lib = include_str!("lib.rs");
        let start = lib
            .find("//! # Layout")
            .expect("lib.rs has a # Layout section");
        lib[start..]
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .filter(|l| l.starts_with("//! - [`"))
            .flat_map(|l| {
                // One bullet may name several modules before its colon.
                let head = l.split(':').next().unwrap_or("");
                head.split("[`")
                    .skip(1)
                    .filter_map(|s| s.split('`').next())
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The crate's modules a file's code (not its comments or tests) names.
    fn imports(source: &str, modules: &[String]) -> BTreeSet<String> {
        let code = source.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        let mut found = BTreeSet::new();
        for line in code.lines().map(|l| l.split("//").next().unwrap_or("")) {
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let rest = rest.trim_start_matches('{');
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.insert(name);
            }
        }
        found.retain(|n| modules.contains(n));
        found
    }

    fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn modules_import_only_what_the_layout_lists_before_them() {
        let order = layout();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let declared: BTreeSet<String> = std::fs::read_dir(&src)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir() || p.extension().is_some_and(|e| e == "rs"))
            .filter_map(|p| p.file_stem()?.to_str().map(String::from))
            .filter(|n| n != "lib" && n != "main")
            .collect();
        let listed: BTreeSet<String> = order.iter().cloned().collect();
        assert_eq!(declared, listed, "every module is in # Layout, once");
        let mut files = Vec::new();
        sources(&src, &mut files);
        for file in files {
            let relative = file.strip_prefix(&src).unwrap();
            let top = relative.components().next().unwrap().as_os_str();
            let top = Path::new(top).file_stem().unwrap().to_str().unwrap();
            let Some(position) = order.iter().position(|m| m == top) else {
                continue; // lib.rs and main.rs sit above everything
            };
            let source = std::fs::read_to_string(&file).unwrap();
            for used in imports(&source, &order) {
                let used_at = order.iter().position(|m| *m == used).unwrap();
                assert!(
                    used_at <= position,
                    "{} imports {used}, listed after {top} in # Layout",
                    relative.display()
                );
            }
        }
    }
}
