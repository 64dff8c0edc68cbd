//! Configuration: loaded once (TOML file + `BUCKETFTP__…` environment +
//! command-line flags), validated into typed values, never re-read.
//!
//! Every error names the key and the value that is wrong, so a broken
//! deployment says what to fix in one line.

use crate::auth::{validate_hash, Permission, PermissionSet};
use ipnet::IpNet;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use url::Url;

/// Default FTP control address for a developer's machine.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2121";
/// Default metrics/health address.
pub const DEFAULT_HTTP: &str = "127.0.0.1:9090";
/// Default passive port range.
pub const DEFAULT_PASSIVE_PORTS: &str = "50000-50100";
/// Default directory served when nothing is configured.
pub const DEFAULT_DATA_DIR: &str = "bucketftp-data";
/// Default multipart part size: 8 MiB (S3's 10,000-part cap allows ~78 GiB objects).
pub const DEFAULT_PART_SIZE: &str = "8MiB";

/// Default most files per listing whose `mtime` metadata is read: about
/// 1-2 s of HEADs (16 at a time) on S3, the size of a typical camera or
/// backup directory; larger directories list at the speed of the listing
/// API alone.
pub const DEFAULT_LISTING_MTIME_LIMIT: usize = 1000;
/// S3 refuses parts under 5 MiB (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

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
        /// The offending value (never a password: see `redacted`).
        value: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(
    key: impl Into<String>,
    value: impl Into<String>,
    reason: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// The file as written: strings where the typed config has richer types.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[server]`
    pub server: RawServer,
    /// `[http]`
    pub http: RawHttp,
    /// `[log]`
    pub log: RawLog,
    /// `[storage]`
    pub storage: RawStorage,
    /// `[tls]`
    pub tls: Option<RawTls>,
    /// `[auth]`
    pub auth: RawAuth,
    /// `[[users]]`
    pub users: Vec<RawUser>,
    /// `[events]`
    pub events: RawEvents,
}

/// `[server]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Address to listen on (IP:PORT).
    pub listen: String,
    /// First line clients see (one line).
    pub greeting: String,
    /// Ports for passive data connections (LOW-HIGH); open them in firewalls and Services.
    pub passive_ports: String,
    /// Address advertised in PASV replies: from-connection, an IPv4 address or a DNS name (a load balancer's).
    pub passive_host: String,
    /// Allow PORT (active mode); data connections only ever go back to the client's own IP.
    pub active_mode: bool,
    /// Close control connections idle this long (not while a transfer runs).
    pub idle_timeout: String,
    /// Most control connections at once; more get 421.
    pub max_sessions: usize,
    /// Most control connections from one client IP; more get 421.
    pub max_sessions_per_ip: usize,
    /// A connection must log in within this long (NOOP and other commands do not extend it).
    pub login_timeout: String,
    /// Most connections not yet logged in (at most half of max_sessions); more get 421.
    pub max_unauthenticated: usize,
    /// Most connections not yet logged in from one client IP; more get 421.
    pub max_unauthenticated_per_ip: usize,
    /// Most uploads at once (0 = unlimited); more get 450.
    pub max_uploads: usize,
    /// How long running transfers may finish after SIGTERM; keep below Kubernetes' terminationGracePeriodSeconds.
    pub shutdown_grace: String,
    /// Answer MKD of an existing directory with success (for devices that disconnect on 550).
    pub mkd_existing_ok: bool,
    /// Expect a PROXY protocol header (v1 or v2) on every control and data connection; the client address in it is the one limits, allowed_ips and logs use.
    pub proxy_protocol: bool,
    /// With proxy_protocol: accept connections only from these networks (the load balancers); empty = from anywhere.
    pub proxy_protocol_from: Vec<String>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            greeting: "bucketftp ready".into(),
            passive_ports: DEFAULT_PASSIVE_PORTS.into(),
            passive_host: "from-connection".into(),
            active_mode: true,
            idle_timeout: "10m".into(),
            max_sessions: 1000,
            max_sessions_per_ip: 100,
            login_timeout: "30s".into(),
            max_unauthenticated: 200,
            max_unauthenticated_per_ip: 64,
            max_uploads: 0,
            shutdown_grace: "30s".into(),
            mkd_existing_ok: false,
            proxy_protocol: false,
            proxy_protocol_from: Vec::new(),
        }
    }
}

/// `[http]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    /// Address for /metrics, /healthz, /readyz; "off" disables.
    pub listen: String,
}

impl Default for RawHttp {
    fn default() -> Self {
        Self {
            listen: DEFAULT_HTTP.into(),
        }
    }
}

