//! Configuration: loaded once (TOML file + `BUCKETFTP__…` environment +
//! command-line flags), deserialised straight into typed values, never
//! re-read.
//!
//! Every error names the key and the value that is wrong, so a broken
//! deployment says what to fix in one line.
//!
//! # Layout
//! - `rejected`: a bad value on its way to an error that names its key.
//! - `values`: how one key's text becomes a typed value (addresses,
//!   durations, sizes, port ranges, URLs, networks), or why it cannot.
//! - `choices`: keys that name one of a few choices (enums).
//! - `sections`: `[server]`, `[http]`, `[log]`, `[storage]`, `[tls]`,
//!   `[auth]`, `[events]`, each with its defaults.
//! - `users`: `[[users]]` and the rules for names, hashes and homes.
//! - `load`: the merge of file, environment and [`Overrides`], the
//!   translation of errors, and the rules that span keys.

// First: its macro is used by the modules after it.
#[macro_use]
mod rejected;
mod choices;
mod load;
mod sections;
mod users;
mod values;

#[cfg(test)]
mod documented_defaults;

pub use choices::{LogFormat, PassiveHost, StorageEngine, TlsRequired};
pub use load::{from_toml, load, Overrides};
pub use rejected::Rejected;
pub use sections::{
    AuthConfig, EventsConfig, HttpConfig, LogConfig, ServerConfig, StorageConfig, TlsConfig,
    DEFAULT_LISTEN, DEFAULT_LISTING_MTIME_LIMIT,
};
pub use users::{UserConfig, ANONYMOUS_NAMES};
pub use values::{
    MemoryBudget, ProxyProtocol, Secret, StoreOptions, DEFAULT_DATA_DIR, MIN_PART_SIZE,
};

use serde::Deserialize;
use thiserror::Error;

/// A configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file or environment could not be read or has the wrong shape.
    #[error("cannot load configuration")]
    Load(#[source] config::ConfigError),
    /// A key has a value we cannot use.
    #[error("invalid value {value:?} for {key}: {reason}")]
    Invalid {
        /// Dotted key, e.g. `server.passive_ports` or `users[2].password_hash`.
        key: String,
        /// The offending value (never a password or credential: those read `<redacted>`).
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// The whole configuration, as the server uses it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The FTP server.
    #[serde(default)]
    pub server: ServerConfig,
    /// Metrics and health endpoint.
    #[serde(default)]
    pub http: HttpConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The shared store (users without a `storage` of their own use it).
    /// Always present: the loader supplies the default `storage.url`.
    pub storage: StorageConfig,
    /// FTPS; `None` = plain FTP only.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Anonymous access and lockout.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Accounts.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Upload events (off unless `events.webhook_url` is set).
    #[serde(default)]
    pub events: EventsConfig,
}
