//! Keys that name one of a few choices (`log.format`, `tls.required`,
//! `storage.engine`, `storage.content_type`, `server.passive_host`).

use super::rejected::{text_with, Rejected};
use crate::integrity::ContentTypes;
use serde::Deserializer;
use std::net::{IpAddr, Ipv4Addr};

deserialize_via_try_from!(PassiveHost, LogFormat, StorageEngine, TlsRequired);

/// Where the advertised passive address comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PassiveHost {
    /// The local address of the control connection.
    #[default]
    FromConnection,
    /// A fixed IPv4 address (a load balancer's).
    Ip(Ipv4Addr),
    /// A DNS name resolved at each PASV, so a balancer whose address
    /// changes needs no restart.
    Dns(String),
}

impl TryFrom<String> for PassiveHost {
    type Error = Rejected;

    fn try_from(text: String) -> Result<Self, Rejected> {
        if text == "from-connection" || text.is_empty() {
            return Ok(Self::FromConnection);
        }
        match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => Ok(Self::Ip(ip)),
            Ok(IpAddr::V6(_)) => Err(Rejected::new(
                text,
                "PASV can only advertise IPv4; IPv6 clients use EPSV, which needs no host",
            )),
            Err(_) if text.contains('.') && !text.contains(['/', ':', ' ']) => Ok(Self::Dns(text)),
            Err(_) => Err(Rejected::new(
                text,
                "expected from-connection, an IPv4 address or a DNS name",
            )),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable, for terminals.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl TryFrom<String> for LogFormat {
    type Error = Rejected;

    fn try_from(text: String) -> Result<Self, Rejected> {
        match text.as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(Rejected::new(text, "expected \"text\" or \"json\"")),
        }
    }
}

/// Which code talks to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageEngine {
    /// Apache object_store: every scheme, every FTP operation.
    #[default]
    ObjectStore,
    /// libunftp's `unftp-sbe-gcs` crate (GCS JSON API): no rename, no
    /// REST/APPE; for operators coming from unFTP.
    UnftpSbeGcs,
}

impl TryFrom<String> for StorageEngine {
    type Error = Rejected;

    fn try_from(text: String) -> Result<Self, Rejected> {
        match text.as_str() {
            "object_store" => Ok(Self::ObjectStore),
            "unftp-sbe-gcs" => Ok(Self::UnftpSbeGcs),
            _ => Err(Rejected::new(
                text,
                "expected \"object_store\" or \"unftp-sbe-gcs\"",
            )),
        }
    }
}

/// Who must use FTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsRequired {
    /// Nobody.
    #[default]
    None,
    /// Everyone but anonymous.
    Accounts,
    /// Everyone.
    All,
}

impl TryFrom<String> for TlsRequired {
    type Error = Rejected;

    fn try_from(text: String) -> Result<Self, Rejected> {
        match text.as_str() {
            "none" => Ok(Self::None),
            "accounts" => Ok(Self::Accounts),
            "all" => Ok(Self::All),
            _ => Err(Rejected::new(text, "expected none, accounts or all")),
        }
    }
}

/// `storage.content_type`: `auto` or `none`.
pub(super) fn content_types<'de, D: Deserializer<'de>>(d: D) -> Result<ContentTypes, D::Error> {
    text_with(d, |text| match text {
        "auto" => Ok(ContentTypes::Auto),
        "none" => Ok(ContentTypes::None),
        other => Err(Rejected::new(other, "expected \"auto\" or \"none\"")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_host_forms() {
        let parse = |text: &str| PassiveHost::try_from(text.to_string());
        assert_eq!(
            parse("from-connection").unwrap(),
            PassiveHost::FromConnection
        );
        assert_eq!(parse("").unwrap(), PassiveHost::FromConnection);
        assert_eq!(
            parse("1.2.3.4").unwrap(),
            PassiveHost::Ip([1, 2, 3, 4].into())
        );
        assert_eq!(
            parse("ftp.example.com").unwrap(),
            PassiveHost::Dns("ftp.example.com".into())
        );
        assert!(parse("::1").is_err());
        assert!(parse("localhost").is_err());
    }
}