/// `[log]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// Log format: text or json.
    pub format: String,
    /// Log filter, e.g. info or bucketftp=debug,info.
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// `[storage]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStorage {
    /// Storage URL (s3://, gs://, az://, file://, memory://) or a local directory.
    pub url: String,
    /// object_store options for the URL (aws_endpoint, google_service_account, azure_storage_use_emulator, timeout, …).
    pub options: BTreeMap<String, String>,
    /// Multipart part size; memory per upload is about (upload_concurrency + 1) × part_size.
    pub part_size: String,
    /// Parts uploaded in parallel per upload.
    pub upload_concurrency: usize,
    /// Most objects one directory rename may move.
    pub rename_limit: usize,
    /// Storage engine: object_store (every scheme) or unftp-sbe-gcs (gs:// only).
    pub engine: String,
    /// Most retries of a failing storage request (throttling, 5xx, timeouts).
    pub retry_max: usize,
    /// Stop retrying a storage request after this long; the client then gets a 4xx.
    pub retry_timeout: String,
    /// Storage class of new objects (S3 STANDARD_IA, GCS NEARLINE, Azure Cool, …); empty = bucket default.
    pub storage_class: String,
    /// Ranged GETs (one part_size each) in flight per cloud download; 1 = one plain GET.
    pub download_concurrency: usize,
    /// Content-Type of new objects: auto (from the file name) or none.
    pub content_type: String,
    /// Compute each upload's SHA-256 and store it with the object (HASH answers it at once; events carry it).
    pub upload_sha256: bool,
    /// Most files in one listing whose client-set time (`mtime` metadata) is read, one HEAD each; 0 = never.
    pub listing_mtime_limit: usize,
    /// Bytes of transfer buffers (upload parts, download ranges) held at once; auto = half the container's memory limit, else 1GiB.
    pub memory_budget: String,
    /// How long a new transfer waits for a buffer when the budget is in use, then gets 451.
    pub memory_wait: String,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            url: String::new(),
            options: BTreeMap::new(),
            part_size: DEFAULT_PART_SIZE.into(),
            upload_concurrency: 2,
            rename_limit: 10_000,
            engine: "object_store".into(),
            retry_max: 10,
            retry_timeout: "30s".into(),
            storage_class: String::new(),
            download_concurrency: 8,
            content_type: "auto".into(),
            upload_sha256: true,
            listing_mtime_limit: DEFAULT_LISTING_MTIME_LIMIT,
            memory_budget: "auto".into(),
            memory_wait: "30s".into(),
        }
    }
}

/// `[events]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEvents {
    /// http(s) URL that receives a CloudEvents POST per committed upload; empty = off.
    pub webhook_url: String,
    /// Header that carries the webhook credential.
    pub auth_header: String,
    /// The header's value; prefer BUCKETFTP__EVENTS__AUTH_VALUE or auth_value_file to the file.
    pub auth_value: String,
    /// File holding the header's value (e.g. a mounted secret).
    pub auth_value_file: String,
    /// Events waiting for delivery at most; more are dropped and counted.
    pub queue_size: usize,
    /// Timeout of one POST.
    pub timeout: String,
    /// Keep retrying an event this long, then drop it.
    pub retry_for: String,
}

impl Default for RawEvents {
    fn default() -> Self {
        Self {
            webhook_url: String::new(),
            auth_header: "Authorization".into(),
            auth_value: String::new(),
            auth_value_file: String::new(),
            queue_size: 10_000,
            timeout: "10s".into(),
            retry_for: "1h".into(),
        }
    }
}

/// `[tls]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain for explicit FTPS (AUTH TLS).
    pub cert: PathBuf,
    /// PEM private key for explicit FTPS.
    pub key: PathBuf,
    /// Who must use FTPS: none, accounts (all but anonymous) or all.
    #[serde(default = "default_tls_required")]
    pub required: String,
    /// Address for implicit FTPS (TLS from the first byte, usually port
    /// 990), served besides `server.listen`; unset = off.
    #[serde(default)]
    pub implicit_listen: Option<String>,
    /// An FTPS upload is complete only when the client ends it with TLS
    /// close_notify; false also takes a plain close as the end (old stacks).
    #[serde(default = "default_require_close_notify")]
    pub require_close_notify: bool,
}

fn default_require_close_notify() -> bool {
    true
}

fn default_tls_required() -> String {
    "none".into()
}

/// `[auth]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    /// Accept anonymous logins (user anonymous or ftp).
    pub anonymous: bool,
    /// Home directory of anonymous users.
    pub anonymous_home: String,
    /// Permissions of anonymous users (read-only by default).
    pub anonymous_permissions: Vec<String>,
    /// Consecutive failed logins of one user from one client IP before that pair is locked; 0 disables.
    pub lockout_attempts: u32,
    /// Failed logins from one client IP, over any user names, before the address is locked; 0 disables (the default: clients behind one NAT share an address).
    pub lockout_attempts_per_address: u32,
    /// How long a lockout lasts.
    pub lockout_period: String,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            anonymous: false,
            anonymous_home: "/anonymous".into(),
            anonymous_permissions: vec!["list".into(), "read".into()],
            lockout_attempts: 5,
            lockout_attempts_per_address: 0,
            lockout_period: "5m".into(),
        }
    }
}

/// `[[users]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    /// Login name.
    pub name: String,
    /// PHC hash (argon2id or PBKDF2) from `bucketftp hash-password`; plaintext is refused.
    pub password_hash: String,
    /// Home directory inside the store; the user can never leave it.
    #[serde(default = "default_home")]
    pub home: String,
    /// Any of list, read, write (create + overwrite), create (new files only), delete, mkdir, rename, or all.
    #[serde(default = "default_permissions")]
    pub permissions: Vec<String>,
    /// Disabled users cannot log in.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The user's own storage URL (default: the shared store).
    #[serde(default)]
    pub storage: Option<String>,
    /// Options for the user's own storage URL.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// Client IPs or CIDRs allowed to log in as this user (empty = any).
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// Refuse this user unless the control connection uses TLS.
    #[serde(default)]
    pub tls_required: bool,
}

