//! Single values: how the text under one key becomes the type the server
//! uses (addresses, durations, sizes, URLs, networks, files, secrets), or
//! why it cannot.
//!
//! Fields that keep a std type (`SocketAddr`, `Duration`,
//! `RangeInclusive<u16>`, …) name one of the `deserialize_with` adapters
//! below; types of our own implement `TryFrom<String>` and deserialise
//! through it. Either way a bad value becomes a [`Rejected`] that the
//! loader reports under its key. Rules that need two keys live in the
//! loader's `validate`.

use super::rejected::{text_with, Rejected};
use crate::permissions::{Permission, PermissionSet};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// Directory served when `storage.url` is empty or unset, relative to the
/// working directory (the quick start runs `bucketftp` with no flags).
pub const DEFAULT_DATA_DIR: &str = "bucketftp-data";

/// S3 refuses parts under 5 MiB (except the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// S3 refuses parts over 5 GiB.
const MAX_PART_SIZE: u64 = 5 * (1 << 30);

/// An address to listen on.
pub(super) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    text_with(d, parse_socket_addr)
}

/// An address to listen on, for keys that are off unless set.
pub(super) fn optional_socket_addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    text_with(d, parse_socket_addr).map(Some)
}

/// `http.listen`: an address, or `off` (or empty) for no HTTP endpoint.
pub(super) fn http_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    text_with(d, |text| match text {
        "off" | "" => Ok(None),
        addr => parse_socket_addr(addr).map(Some),
    })
}

fn parse_socket_addr(text: &str) -> Result<SocketAddr, Rejected> {
    text.parse()
        .map_err(|_| Rejected::new(text, "expected IP:PORT, e.g. 0.0.0.0:2121"))
}

/// Text sent to clients as one reply line, so it cannot hold a line break.
pub(super) fn one_line<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    text_with(d, |text| {
        if text.contains(['\r', '\n']) {
            Err(Rejected::new(text, "must be one line"))
        } else {
            Ok(text.to_string())
        }
    })
}

/// `LOW-HIGH`, both non-zero, LOW ≤ HIGH.
pub(super) fn port_range<'de, D: Deserializer<'de>>(d: D) -> Result<RangeInclusive<u16>, D::Error> {
    text_with(d, parse_port_range)
}

fn parse_port_range(text: &str) -> Result<RangeInclusive<u16>, Rejected> {
    let bad = || Rejected::new(text, "expected LOW-HIGH, e.g. 50000-50100");
    let (low, high) = text.split_once('-').ok_or_else(bad)?;
    let low: u16 = low.trim().parse().map_err(|_| bad())?;
    let high: u16 = high.trim().parse().map_err(|_| bad())?;
    if low == 0 || low > high {
        return Err(bad());
    }
    Ok(low..=high)
}

/// Durations like `30s`, `10m`, `1h 30m` (humantime).
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    text_with(d, parse_duration)
}

fn parse_duration(text: &str) -> Result<Duration, Rejected> {
    humantime::parse_duration(text)
        .map_err(|e| Rejected::new(text, format!("expected a duration like 30s or 10m ({e})")))
}

/// Counts and limits where 0 would stop the server from doing anything.
pub(super) fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(Rejected::new("0", "must be at least 1").into_de()),
        n => Ok(n),
    }
}

/// Limits where 0 means none.
pub(super) fn zero_is_unlimited<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<usize>, D::Error> {
    Ok(Some(usize::deserialize(d)?).filter(|&n| n > 0))
}

/// Text where empty means "not set".
pub(super) fn empty_is_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(String::deserialize(d)?).filter(|text| !text.is_empty()))
}

/// A `tracing` filter directive, checked here so a typo stops start-up
/// instead of silently logging at the fallback level.
pub(super) fn log_filter<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    text_with(d, |text| {
        match tracing_subscriber::EnvFilter::try_new(text) {
            Ok(_) => Ok(text.to_string()),
            Err(_) => Err(Rejected::new(
                text,
                "not a valid log filter (e.g. \"info\")",
            )),
        }
    })
}

/// Sizes like `8MiB`, `16MB`, `5242880`.
fn parse_size(text: &str) -> Result<u64, Rejected> {
    let bad = |why: &str| Rejected::new(text, why);
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
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
pub(super) fn part_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    text_with(d, |text| {
        let bad = |why: &str| Rejected::new(text, why);
        let bytes = parse_size(text)?;
        if bytes < MIN_PART_SIZE {
            return Err(bad("must be at least 5MiB (the S3 minimum part size)"));
        }
        if bytes > MAX_PART_SIZE {
            return Err(bad("must be at most 5GiB (the S3 maximum part size)"));
        }
        usize::try_from(bytes).map_err(|_| bad("too large for this platform"))
    })
}

