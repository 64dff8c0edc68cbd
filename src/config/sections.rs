//! The sections of the file (`[server]`, `[http]`, `[log]`, `[storage]`,
//! `[tls]`, `[auth]`, `[events]`) as the server reads them, each with its
//! defaults next to it.
//!
//! Every field is deserialised straight into its final type (see
//! `values` and `choices`); what is written here is what the rest of the
//! server gets. `[[users]]` lives in `users`.

use super::choices::{self, LogFormat, PassiveHost, StorageEngine, TlsRequired};
use super::values::{self, MemoryBudget, ProxyProtocol, Secret, StoreOptions};
use crate::integrity::ContentTypes;
use crate::permissions::PermissionSet;
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// Default FTP control address: loopback, so a first run on a developer's
/// machine serves nobody else.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 2121));

/// Default most files per listing whose `mtime` metadata is read: about
/// 1-2 s of HEADs (16 at a time) on S3, the size of a typical camera or
/// backup directory; larger directories list at the speed of the listing
/// API alone.
pub const DEFAULT_LISTING_MTIME_LIMIT: usize = 1000;

/// `[server]`: the FTP side.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on (IP:PORT).
    #[serde(deserialize_with = "values::socket_addr")]
    pub listen: SocketAddr,
    /// First line clients see (one line: it is sent as a reply).
    #[serde(deserialize_with = "values::one_line")]
    pub greeting: String,
    /// Ports for passive data connections; open them in firewalls and Services.
    #[serde(deserialize_with = "values::port_range")]
    pub passive_ports: RangeInclusive<u16>,
    /// Address advertised in PASV replies; behind a load balancer, the balancer's.
    pub passive_host: PassiveHost,
    /// Allow PORT (active mode); data connections only ever go back to the client's own IP.
    pub active_mode: bool,
    /// Close control connections idle this long (not while a transfer runs).
    #[serde(deserialize_with = "values::duration")]
    pub idle_timeout: Duration,
    /// Most control connections at once; more get 421.
    #[serde(deserialize_with = "values::at_least_one")]
    pub max_sessions: usize,
    /// Most control connections from one client IP; more get 421.
    #[serde(deserialize_with = "values::at_least_one")]
    pub max_sessions_per_ip: usize,
    /// A connection must log in within this long (NOOP and other commands do not extend it).
    #[serde(deserialize_with = "values::duration")]
    pub login_timeout: Duration,
    /// Most connections not yet logged in; the loader caps it at half of
    /// `max_sessions`, so connections that never log in cannot take the
    /// places of those that do.
    #[serde(deserialize_with = "values::at_least_one")]
    pub max_unauthenticated: usize,
    /// Most connections not yet logged in from one client IP; more get 421.
    #[serde(deserialize_with = "values::at_least_one")]
    pub max_unauthenticated_per_ip: usize,
    /// Most uploads at once (written 0 = `None` = unlimited); more get 450.
    #[serde(deserialize_with = "values::zero_is_unlimited")]
    pub max_uploads: Option<usize>,
    /// How long running transfers may finish after SIGTERM; keep below Kubernetes' terminationGracePeriodSeconds.
    #[serde(deserialize_with = "values::duration")]
    pub shutdown_grace: Duration,
    /// Answer MKD of an existing directory with success (for devices that disconnect on 550).
    pub mkd_existing_ok: bool,
    /// Expect a PROXY protocol header on every control and data connection;
    /// read through [`ServerConfig::proxy_protocol`].
    pub proxy_protocol: bool,
    /// With `proxy_protocol`: where headers may come from (the load balancers).
    pub proxy_protocol_from: ProxyProtocol,
}

impl ServerConfig {
    /// PROXY protocol settings when it is switched on.
    pub fn proxy_protocol(&self) -> Option<&ProxyProtocol> {
        self.proxy_protocol.then_some(&self.proxy_protocol_from)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            greeting: "bucketftp ready".into(),
            passive_ports: 50000..=50100,
            passive_host: PassiveHost::FromConnection,
            active_mode: true,
            idle_timeout: Duration::from_secs(10 * 60),
            max_sessions: 1000,
            max_sessions_per_ip: 100,
            login_timeout: Duration::from_secs(30),
            max_unauthenticated: 200,
            max_unauthenticated_per_ip: 64,
            max_uploads: None,
            shutdown_grace: Duration::from_secs(30),
            mkd_existing_ok: false,
            proxy_protocol: false,
            proxy_protocol_from: ProxyProtocol::default(),
        }
    }
}