fn default_home() -> String {
    "/".into()
}
fn default_permissions() -> Vec<String> {
    vec!["all".into()]
}
fn default_true() -> bool {
    true
}

/// Where the advertised passive address comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassiveHost {
    /// The local address of the control connection.
    FromConnection,
    /// A fixed IPv4 address (a load balancer's).
    Ip(std::net::Ipv4Addr),
    /// A DNS name resolved at each PASV.
    Dns(String),
}

/// Who must use FTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRequired {
    /// Nobody.
    None,
    /// Everyone but anonymous.
    Accounts,
    /// Everyone.
    All,
}

/// `[server]`, validated.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (IP:PORT).
    pub listen: SocketAddr,
    /// First line clients see (one line).
    pub greeting: String,
    /// Ports for passive data connections (LOW-HIGH); open them in firewalls and Services.
    pub passive_ports: RangeInclusive<u16>,
    /// Address advertised in PASV replies: from-connection, an IPv4 address or a DNS name (a load balancer's).
    pub passive_host: PassiveHost,
    /// Allow PORT (active mode); data connections only ever go back to the client's own IP.
    pub active_mode: bool,
    /// Close control connections idle this long (not while a transfer runs).
    pub idle_timeout: Duration,
    /// Most control connections at once; more get 421.
    pub max_sessions: usize,
    /// Most control connections from one client IP; more get 421.
    pub max_sessions_per_ip: usize,
    /// A connection must log in within this long (NOOP and other commands do not extend it).
    pub login_timeout: Duration,
    /// Most connections not yet logged in (at most half of max_sessions); more get 421.
    pub max_unauthenticated: usize,
    /// Most connections not yet logged in from one client IP; more get 421.
    pub max_unauthenticated_per_ip: usize,
    /// Most uploads at once (0 = unlimited); more get 450.
    pub max_uploads: Option<usize>,
    /// How long running transfers may finish after SIGTERM; keep below Kubernetes' terminationGracePeriodSeconds.
    pub shutdown_grace: Duration,
    /// Answer MKD of an existing directory with success (for devices that disconnect on 550).
    pub mkd_existing_ok: bool,
    /// PROXY protocol on every accepted connection, when on.
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// `server.proxy_protocol` on: where headers may come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocol {
    /// The load balancers' networks; empty = any address.
    pub trusted: Vec<IpNet>,
}

impl ProxyProtocol {
    /// Whether a connection from `ip` may carry a header (and so name
    /// another client).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.is_empty() || self.trusted.iter().any(|n| n.contains(&ip))
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, for terminals.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `[log]`, validated.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Log format: text or json.
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `bucketftp=debug,info`.
    pub level: String,
}

/// `[storage]`, validated.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Storage URL (s3://, gs://, az://, file://, memory://) or a local directory.
    pub url: Url,
    /// object_store options for the URL (aws_endpoint, google_service_account, azure_storage_use_emulator, timeout, …).
    pub options: BTreeMap<String, String>,
    /// Multipart part size; memory per upload is about (upload_concurrency + 1) × part_size.
    pub part_size: usize,
    /// Parts uploaded in parallel per upload.
    pub upload_concurrency: usize,
    /// Most objects one directory rename may move.
    pub rename_limit: usize,
    /// Storage engine: object_store (every scheme) or unftp-sbe-gcs (gs:// only).
    pub engine: StorageEngine,
    /// Retry policy for failing storage requests.
    pub retry: crate::store_url::Retry,
    /// Storage class of new objects (S3 STANDARD_IA, GCS NEARLINE, Azure Cool, …); None = bucket default.
    pub storage_class: Option<String>,
    /// Ranged GETs (one part_size each) in flight per cloud download; 1 = one plain GET.
    pub download_concurrency: usize,
    /// Content-Type of new objects: from the file name, or none.
    pub content_types: crate::integrity::ContentTypes,
    /// Compute each upload's SHA-256 and store it with the object.
    pub upload_sha256: bool,
    /// Most files in one listing whose stored `mtime` is read (a HEAD each); 0 = never.
    pub listing_mtime_limit: usize,
    /// Bytes of transfer buffers (upload parts, download ranges) held at once (see [`crate::memory_budget`]).
    pub memory_budget: u64,
    /// How long a new transfer waits for a buffer when the budget is in use, then gets 451.
    pub memory_wait: Duration,
}

/// `[events]`, validated: where upload events go.
#[derive(Clone)]
pub struct EventsConfig {
    /// The webhook.
    pub webhook_url: Url,
    /// Header name and value carrying the credential.
    pub auth: Option<(String, String)>,
    /// Events waiting for delivery at most.
    pub queue_size: usize,
    /// Timeout of one POST.
    pub timeout: Duration,
    /// Keep retrying an event this long.
    pub retry_for: Duration,
}

impl std::fmt::Debug for EventsConfig {
    // Hand-written so the credential never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsConfig")
            .field("webhook_url", &self.webhook_url.as_str())
            .field("auth", &self.auth.as_ref().map(|(name, _)| name))
            .field("queue_size", &self.queue_size)
            .finish_non_exhaustive()
    }
}