deserialize_via_try_from!(MemoryBudget);

/// `storage.memory_budget`: bytes, or `auto` (half the container's memory
/// limit, see [`crate::memory_budget::default_budget`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBudget {
    bytes: u64,
    /// As written, for the loader's message when it is too small for one
    /// transfer (`auto` says more there than the number it became).
    written: String,
}

impl MemoryBudget {
    /// The budget in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(super) fn written(&self) -> &str {
        &self.written
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self {
            bytes: crate::memory_budget::default_budget(),
            written: "auto".into(),
        }
    }
}

impl TryFrom<String> for MemoryBudget {
    type Error = Rejected;

    fn try_from(text: String) -> Result<Self, Rejected> {
        let bytes = match text.as_str() {
            "auto" | "" => crate::memory_budget::default_budget(),
            value => parse_size(value)?,
        };
        Ok(Self {
            bytes,
            written: text,
        })
    }
}

/// A storage URL; a bare path means a local directory (made absolute, so
/// a later change of directory cannot move the store).
pub(super) fn storage_url<'de, D: Deserializer<'de>>(d: D) -> Result<Url, D::Error> {
    text_with(d, parse_storage_url)
}

/// A storage URL for keys that fall back to the shared store when unset.
pub(super) fn optional_storage_url<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Url>, D::Error> {
    text_with(d, parse_storage_url).map(Some)
}

fn parse_storage_url(text: &str) -> Result<Url, Rejected> {
    let text = if text.is_empty() {
        DEFAULT_DATA_DIR
    } else {
        text
    };
    if let Ok(url) = Url::parse(text) {
        // One letter is a Windows drive, not a scheme.
        if url.scheme().len() > 1 {
            return Ok(url);
        }
    }
    let path = Path::new(text);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Rejected::new(text, format!("cannot resolve relative path: {e}")))?
            .join(path)
    };
    Url::from_directory_path(&absolute).map_err(|()| {
        Rejected::new(
            text,
            "expected a URL such as s3://bucket/prefix or a directory",
        )
    })
}

/// A list of permission names; the first unknown one is reported with
/// `reason`.
fn permissions_with<'de, D: Deserializer<'de>>(
    d: D,
    reason: &str,
) -> Result<PermissionSet, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    Permission::parse_list(&names).map_err(|bad| Rejected::new(bad, reason).into_de())
}

/// `auth.anonymous_permissions`.
pub(super) fn anonymous_permissions<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<PermissionSet, D::Error> {
    permissions_with(d, "unknown permission")
}

/// `users[].permissions`.
pub(super) fn user_permissions<'de, D: Deserializer<'de>>(d: D) -> Result<PermissionSet, D::Error> {
    permissions_with(
        d,
        "expected list, read, write, create, delete, mkdir, rename or all",
    )
}

/// An IP address (one host) or a CIDR network.
fn parse_network(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// `users[].allowed_ips`.
pub(super) fn client_networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let written = Vec::<String>::deserialize(d)?;
    written
        .iter()
        .map(|text| {
            parse_network(text).ok_or_else(|| {
                Rejected::new(text.as_str(), "expected an IP or CIDR, e.g. 10.0.0.0/8").into_de()
            })
        })
        .collect()
}

/// The networks PROXY protocol headers are accepted from
/// (`server.proxy_protocol_from`); empty = any address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyProtocol {
    /// The load balancers' networks.
    pub trusted: Vec<IpNet>,
    /// As written, for the loader's message when the list is set without
    /// `server.proxy_protocol` (a bare address would come back as `/32`).
    written: Vec<String>,
}

impl ProxyProtocol {
    /// Whether a connection from `ip` may carry a header (and so name
    /// another client).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.is_empty() || self.trusted.iter().any(|n| n.contains(&ip))
    }

    pub(super) fn written(&self) -> String {
        self.written.join(",")
    }
}

impl<'de> Deserialize<'de> for ProxyProtocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let written = Vec::<String>::deserialize(d)?;
        let trusted = written
            .iter()
            .map(|text| {
                parse_network(text).ok_or_else(|| {
                    Rejected::new(
                        text.as_str(),
                        "expected an IP address or CIDR network (e.g. 10.0.0.0/8)",
                    )
                    .into_de()
                })
            })
            .collect::<Result<_, D::Error>>()?;
        Ok(Self { trusted, written })
    }
}