/// `[http]`: metrics and health.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address for /metrics, /healthz, /readyz; `None` (written `off`) when
    /// nothing should listen besides FTP.
    #[serde(deserialize_with = "values::http_listen")]
    pub listen: Option<SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(127, 0, 0, 1),
                9090,
            ))),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Text for terminals, JSON for log collectors.
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `bucketftp=debug,info`.
    #[serde(deserialize_with = "values::log_filter")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `[storage]`.
///
/// Defaults are per field, not a `Default` impl: the default `url` is a
/// directory under the working directory, which can fail to resolve, so the
/// loader supplies it as text and it is parsed (and reported) like a
/// written one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Storage URL (s3://, gs://, az://, file://, memory://) or a local directory.
    #[serde(deserialize_with = "values::storage_url")]
    pub url: Url,
    /// object_store options for the URL (aws_endpoint, google_service_account, azure_storage_use_emulator, timeout, …).
    #[serde(default)]
    pub options: StoreOptions,
    /// Multipart part size; memory per upload is about (upload_concurrency + 1) × part_size.
    #[serde(
        default = "StorageConfig::default_part_size",
        deserialize_with = "values::part_size"
    )]
    pub part_size: usize,
    /// Parts uploaded in parallel per upload.
    #[serde(
        default = "StorageConfig::default_upload_concurrency",
        deserialize_with = "values::at_least_one"
    )]
    pub upload_concurrency: usize,
    /// Most objects one directory rename may move.
    #[serde(
        default = "StorageConfig::default_rename_limit",
        deserialize_with = "values::at_least_one"
    )]
    pub rename_limit: usize,
    /// Storage engine: object_store (every scheme) or unftp-sbe-gcs (gs:// only).
    #[serde(default)]
    pub engine: StorageEngine,
    /// Most retries of a failing storage request (throttling, 5xx, timeouts).
    #[serde(default = "StorageConfig::default_retry_max")]
    pub retry_max: usize,
    /// Stop retrying a storage request after this long; the client then gets a 4xx.
    #[serde(
        default = "StorageConfig::default_retry_timeout",
        deserialize_with = "values::duration"
    )]
    pub retry_timeout: Duration,
    /// Storage class of new objects (S3 STANDARD_IA, GCS NEARLINE, Azure Cool, …); `None` (written empty) = bucket default.
    #[serde(default, deserialize_with = "values::empty_is_none")]
    pub storage_class: Option<String>,
    /// Ranged GETs (one part_size each) in flight per cloud download; 1 = one plain GET.
    #[serde(
        default = "StorageConfig::default_download_concurrency",
        deserialize_with = "values::at_least_one"
    )]
    pub download_concurrency: usize,
    /// Content-Type of new objects: from the file name, or none.
    #[serde(
        default,
        rename = "content_type",
        deserialize_with = "choices::content_types"
    )]
    pub content_types: ContentTypes,
    /// Compute each upload's SHA-256 while it streams and store it with the
    /// object (HASH answers it at once, events carry it); false saves the
    /// CPU, and HASH SHA-256 then reads the object back.
    #[serde(default = "values::yes")]
    pub upload_sha256: bool,
    /// Most files in one listing whose stored `mtime` is read (a HEAD each,
    /// S3 and Azure; GCS lists them with the directory, any size); 0 = never.
    #[serde(default = "StorageConfig::default_listing_mtime_limit")]
    pub listing_mtime_limit: usize,
    /// Bytes of transfer buffers (upload parts, download ranges) held at once (see [`crate::memory_budget`]).
    #[serde(default)]
    pub memory_budget: MemoryBudget,
    /// How long a new transfer waits for a buffer when the budget is in use, then gets 451.
    #[serde(
        default = "StorageConfig::default_memory_wait",
        deserialize_with = "values::duration"
    )]
    pub memory_wait: Duration,
}

impl StorageConfig {
    /// 8 MiB: S3's 10,000-part cap then allows objects of ~78 GiB.
    fn default_part_size() -> usize {
        8 << 20
    }

    fn default_upload_concurrency() -> usize {
        2
    }

    fn default_rename_limit() -> usize {
        10_000
    }

    fn default_retry_max() -> usize {
        10
    }