/// Which code talks to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageEngine {
    /// Apache object_store: every scheme, every FTP operation.
    ObjectStore,
    /// libunftp's `unftp-sbe-gcs` crate (GCS JSON API): no rename, no
    /// REST/APPE; for operators coming from unFTP.
    UnftpSbeGcs,
}

/// `[tls]`, validated.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain for explicit FTPS (AUTH TLS).
    pub cert: PathBuf,
    /// PEM private key for explicit FTPS.
    pub key: PathBuf,
    /// Who must use FTPS: none, accounts (all but anonymous) or all.
    pub required: TlsRequired,
    /// Where implicit FTPS is served (TLS from the first byte), if at all.
    pub implicit_listen: Option<SocketAddr>,
    /// An FTPS upload is complete only at the client's TLS close_notify
    /// (false: also at a plain close, as vsftpd's `strict_ssl_read_eof=NO`).
    pub require_close_notify: bool,
}

/// `[auth]`, validated.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Accept anonymous logins (user anonymous or ftp).
    pub anonymous: Option<AnonymousConfig>,
    /// Consecutive failed logins of one user from one client IP before that pair is locked; 0 disables.
    pub lockout_attempts: u32,
    /// Failed logins from one client IP, over any user names, before the address is locked; 0 disables.
    pub lockout_attempts_per_address: u32,
    /// How long a lockout lasts.
    pub lockout_period: Duration,
}

/// Anonymous access, when enabled.
#[derive(Debug, Clone)]
pub struct AnonymousConfig {
    /// Home directory inside the store; the user can never leave it.
    pub home: String,
    /// Any of list, read, write (create + overwrite), create (new files only), delete, mkdir, rename, or all.
    pub permissions: PermissionSet,
}

/// One `[[users]]` entry, validated.
#[derive(Clone)]
pub struct UserConfig {
    /// Login name.
    pub name: String,
    /// PHC hash (argon2id or PBKDF2) from `bucketftp hash-password`; plaintext is refused.
    pub password_hash: String,
    /// Home directory inside the store; the user can never leave it.
    pub home: String,
    /// Any of list, read, write (create + overwrite), create (new files only), delete, mkdir, rename, or all.
    pub permissions: PermissionSet,
    /// Disabled users cannot log in.
    pub enabled: bool,
    /// The user's own storage URL (default: the shared store).
    pub storage: Option<(Url, BTreeMap<String, String>)>,
    /// Client networks allowed to log in as this user (empty = any).
    pub allowed_networks: Vec<IpNet>,
    /// Refuse this user unless the control connection uses TLS.
    pub tls_required: bool,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The FTP server.
    pub server: ServerConfig,
    /// `None` when the HTTP endpoint is switched off.
    pub http: Option<SocketAddr>,
    /// Logging.
    pub log: LogConfig,
    /// The user's own storage URL (default: the shared store).
    pub storage: StorageConfig,
    /// Explicit FTPS.
    pub tls: Option<TlsConfig>,
    /// Authentication.
    pub auth: AuthConfig,
    /// Accounts.
    pub users: Vec<UserConfig>,
    /// Upload events (`None`: no webhook).
    pub events: Option<EventsConfig>,
}

/// Flags that override the file (the quick-start contract).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// Address to listen on (IP:PORT).
    pub listen: Option<String>,
    /// The metrics/health endpoint (None = off).
    pub http: Option<String>,
    /// The user's own storage URL (default: the shared store).
    pub storage: Option<String>,
    /// Options for the user's own storage URL.
    pub storage_options: Vec<(String, String)>,
    /// Ports for passive data connections (LOW-HIGH); open them in firewalls and Services.
    pub passive_ports: Option<String>,
    /// Log format from --log-format.
    pub log_format: Option<String>,
    /// Implicit FTPS address from --tls-implicit-listen.
    pub tls_implicit_listen: Option<String>,
}