/// A file that must exist when the configuration is loaded (TLS
/// certificates): a wrong path stops start-up, not the first FTPS login.
pub(super) fn existing_file<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(d)?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(Rejected::new(path.display().to_string(), "file does not exist").into_de())
    }
}

/// `events.webhook_url`: empty = no webhook.
pub(super) fn webhook_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    text_with(d, |text| {
        if text.is_empty() {
            return Ok(None);
        }
        Url::parse(text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .map(Some)
            .ok_or_else(|| Rejected::new(text, "expected an http:// or https:// URL"))
    })
}

/// A credential: kept out of `Debug` so it never reaches a log line.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

/// object_store options as configured (`[storage.options]`, a user's
/// `storage_options`): keys and secret access keys, SAS tokens and service
/// account JSON among them, so `Debug` names the options without their
/// values.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct StoreOptions(pub BTreeMap<String, String>);

impl std::ops::Deref for StoreOptions {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for StoreOptions {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|name| (name, format_args!("<redacted>"))))
            .finish()
    }
}

/// A file holding a credential (a mounted Kubernetes secret), read once at
/// load; empty = none. A trailing line break, as editors and `echo` leave
/// it, is not part of the credential.
pub(super) fn secret_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    text_with(d, |path| {
        if path.is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Rejected::new(path, format!("cannot read: {e}")))?;
        Ok(Some(Secret(
            text.trim_end_matches(['\r', '\n']).to_string(),
        )))
    })
}

/// Defaults for `bool` fields that are on unless switched off.
pub(super) fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("50000-50100"), Ok(50000..=50100));
        assert_eq!(parse_port_range(" 1 - 1 "), Ok(1..=1));
        for bad in ["0-10", "9-3", "50000", "a-b", "1-70000"] {
            assert_eq!(
                parse_port_range(bad),
                Err(Rejected::new(bad, "expected LOW-HIGH, e.g. 50000-50100")),
            );
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("16MB"), Ok(16_000_000));
        assert_eq!(parse_size("5242880"), Ok(5 << 20));
        assert_eq!(parse_size(" 1 GiB "), Ok(1 << 30));
        assert_eq!(
            parse_size("8mb").unwrap_err().reason,
            "unknown unit (use B, KiB, MiB, GiB)"
        );
        assert_eq!(
            parse_size("MiB").unwrap_err().reason,
            "expected a size like 8MiB"
        );
        assert_eq!(
            parse_size("99999999999GiB").unwrap_err().reason,
            "too large"
        );
    }

    #[test]
    fn memory_budget_keeps_what_was_written() {
        let auto = MemoryBudget::try_from("auto".to_string()).unwrap();
        assert_eq!(auto, MemoryBudget::default());
        let fixed = MemoryBudget::try_from("64MiB".to_string()).unwrap();
        assert_eq!((fixed.bytes(), fixed.written()), (64 << 20, "64MiB"));
    }

    #[test]
    fn storage_urls() {
        assert_eq!(
            parse_storage_url("s3://bucket/prefix").unwrap().as_str(),
            "s3://bucket/prefix"
        );
        let local = parse_storage_url("/srv/ftp").unwrap();
        assert_eq!(local.as_str(), "file:///srv/ftp/");
        let default = parse_storage_url("").unwrap();
        assert!(default.path().ends_with("/bucketftp-data/"), "{default}");
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "<redacted>");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
        let options = StoreOptions(BTreeMap::from([(
            "aws_secret_access_key".to_string(),
            "hunter2".to_string(),
        )]));
        assert_eq!(
            format!("{options:?}"),
            "{\"aws_secret_access_key\": <redacted>}"
        );
    }

    #[test]
    fn proxy_protocol_networks() {
        let from = |list: &[&str]| {
            let written: Vec<String> = list.iter().map(|s| s.to_string()).collect();
            ProxyProtocol {
                trusted: written.iter().filter_map(|t| parse_network(t)).collect(),
                written,
            }
        };
        let p = from(&["10.0.0.0/8", "192.0.2.7"]);
        assert!(p.trusts("10.1.2.3".parse().unwrap()));
        assert!(p.trusts("192.0.2.7".parse().unwrap()));
        assert!(!p.trusts("192.0.2.8".parse().unwrap()));
        assert_eq!(p.written(), "10.0.0.0/8,192.0.2.7");
        assert!(from(&[]).trusts("203.0.113.1".parse().unwrap()));
    }
}
