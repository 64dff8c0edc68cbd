//! `[[users]]`: the accounts, and the rules a name, a password hash and a
//! home must follow whether they come from the file or from `--user`.

use super::rejected::Rejected;
use super::values::{self, StoreOptions};
use super::ConfigError;
use crate::passwords::validate_hash;
use crate::permissions::{Permission, PermissionSet};
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use url::Url;

/// Name under which anonymous logins are accepted (RFC 1635 also allows "ftp").
pub const ANONYMOUS_NAMES: [&str; 2] = ["anonymous", "ftp"];

/// One `[[users]]` entry.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Login name.
    #[serde(deserialize_with = "user_name")]
    pub name: String,
    /// PHC hash (argon2id or PBKDF2) from `bucketftp hash-password`; plaintext is refused.
    #[serde(deserialize_with = "password_hash")]
    pub password_hash: String,
    /// Home directory inside the store; the user can never leave it.
    #[serde(default = "UserConfig::default_home", deserialize_with = "home")]
    pub home: String,
    /// Any of list, read, write (create + overwrite), create (new files only), delete, mkdir, rename, or all.
    #[serde(
        default = "UserConfig::default_permissions",
        deserialize_with = "values::user_permissions"
    )]
    pub permissions: PermissionSet,
    /// Disabled users cannot log in.
    #[serde(default = "values::yes")]
    pub enabled: bool,
    /// A store of the user's own instead of `storage.url` (one gateway,
    /// many buckets); `None` = the shared store.
    #[serde(default, deserialize_with = "values::optional_storage_url")]
    pub storage: Option<Url>,
    /// object_store options for `storage`.
    #[serde(default)]
    pub storage_options: StoreOptions,
    /// Client networks allowed to log in as this user (empty = any).
    #[serde(
        default,
        rename = "allowed_ips",
        deserialize_with = "values::client_networks"
    )]
    pub allowed_networks: Vec<IpNet>,
    /// Refuse this user unless the control connection uses TLS.
    #[serde(default)]
    pub tls_required: bool,
}

impl UserConfig {
    fn default_home() -> String {
        "/".into()
    }

    fn default_permissions() -> PermissionSet {
        let mut all = PermissionSet::default();
        Permission::ALL.iter().for_each(|p| all.insert(*p));
        all
    }

    /// A user with full access to the whole shared store (`--user
    /// NAME:PASSWORD`, or the account invented when none is configured).
    ///
    /// A bad name is reported under `users[0].name`, the key it has always
    /// been reported under.
    pub fn full_access(name: &str, password_hash: String) -> Result<Self, ConfigError> {
        Ok(Self {
            name: parse_user_name(name).map_err(|r| r.at("users[0].name"))?,
            password_hash,
            home: Self::default_home(),
            permissions: Self::default_permissions(),
            enabled: true,
            storage: None,
            storage_options: StoreOptions::default(),
            allowed_networks: Vec::new(),
            tls_required: false,
        })
    }
}

/// Hand-written so the hash and the storage options (credentials) never
/// reach a log line.
impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("home", &self.home)
            .field("permissions", &self.permissions)
            .field("enabled", &self.enabled)
            .field("allowed_networks", &self.allowed_networks)
            .field("tls_required", &self.tls_required)
            .finish_non_exhaustive()
    }
}

fn user_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    parse_user_name(&String::deserialize(d)?).map_err(Rejected::into_de)
}

/// A name that fits in `USER NAME` and in the audit log, and is not one of
/// the names anonymous logins use.
fn parse_user_name(name: &str) -> Result<String, Rejected> {
    if name.is_empty() || name.contains([':', ' ', '\r', '\n']) {
        return Err(Rejected::new(
            name,
            "must be non-empty, without spaces or ':'",
        ));
    }
    if ANONYMOUS_NAMES.contains(&name) {
        return Err(Rejected::new(
            name,
            "reserved for anonymous access (see auth.anonymous)",
        ));
    }
    Ok(name.to_string())
}

/// Never echoes the value: it may be a plaintext password.
fn password_hash<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let hash = String::deserialize(d)?;
    match validate_hash(&hash) {
        Ok(()) => Ok(hash),
        Err(e) => Err(Rejected::new("<redacted>", e.to_string()).into_de()),
    }
}

/// A home must normalise to a path inside the store.
fn home<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let home = String::deserialize(d)?;
    match crate::paths::normalize(&home) {
        Ok(_) => Ok(home),
        Err(e) => Err(Rejected::new(home.as_str(), e.to_string()).into_de()),
    }
}

/// No two accounts with one name: the second could never log in.
pub(super) fn check_unique_names(users: &[UserConfig]) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for (i, user) in users.iter().enumerate() {
        if !seen.insert(user.name.as_str()) {
            return Err(Rejected::new(user.name.as_str(), "duplicate user name")
                .at(format!("users[{i}].name")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_user_name("cam-1.front"), Ok("cam-1.front".into()));
        for bad in ["", "a b", "a:b", "a\nb"] {
            assert_eq!(
                parse_user_name(bad).unwrap_err().reason,
                "must be non-empty, without spaces or ':'"
            );
        }
        assert!(parse_user_name("ftp")
            .unwrap_err()
            .reason
            .starts_with("reserved"));
    }

    #[test]
    fn full_access_users_may_do_everything() {
        let u = UserConfig::full_access("alice", "$argon2id$x".into()).unwrap();
        assert!(Permission::ALL.iter().all(|p| u.permissions.allows(*p)));
        assert_eq!(u.home, "/");
        let err = UserConfig::full_access("anonymous", String::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value \"anonymous\" for users[0].name: reserved for anonymous access (see auth.anonymous)"
        );
    }
}