/// Loads file (optional) + environment + overrides, then validates.
pub fn load(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(file) = file {
        builder = builder.add_source(
            config::File::from(file)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    let env_source = config::Environment::with_prefix("BUCKETFTP")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        // Lists from the environment are comma-separated.
        .list_separator(",")
        .with_list_parse_key("server.proxy_protocol_from")
        .source(Some(
            env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ));
    builder = builder.add_source(env_source);
    let raw: RawConfig = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(ConfigError::Load)?;
    validate(apply(raw, overrides)?)
}

/// Parses TOML text alone (for `check-config` tests and fuzzing).
pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(ConfigError::Load)?;
    validate(raw)
}

fn apply(mut raw: RawConfig, o: &Overrides) -> Result<RawConfig, ConfigError> {
    if let Some(v) = &o.listen {
        raw.server.listen = v.clone();
    }
    if let Some(v) = &o.http {
        raw.http.listen = v.clone();
    }
    if let Some(v) = &o.storage {
        raw.storage.url = v.clone();
    }
    for (k, v) in &o.storage_options {
        raw.storage.options.insert(k.clone(), v.clone());
    }
    if let Some(v) = &o.passive_ports {
        raw.server.passive_ports = v.clone();
    }
    if let Some(v) = &o.log_format {
        raw.log.format = v.clone();
    }
    if let Some(v) = &o.tls_implicit_listen {
        match &mut raw.tls {
            Some(tls) => tls.implicit_listen = Some(v.clone()),
            None => {
                return Err(invalid(
                    "tls.implicit_listen",
                    v.as_str(),
                    "needs a certificate: set tls.cert and tls.key",
                ))
            }
        }
    }
    Ok(raw)
}

/// Turns the raw values into typed ones, naming the first bad key.
pub fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let s = &raw.server;
    let server = ServerConfig {
        listen: parse_addr("server.listen", &s.listen)?,
        greeting: s.greeting.clone(),
        passive_ports: parse_port_range("server.passive_ports", &s.passive_ports)?,
        passive_host: parse_passive_host(&s.passive_host)?,
        active_mode: s.active_mode,
        idle_timeout: parse_duration("server.idle_timeout", &s.idle_timeout)?,
        max_sessions: positive("server.max_sessions", s.max_sessions)?,
        max_sessions_per_ip: positive("server.max_sessions_per_ip", s.max_sessions_per_ip)?,
        login_timeout: parse_duration("server.login_timeout", &s.login_timeout)?,
        // Half of max_sessions at most, so connections that never log in
        // cannot take the places of those that do.
        max_unauthenticated: positive("server.max_unauthenticated", s.max_unauthenticated)?
            .min((s.max_sessions / 2).max(1)),
        max_unauthenticated_per_ip: positive(
            "server.max_unauthenticated_per_ip",
            s.max_unauthenticated_per_ip,
        )?,
        max_uploads: (s.max_uploads > 0).then_some(s.max_uploads),
        shutdown_grace: parse_duration("server.shutdown_grace", &s.shutdown_grace)?,
        mkd_existing_ok: s.mkd_existing_ok,
        proxy_protocol: parse_proxy_protocol(s)?,
    };
    if server.greeting.contains(['\r', '\n']) {
        return Err(invalid(
            "server.greeting",
            &server.greeting,
            "must be one line",
        ));
    }
    let http = match raw.http.listen.as_str() {
        "off" | "" => None,
        addr => Some(parse_addr("http.listen", addr)?),
    };
    let log = LogConfig {
        format: match raw.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log.format",
                    other,
                    "expected \"text\" or \"json\"",
                ))
            }
        },
        level: raw.log.level.clone(),
    };
    if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
        return Err(invalid(
            "log.level",
            &log.level,
            "not a valid log filter (e.g. \"info\")",
        ));
    }
    let storage = StorageConfig {
        url: parse_storage_url("storage.url", &raw.storage.url)?,
        options: raw.storage.options.clone(),
        part_size: parse_part_size(&raw.storage.part_size)?,
        memory_budget: match raw.storage.memory_budget.as_str() {
            "auto" | "" => crate::memory_budget::default_budget(),
            value => parse_size("storage.memory_budget", value)?,
        },
        memory_wait: parse_duration("storage.memory_wait", &raw.storage.memory_wait)?,
        upload_concurrency: positive("storage.upload_concurrency", raw.storage.upload_concurrency)?,
        rename_limit: positive("storage.rename_limit", raw.storage.rename_limit)?,
        download_concurrency: positive(
            "storage.download_concurrency",
            raw.storage.download_concurrency,
        )?,
        listing_mtime_limit: raw.storage.listing_mtime_limit,
        upload_sha256: raw.storage.upload_sha256,
        content_types: match raw.storage.content_type.as_str() {
            "auto" => crate::integrity::ContentTypes::Auto,
            "none" => crate::integrity::ContentTypes::None,
            other => {
                return Err(invalid(
                    "storage.content_type",
                    other,
                    "expected \"auto\" or \"none\"",
                ))
            }
        },
        storage_class: (!raw.storage.storage_class.is_empty())
            .then(|| raw.storage.storage_class.clone()),
        retry: crate::store_url::Retry {
            max_retries: raw.storage.retry_max,
            timeout: parse_duration("storage.retry_timeout", &raw.storage.retry_timeout)?,
        },
        engine: match raw.storage.engine.as_str() {
            "object_store" => StorageEngine::ObjectStore,
            "unftp-sbe-gcs" => StorageEngine::UnftpSbeGcs,
            other => {
                return Err(invalid(
                    "storage.engine",
                    other,
                    "expected \"object_store\" or \"unftp-sbe-gcs\"",
                ))
            }
        },
    };
    let smallest = crate::memory_budget::part_reservation(storage.part_size) as u64;
    if storage.memory_budget < smallest {
        return Err(invalid(
            "storage.memory_budget",
            &raw.storage.memory_budget,
            format!("must hold at least one transfer: storage.part_size + 1MiB = {smallest} bytes"),
        ));
    }
    if storage.engine == StorageEngine::UnftpSbeGcs && storage.url.scheme() != "gs" {
        return Err(invalid(
            "storage.engine",
            "unftp-sbe-gcs",
            format!("only serves gs:// storage, not {}://", storage.url.scheme()),
        ));
    }
    let tls = match &raw.tls {
        None => None,
        Some(t) => Some(TlsConfig {
            cert: existing_file("tls.cert", &t.cert)?,
            key: existing_file("tls.key", &t.key)?,
            required: match t.required.as_str() {
                "none" => TlsRequired::None,
                "accounts" => TlsRequired::Accounts,
                "all" => TlsRequired::All,
                other => {
                    return Err(invalid(
                        "tls.required",
                        other,
                        "expected none, accounts or all",
                    ))
                }
            },
            implicit_listen: t
                .implicit_listen
                .as_deref()
                .map(|addr| parse_addr("tls.implicit_listen", addr))
                .transpose()?,
            require_close_notify: t.require_close_notify,
        }),
    };
    let a = &raw.auth;
    let auth = AuthConfig {
        anonymous: if a.anonymous {
            Some(AnonymousConfig {
                home: a.anonymous_home.clone(),
                permissions: Permission::parse_list(&a.anonymous_permissions).map_err(|bad| {
                    invalid("auth.anonymous_permissions", bad, "unknown permission")
                })?,
            })
        } else {
            None
        },
        lockout_attempts: a.lockout_attempts,
        lockout_attempts_per_address: a.lockout_attempts_per_address,
        lockout_period: parse_duration("auth.lockout_period", &a.lockout_period)?,
    };
    let mut users = Vec::with_capacity(raw.users.len());
    let mut seen = std::collections::HashSet::new();
    for (i, u) in raw.users.iter().enumerate() {
        let key = |field: &str| format!("users[{i}].{field}");
        if u.name.is_empty() || u.name.contains([':', ' ', '\r', '\n']) {
            return Err(invalid(
                key("name"),
                &u.name,
                "must be non-empty, without spaces or ':'",
            ));
        }
        if crate::auth::ANONYMOUS_NAMES.contains(&u.name.as_str()) {
            return Err(invalid(
                key("name"),
                &u.name,
                "reserved for anonymous access (see auth.anonymous)",
            ));
        }
        if !seen.insert(u.name.clone()) {
            return Err(invalid(key("name"), &u.name, "duplicate user name"));
        }
        // Never echo the value: it may be a plaintext password.
        validate_hash(&u.password_hash)
            .map_err(|e| invalid(key("password_hash"), "<redacted>", e.to_string()))?;
        let storage = match &u.storage {
            None => None,
            Some(url) => Some((
                parse_storage_url(&key("storage"), url)?,
                u.storage_options.clone(),
            )),
        };
        let allowed_networks = u
            .allowed_ips
            .iter()
            .map(|net| {
                parse_network(net).ok_or_else(|| {
                    invalid(
                        key("allowed_ips"),
                        net,
                        "expected an IP or CIDR, e.g. 10.0.0.0/8",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        crate::paths::normalize(&u.home)
            .map_err(|e| invalid(key("home"), &u.home, e.to_string()))?;
        users.push(UserConfig {
            name: u.name.clone(),
            password_hash: u.password_hash.clone(),
            home: u.home.clone(),
            permissions: Permission::parse_list(&u.permissions).map_err(|bad| {
                invalid(
                    key("permissions"),
                    bad,
                    "expected list, read, write, create, delete, mkdir, rename or all",
                )
            })?,
            enabled: u.enabled,
            storage,
            allowed_networks,
            tls_required: u.tls_required,
        });
    }
    let events = parse_events(&raw.events)?;
    Ok(Config {
        server,
        http,
        log,
        storage,
        tls,
        auth,
        users,
        events,
    })
}

fn parse_events(raw: &RawEvents) -> Result<Option<EventsConfig>, ConfigError> {
    if raw.webhook_url.is_empty() {
        return Ok(None);
    }
    let webhook_url = Url::parse(&raw.webhook_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| {
            invalid(
                "events.webhook_url",
                &raw.webhook_url,
                "expected an http:// or https:// URL",
            )
        })?;
    let value = if !raw.auth_value_file.is_empty() {
        let text = std::fs::read_to_string(&raw.auth_value_file).map_err(|e| {
            invalid(
                "events.auth_value_file",
                &raw.auth_value_file,
                format!("cannot read: {e}"),
            )
        })?;
        text.trim_end_matches(['\r', '\n']).to_string()
    } else {
        raw.auth_value.clone()
    };
    let auth = if value.is_empty() {
        None
    } else {
        // Never echo the value: it is a credential.
        if reqwest::header::HeaderValue::from_str(&value).is_err() {
            return Err(invalid(
                "events.auth_value",
                "<redacted>",
                "not a valid HTTP header value",
            ));
        }
        if reqwest::header::HeaderName::from_bytes(raw.auth_header.as_bytes()).is_err() {
            return Err(invalid(
                "events.auth_header",
                &raw.auth_header,
                "not a valid HTTP header name",
            ));
        }
        Some((raw.auth_header.clone(), value))
    };
    Ok(Some(EventsConfig {
        webhook_url,
        auth,
        queue_size: positive("events.queue_size", raw.queue_size)?,
        timeout: parse_duration("events.timeout", &raw.timeout)?,
        retry_for: parse_duration("events.retry_for", &raw.retry_for)?,
    }))
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| invalid(key, value, "expected IP:PORT, e.g. 0.0.0.0:2121"))
}

fn positive(key: &str, value: usize) -> Result<usize, ConfigError> {
    if value == 0 {
        Err(invalid(key, "0", "must be at least 1"))
    } else {
        Ok(value)
    }
}

/// `LOW-HIGH`, both non-zero, LOW ≤ HIGH.
pub fn parse_port_range(key: &str, value: &str) -> Result<RangeInclusive<u16>, ConfigError> {
    let bad = || invalid(key, value, "expected LOW-HIGH, e.g. 50000-50100");
    let (low, high) = value.split_once('-').ok_or_else(bad)?;
    let low: u16 = low.trim().parse().map_err(|_| bad())?;
    let high: u16 = high.trim().parse().map_err(|_| bad())?;
    if low == 0 || low > high {
        return Err(bad());
    }
    Ok(low..=high)
}

fn parse_passive_host(value: &str) -> Result<PassiveHost, ConfigError> {
    if value == "from-connection" || value.is_empty() {
        return Ok(PassiveHost::FromConnection);
    }
    match value.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Ok(PassiveHost::Ip(ip)),
        Ok(IpAddr::V6(_)) => Err(invalid(
            "server.passive_host",
            value,
            "PASV can only advertise IPv4; IPv6 clients use EPSV, which needs no host",
        )),
        Err(_) if value.contains('.') && !value.contains(['/', ':', ' ']) => {
            Ok(PassiveHost::Dns(value.to_string()))
        }
        Err(_) => Err(invalid(
            "server.passive_host",
            value,
            "expected from-connection, an IPv4 address or a DNS name",
        )),
    }
}

/// Durations like `30s`, `10m`, `1h 30m` (humantime).
pub fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value).map_err(|e| {
        invalid(
            key,
            value,
            format!("expected a duration like 30s or 10m ({e})"),
        )
    })
}

