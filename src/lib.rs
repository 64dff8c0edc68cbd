//! bucketftp: an FTP server whose files live in an object store.
//!
//! Devices and programs that only speak FTP (cameras, scanners, PLCs, lab
//! instruments, old batch jobs) upload to bucketftp; the files land as
//! objects in S3, GCS, Azure Blob, a local directory or memory.
//!
//! # Layout
//! - [`config`]: TOML + environment + flags → validated [`config::Config`].
//! - [`store_url`]: storage URL + options → object store (one code path).
//! - [`storage_check`]: start-up storage errors worded with endpoint and fix.
//! - [`paths`]: FTP path → object key, jailed under the user's home.
//! - [`auth`]: accounts, password hashes, lockout, libunftp authenticator.
//! - [`backend`]: the libunftp `StorageBackend`: one wrapper (permissions,
//!   jail and home guards, REST offsets, transfers, the upload commit rule,
//!   audit) around the storage engine chosen per account: object_store
//!   (listing, streaming uploads and downloads, directories, the error
//!   table) or unftp-sbe-gcs.
//! - [`transfers`]: in-flight transfer registry for graceful shutdown.
//! - [`memory_budget`]: the bytes of transfer buffers the process may hold,
//!   shared by every upload and download.
//! - [`server`]: the FTP accept loop and session limits.
//! - [`tls`]: the FTPS certificate, parsed once and reloaded on change.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`metrics`]: Prometheus metrics.
//! - [`integrity`]: digests computed while uploads stream, stored as object
//!   metadata; `Content-Type` from names; on-demand digests.
//! - [`local_attributes`]: object attributes as xattrs on `file://`, and how
//!   uploads there become visible (`local_tmpfile`: anonymous files linked
//!   into place).
//! - [`cloud_attributes`]: digests of multipart uploads written on S3 and
//!   Azure objects once committed.
//! - [`extension_commands`]: HASH, OPTS HASH, XSHA256/XSHA1/XMD5/XCRC and
//!   MFMT through the engine's extension-command hook.
//! - [`events`]: a CloudEvents webhook per committed upload.
//!
//! The binary (`src/main.rs`) only parses flags and calls [`run`]; tests call
//! [`run`] in-process with listeners bound to port 0.

#![deny(missing_docs)]

pub mod auth;
pub mod backend;
pub mod cloud_attributes;
pub mod config;
pub mod descriptor_limit;
pub mod events;
pub mod extension_commands;
pub mod http;
pub mod instrumented;
pub mod integrity;
pub mod local_attributes;
mod local_tmpfile;
pub mod memory_budget;
pub mod metrics;
pub mod paths;
pub mod proxy_protocol;
pub mod server;
pub mod storage_check;
pub mod store_url;
pub mod tls;
pub mod transfers;

use auth::{Account, Accounts, Lockout};
use backend::upload::UploadSettings;
use backend::BackendSettings;
use config::{Config, LogFormat};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use store_url::{open_store, OpenedStore, StoreUrlError};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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

/// The error and its causes on one line: `a: b: c`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Installs the global log subscriber (text or JSON). libunftp logs through
/// the `log` crate, which `tracing-subscriber` picks up.
///
/// libunftp instruments its handlers with spans whose fields are `Debug`
/// dumps of the whole session (including the parsed `PASS` command), so its
/// spans and info-level chatter are kept at `warn` unless the operator's
/// filter names `libunftp` explicitly. Our audit records cover the same
/// ground without secrets.
///
/// Colour only when stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>): escape codes in a log file or a container's
/// log stream are noise.
pub fn init_logging(log: &config::LogConfig) {
    let directive = log_directive(&log.level);
    let filter = tracing_subscriber::EnvFilter::try_new(&directive)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_directive("info")));
    let colour = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// libunftp's CWD handler warns on every failed CWD, but a failed CWD is
/// routine: `curl --ftp-create-dirs` and most GUI clients probe with CWD
/// before MKD. The back-end logs the expected case at debug instead
/// (`ObjectBackend::cwd`), and storage failures behind a CWD at warn.
const CWD_DIRECTIVE: &str = "libunftp::server::controlchan::commands::cwd=error";

/// See [`log_directive`].
const PASS_DIRECTIVE: &str = "libunftp::server::controlchan::commands::pass=error";

/// The effective log filter for an operator's `log.level`.
///
/// libunftp's PASS handler warns about every failed login with the whole
/// user name (a client may send kilobytes of it); our authenticator already
/// writes one line per refusal with the name cut short, so that module is
/// kept at `error`.
///
/// object_store logs every retry at info; what matters of a failing
/// request reaches the log once, from whoever gave up (the audit line, the
/// start-up error), so its own lines start at warn unless the operator's
/// filter names `object_store`.
pub fn log_directive(level: &str) -> String {
    let mut directive = level.to_string();
    if !level.contains("libunftp") {
        directive.push_str(",libunftp=warn,");
        directive.push_str(PASS_DIRECTIVE);
        directive.push(',');
        directive.push_str(CWD_DIRECTIVE);
    }
    if !level.contains("object_store") {
        directive.push_str(",object_store=warn");
    }
    directive
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
        users.push(Account {
            name: user.name.clone(),
            password_hash: Some(user.password_hash.clone()),
            store,
            permissions: user.permissions,
            enabled: user.enabled,
            allowed_networks: user.allowed_networks.clone(),
            tls_required: user.tls_required,
            engine,
            jail,
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
        Some(Account {
            name: "anonymous".into(),
            password_hash: None,
            store: default_store.clone(),
            engine: engine_for(&default_store, &jail, sbe_gcs.as_ref()),
            jail,
            permissions: auth.anonymous_permissions,
            enabled: true,
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
        if let Err(failure) = http::probe_store(store).await {
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
    let settings = Arc::new(BackendSettings {
        upload: UploadSettings {
            part_size: config.storage.part_size,
            concurrency: config.storage.upload_concurrency,
            budget: memory_budget::MemoryBudget::new(
                config.storage.memory_budget.bytes(),
                config.storage.memory_wait,
            ),
            idle_timeout: config.server.idle_timeout,
            storage_class: config.storage.storage_class.clone(),
            content_types: config.storage.content_types,
            sha256: config.storage.upload_sha256,
            events: events.clone(),
        },
        rename_limit: config.storage.rename_limit,
        mkd_existing_ok: config.server.mkd_existing_ok,
        download_concurrency: config.storage.download_concurrency,
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