    fn default_retry_timeout() -> Duration {
        Duration::from_secs(30)
    }

    /// 8 matched boto3's 10 parallel ranges in the benchmark.
    fn default_download_concurrency() -> usize {
        8
    }

    fn default_listing_mtime_limit() -> usize {
        DEFAULT_LISTING_MTIME_LIMIT
    }

    fn default_memory_wait() -> Duration {
        Duration::from_secs(30)
    }

    /// The retry policy of every store this section opens.
    pub(crate) fn retry(&self) -> crate::store_url::Retry {
        crate::store_url::Retry {
            max_retries: self.retry_max,
            timeout: self.retry_timeout,
        }
    }
}

/// `[tls]`: explicit (and optionally implicit) FTPS; absent = plain FTP only.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain for explicit FTPS (AUTH TLS).
    #[serde(deserialize_with = "values::existing_file")]
    pub cert: PathBuf,
    /// PEM private key for explicit FTPS.
    #[serde(deserialize_with = "values::existing_file")]
    pub key: PathBuf,
    /// Who must use FTPS: none, accounts (all but anonymous) or all.
    #[serde(default)]
    pub required: TlsRequired,
    /// Where implicit FTPS is served (TLS from the first byte, usually port
    /// 990), besides `server.listen`; `None` = not at all.
    #[serde(default, deserialize_with = "values::optional_socket_addr")]
    pub implicit_listen: Option<SocketAddr>,
    /// An FTPS upload is complete only at the client's TLS close_notify
    /// (false: also at a plain close, as vsftpd's `strict_ssl_read_eof=NO`,
    /// for old stacks that never send it).
    #[serde(default = "values::yes")]
    pub require_close_notify: bool,
}

/// `[auth]`: anonymous access and lockout.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accept anonymous logins (user anonymous or ftp).
    pub anonymous: bool,
    /// Home directory of anonymous users inside the store.
    pub anonymous_home: String,
    /// Permissions of anonymous users.
    #[serde(deserialize_with = "values::anonymous_permissions")]
    pub anonymous_permissions: PermissionSet,
    /// Consecutive failed logins of one user from one client IP before that pair is locked; 0 disables.
    pub lockout_attempts: u32,
    /// Failed logins from one client IP, over any user names, before the
    /// address is locked; 0 disables (the default: clients behind one NAT
    /// share an address).
    pub lockout_attempts_per_address: u32,
    /// How long a lockout lasts.
    #[serde(deserialize_with = "values::duration")]
    pub lockout_period: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            anonymous: false,
            anonymous_home: "/anonymous".into(),
            anonymous_permissions: PermissionSet::read_only(),
            lockout_attempts: 5,
            lockout_attempts_per_address: 0,
            lockout_period: Duration::from_secs(5 * 60),
        }
    }
}

/// `[events]`: a CloudEvents POST per committed upload.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// The webhook; `None` (written empty) = no events.
    #[serde(deserialize_with = "values::webhook_url")]
    pub webhook_url: Option<Url>,
    /// Header that carries the webhook credential.
    pub auth_header: String,
    /// The header's value; prefer BUCKETFTP__EVENTS__AUTH_VALUE or
    /// `auth_value_file` to writing it in the file.
    pub auth_value: Secret,
    /// The contents of the file `auth_value_file` names (e.g. a mounted
    /// secret), read at load; it wins over `auth_value`.
    #[serde(deserialize_with = "values::secret_file")]
    pub auth_value_file: Option<Secret>,
    /// Events waiting for delivery at most; more are dropped and counted.
    #[serde(deserialize_with = "values::at_least_one")]
    pub queue_size: usize,
    /// Timeout of one POST.
    #[serde(deserialize_with = "values::duration")]
    pub timeout: Duration,
    /// Keep retrying an event this long, then drop it.
    #[serde(deserialize_with = "values::duration")]
    pub retry_for: Duration,
}

impl EventsConfig {
    /// The credential header's name and value, when a value is set.
    pub fn credential(&self) -> Option<(&str, &str)> {
        let value = self.auth_value_file.as_ref().unwrap_or(&self.auth_value);
        (!value.expose().is_empty()).then_some((self.auth_header.as_str(), value.expose()))
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            auth_header: "Authorization".into(),
            auth_value: Secret::default(),
            auth_value_file: None,
            queue_size: 10_000,
            timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(60 * 60),
        }
    }
}