/// Sizes like `8MiB`, `16MB`, `5242880`.
fn parse_size(key: &str, value: &str) -> Result<u64, ConfigError> {
    let bad = |why: &str| invalid(key, value, why.to_string());
    let text = value.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| bad("expected a size like 8MiB"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad("unknown unit (use B, KiB, MiB, GiB)")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| bad("too large"))
}

/// `storage.part_size`: a size within S3's part limits.
fn parse_part_size(value: &str) -> Result<usize, ConfigError> {
    let bad = |why: &str| invalid("storage.part_size", value, why.to_string());
    let bytes = parse_size("storage.part_size", value)?;
    if bytes < MIN_PART_SIZE {
        return Err(bad("must be at least 5MiB (the S3 minimum part size)"));
    }
    if bytes > 5 * (1 << 30) {
        return Err(bad("must be at most 5GiB (the S3 maximum part size)"));
    }
    usize::try_from(bytes).map_err(|_| bad("too large for this platform"))
}

/// A storage URL; a bare path means a local directory (made absolute).
fn parse_storage_url(key: &str, value: &str) -> Result<Url, ConfigError> {
    let value = if value.is_empty() {
        DEFAULT_DATA_DIR
    } else {
        value
    };
    if let Ok(url) = Url::parse(value) {
        if url.scheme().len() > 1 {
            return Ok(url);
        }
    }
    let path = Path::new(value);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| invalid(key, value, format!("cannot resolve relative path: {e}")))?
            .join(path)
    };
    Url::from_directory_path(&absolute).map_err(|()| {
        invalid(
            key,
            value,
            "expected a URL such as s3://bucket/prefix or a directory",
        )
    })
}

fn existing_file(key: &str, path: &Path) -> Result<PathBuf, ConfigError> {
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(invalid(
            key,
            path.display().to_string(),
            "file does not exist",
        ))
    }
}

/// `server.proxy_protocol` and the networks it is accepted from.
fn parse_proxy_protocol(s: &RawServer) -> Result<Option<ProxyProtocol>, ConfigError> {
    let trusted = s
        .proxy_protocol_from
        .iter()
        .map(|v| {
            parse_network(v).ok_or_else(|| {
                invalid(
                    "server.proxy_protocol_from",
                    v,
                    "expected an IP address or CIDR network (e.g. 10.0.0.0/8)",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !s.proxy_protocol && !trusted.is_empty() {
        return Err(invalid(
            "server.proxy_protocol_from",
            s.proxy_protocol_from.join(","),
            "needs server.proxy_protocol = true",
        ));
    }
    Ok(s.proxy_protocol.then_some(ProxyProtocol { trusted }))
}

fn parse_network(value: &str) -> Option<IpNet> {
    value
        .parse::<IpNet>()
        .ok()
        .or_else(|| value.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash() -> String {
        crate::auth::hash_password("pw").unwrap()
    }

    #[test]
    fn defaults_are_valid() {
        let c = from_toml("").unwrap();
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.server.passive_ports, 50000..=50100);
        assert_eq!(c.storage.url.scheme(), "file");
        assert_eq!(c.storage.part_size, 8 << 20);
    }

    #[test]
    fn errors_name_key_and_value() {
        let cases = [
            ("[server]\nlisten = \"nope\"", "server.listen", "nope"),
            (
                "[server]\npassive_ports = \"9-3\"",
                "server.passive_ports",
                "9-3",
            ),
            (
                "[server]\nidle_timeout = \"soon\"",
                "server.idle_timeout",
                "soon",
            ),
            (
                "[storage]\npart_size = \"1MiB\"",
                "storage.part_size",
                "1MiB",
            ),
            ("[log]\nformat = \"xml\"", "log.format", "xml"),
            (
                "[storage]\ncontent_type = \"guess\"",
                "storage.content_type",
                "guess",
            ),
            (
                "[events]\nwebhook_url = \"ftp://x\"",
                "events.webhook_url",
                "ftp://x",
            ),
            (
                "[tls]\ncert = \"/nonexistent\"\nkey = \"/nonexistent\"",
                "tls.cert",
                "/nonexistent",
            ),
        ];
        for (text, key, value) in cases {
            let err = from_toml(text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(value), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = from_toml("[server]\nlisten_addr = \"x\"").unwrap_err();
        assert!(format!("{:?}", err).contains("listen_addr"), "{err:?}");
    }

    #[test]
    fn plaintext_passwords_are_refused_without_echo() {
        let text = "[[users]]\nname = \"alice\"\npassword_hash = \"hunter2\"";
        let err = from_toml(text).unwrap_err().to_string();
        assert!(
            err.contains("users[0].password_hash") && err.contains("hash-password"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn users_parse() {
        let text = format!(
            "[[users]]\nname = \"cam\"\npassword_hash = \"{}\"\nhome = \"/cams/1\"\npermissions = [\"write\", \"mkdir\"]\nallowed_ips = [\"10.0.0.0/8\", \"::1\"]",
            hash()
        );
        let c = from_toml(&text).unwrap();
        let u = &c.users[0];
        assert!(u.permissions.allows(Permission::Write) && !u.permissions.allows(Permission::Read));
        assert_eq!(u.allowed_networks.len(), 2);
        let dup = format!("{text}\n{}", &text);
        assert!(from_toml(&dup)
            .unwrap_err()
            .to_string()
            .contains("duplicate"));
    }

    #[test]
    fn environment_overrides_the_file() {
        let env: BTreeMap<String, String> = [
            (
                "BUCKETFTP__SERVER__LISTEN".to_string(),
                "127.0.0.1:2200".to_string(),
            ),
            (
                "BUCKETFTP__STORAGE__OPTIONS__AWS_REGION".to_string(),
                "eu-west-1".to_string(),
            ),
        ]
        .into();
        let c = load(None, &env, &Overrides::default()).unwrap();
        assert_eq!(c.server.listen.port(), 2200);
        assert_eq!(
            c.storage.options.get("aws_region").map(String::as_str),
            Some("eu-west-1")
        );
        let flags = Overrides {
            listen: Some("127.0.0.1:2300".into()),
            ..Overrides::default()
        };
        assert_eq!(load(None, &env, &flags).unwrap().server.listen.port(), 2300);
        let implicit = Overrides {
            tls_implicit_listen: Some("127.0.0.1:990".into()),
            ..Overrides::default()
        };
        let err = load(None, &env, &implicit).unwrap_err();
        assert!(err.to_string().contains("tls.implicit_listen"), "{err}");
    }

    #[test]
    fn proxy_protocol_keys() {
        assert_eq!(from_toml("").unwrap().server.proxy_protocol, None);
        let on = from_toml(
            "[server]\nproxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\", \"192.0.2.7\"]",
        )
        .unwrap()
        .server
        .proxy_protocol
        .unwrap();
        assert!(on.trusts("10.1.2.3".parse().unwrap()));
        assert!(on.trusts("192.0.2.7".parse().unwrap()));
        assert!(!on.trusts("192.0.2.8".parse().unwrap()));
        let anywhere = from_toml("[server]\nproxy_protocol = true").unwrap();
        assert!(anywhere
            .server
            .proxy_protocol
            .unwrap()
            .trusts("203.0.113.1".parse().unwrap()));
        for (text, value) in [
            (
                "[server]\nproxy_protocol = true\nproxy_protocol_from = [\"lb.example\"]",
                "lb.example",
            ),
            (
                "[server]\nproxy_protocol_from = [\"10.0.0.0/8\"]",
                "10.0.0.0/8",
            ),
        ] {
            let err = from_toml(text).unwrap_err().to_string();
            assert!(
                err.contains("server.proxy_protocol_from") && err.contains(value),
                "{err}"
            );
        }
        // From the environment, a comma-separated list.
        let env: BTreeMap<String, String> = [
            (
                "BUCKETFTP__SERVER__PROXY_PROTOCOL".to_string(),
                "true".to_string(),
            ),
            (
                "BUCKETFTP__SERVER__PROXY_PROTOCOL_FROM".to_string(),
                "10.0.0.0/8,127.0.0.1/32".to_string(),
            ),
        ]
        .into();
        let c = load(None, &env, &Overrides::default()).unwrap();
        assert_eq!(c.server.proxy_protocol.unwrap().trusted.len(), 2);
    }

    #[test]
    fn passive_host_forms() {
        assert_eq!(
            parse_passive_host("from-connection").unwrap(),
            PassiveHost::FromConnection
        );
        assert_eq!(
            parse_passive_host("1.2.3.4").unwrap(),
            PassiveHost::Ip([1, 2, 3, 4].into())
        );
        assert_eq!(
            parse_passive_host("ftp.example.com").unwrap(),
            PassiveHost::Dns("ftp.example.com".into())
        );
        assert!(parse_passive_host("::1").is_err());
    }
}
