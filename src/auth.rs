//! Users, password hashes, lockout, and the libunftp authenticator.
//!
//! Passwords live in the config only as PHC hashes (argon2id or PBKDF2);
//! `bucketftp hash-password` makes one. Verification runs on the blocking
//! pool because a good hash is deliberately slow, and it runs even for
//! unknown users so response time does not reveal which names exist.

use crate::paths::{Jail, PathError};
use crate::store_url::OpenedStore;
use async_trait::async_trait;
use ipnet::IpNet;
use password_hash::{PasswordHash, PasswordHasher, SaltString};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use unftp_core::auth::{
    AuthenticationError, Authenticator, ChannelEncryptionState, Credentials, Principal, UserDetail,
    UserDetailError, UserDetailProvider,
};

/// What a user may do. Checked by the storage back-end before every
/// operation, so the FTP front never needs to know about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// LIST, NLST, MLSD, MLST, STAT, CWD.
    List,
    /// RETR, SIZE, MDTM.
    Read,
    /// STOR, APPE, STOU.
    Write,
    /// DELE, RMD.
    Delete,
    /// MKD.
    Mkdir,
    /// RNFR/RNTO.
    Rename,
}

impl Permission {
    /// Every permission, for "full access" users.
    pub const ALL: [Permission; 6] = [
        Permission::List,
        Permission::Read,
        Permission::Write,
        Permission::Delete,
        Permission::Mkdir,
        Permission::Rename,
    ];

    /// Parses the config spelling (`list`, `read`, …, or `all`).
    pub fn parse_list(names: &[String]) -> Result<PermissionSet, String> {
        let mut set = PermissionSet::default();
        for name in names {
            match name.as_str() {
                "all" => Permission::ALL.iter().for_each(|p| set.insert(*p)),
                "list" => set.insert(Permission::List),
                "read" => set.insert(Permission::Read),
                "write" => set.insert(Permission::Write),
                "delete" => set.insert(Permission::Delete),
                "mkdir" => set.insert(Permission::Mkdir),
                "rename" => set.insert(Permission::Rename),
                other => return Err(other.to_string()),
            }
        }
        Ok(set)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A small set of [`Permission`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PermissionSet(u8);

impl PermissionSet {
    /// Adds one permission.
    pub fn insert(&mut self, p: Permission) {
        self.0 |= p.bit();
    }

    /// Whether `p` is granted.
    pub fn allows(&self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// Read-only access: list and read.
    pub fn read_only() -> Self {
        let mut set = Self::default();
        set.insert(Permission::List);
        set.insert(Permission::Read);
        set
    }
}

/// Why a configured password hash was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HashError {
    /// The value is not a PHC string: most likely a plaintext password.
    #[error("password must be a hash, not plaintext: create one with `bucketftp hash-password`")]
    NotAHash,
    /// A PHC string for an algorithm we do not verify.
    #[error("unsupported password hash algorithm {0:?} (use argon2id or pbkdf2-sha256)")]
    Algorithm(String),
}

/// Checks that `hash` is a PHC string we can verify.
pub fn validate_hash(hash: &str) -> Result<(), HashError> {
    let parsed = PasswordHash::new(hash).map_err(|_| HashError::NotAHash)?;
    match parsed.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" | "pbkdf2-sha256" | "pbkdf2-sha512" => Ok(()),
        other => Err(HashError::Algorithm(other.to_string())),
    }
}

/// Hashes a password with argon2id and a random salt, for the
/// `hash-password` subcommand and for `--user NAME:PASSWORD`.
pub fn hash_password(password: &str) -> Result<String, password_hash::Error> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string());
    // argon2id's ~19 MiB of blocks were just freed on this thread.
    release_freed_memory();
    hash
}

/// Returns the memory this thread just freed to the operating system.
/// mimalloc (the binary's allocator) otherwise keeps freed pages until the
/// thread allocates again, which a blocking-pool thread that just hashed or
/// verified an argon2id password (~19 MiB freed) may never do: a burst of
/// logins left tens of MiB resident for good (docs/benchmarks.md). Under
/// another allocator (the test harness) this touches only mimalloc's own
/// empty heap.
fn release_freed_memory() {
    // SAFETY: mi_collect has no preconditions; it may be called from any
    // thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Verifies in constant time (the hash libraries compare digests with
/// constant-time equality).
fn verify(hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let ok = parsed
        .verify_password(&[&argon2::Argon2::default(), &pbkdf2::Pbkdf2], password)
        .is_ok();
    // argon2id's ~19 MiB of blocks were just freed on this thread.
    release_freed_memory();
    ok
}

/// A configured account, resolved at start-up.
pub struct Account {
    /// Login name.
    pub name: String,
    /// PHC password hash; `None` for the anonymous account.
    pub password_hash: Option<String>,
    /// Where the account's files live.
    pub store: OpenedStore,
    /// The account's home inside the store.
    pub jail: Jail,
    /// What the account may do.
    pub permissions: PermissionSet,
    /// Disabled accounts cannot log in but stay in the config.
    pub enabled: bool,
    /// Client networks allowed to log in as this account (empty = any).
    pub allowed_networks: Vec<IpNet>,
    /// Refuse the login unless the control channel is TLS.
    pub tls_required: bool,
    /// Set when the account's files go through the `unftp-sbe-gcs` engine
    /// (rooted at the account's home) instead of object_store.
    pub gcs_engine: Option<Arc<unftp_sbe_gcs::CloudStorage>>,
}

impl fmt::Debug for Account {
    // Hand-written so the password hash never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("home", &self.jail.root().as_ref())
            .field("store", &self.store.display_url)
            .field("permissions", &self.permissions)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// Builds the account's jail under its store's base prefix.
    pub fn jail_for(store: &OpenedStore, home: &str) -> Result<Jail, PathError> {
        Jail::with_home(&store.base, home)
    }
}

/// The logged-in user as libunftp passes it to the storage back-end.
#[derive(Debug, Clone)]
pub struct SessionUser {
    /// The account behind the login.
    pub account: Arc<Account>,
}

impl fmt::Display for SessionUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.account.name)
    }
}

impl UserDetail for SessionUser {
    fn account_enabled(&self) -> bool {
        self.account.enabled
    }
}

/// Failed-login lockout, per user name and per client IP.
///
/// Ours rather than libunftp's `failed_logins_policy` because the gateway
/// services each connection separately, and a policy must span connections.
#[derive(Debug)]
pub struct Lockout {
    max_failures: u32,
    period: Duration,
    entries: Mutex<HashMap<LockKey, Failures>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LockKey {
    User(String),
    Ip(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Keeps the lockout table from growing without bound under a scan.
const MAX_LOCKOUT_ENTRIES: usize = 100_000;

impl Lockout {
    /// Lock after `max_failures` consecutive failures for `period`; zero
    /// `max_failures` turns lockout off.
    pub fn new(max_failures: u32, period: Duration) -> Self {
        Self {
            max_failures,
            period,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<LockKey, Failures>> {
        // A poisoned lock only means another thread panicked mid-update of a
        // counter; the data is still usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_locked(&self, user: &str, ip: IpAddr) -> bool {
        if self.max_failures == 0 {
            return false;
        }
        let now = Instant::now();
        let table = self.table();
        [LockKey::User(user.to_string()), LockKey::Ip(ip)]
            .iter()
            .any(|k| {
                table.get(k).is_some_and(|f| {
                    f.count >= self.max_failures && now.duration_since(f.last) < self.period
                })
            })
    }

    fn record_failure(&self, user: &str, ip: IpAddr) {
        if self.max_failures == 0 {
            return;
        }
        let now = Instant::now();
        let mut table = self.table();
        if table.len() >= MAX_LOCKOUT_ENTRIES {
            let period = self.period;
            table.retain(|_, f| now.duration_since(f.last) < period);
        }
        for key in [LockKey::User(user.to_string()), LockKey::Ip(ip)] {
            let entry = table.entry(key).or_insert(Failures {
                count: 0,
                last: now,
            });
            if now.duration_since(entry.last) >= self.period {
                entry.count = 0;
            }
            entry.count += 1;
            entry.last = now;
        }
        crate::metrics::login_failure();
    }

    fn record_success(&self, user: &str) {
        if self.max_failures == 0 {
            return;
        }
        self.table().remove(&LockKey::User(user.to_string()));
    }
}

/// Name under which anonymous logins are accepted (RFC 1635 also allows "ftp").
pub const ANONYMOUS_NAMES: [&str; 2] = ["anonymous", "ftp"];

/// All accounts, and the authenticator libunftp asks.
pub struct Accounts {
    users: HashMap<String, Arc<Account>>,
    anonymous: Option<Arc<Account>>,
    lockout: Lockout,
    /// A real hash to verify against for unknown names, so that a login
    /// with a wrong name costs as much time as one with a wrong password.
    decoy_hash: String,
    /// Password checks running at once (one per core).
    verifications: tokio::sync::Semaphore,
}

impl Accounts {
    /// Collects the accounts; names must be unique (checked by config).
    pub fn new(
        users: Vec<Account>,
        anonymous: Option<Account>,
        lockout: Lockout,
    ) -> Result<Self, password_hash::Error> {
        Ok(Self {
            users: users
                .into_iter()
                .map(|a| (a.name.clone(), Arc::new(a)))
                .collect(),
            anonymous: anonymous.map(Arc::new),
            lockout,
            decoy_hash: hash_password("decoy password nobody has")?,
            verifications: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
        })
    }

    /// Every account (for readiness checks over each store).
    pub fn all(&self) -> impl Iterator<Item = &Arc<Account>> {
        self.users.values().chain(self.anonymous.iter())
    }

    fn lookup(&self, name: &str) -> Option<&Arc<Account>> {
        if ANONYMOUS_NAMES.contains(&name) {
            return self.anonymous.as_ref();
        }
        self.users.get(name)
    }
}

impl fmt::Debug for Accounts {
    // libunftp logs its session (and so this) in debug spans: no hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounts")
            .field("users", &self.users.len())
            .field("anonymous", &self.anonymous.is_some())
            .finish_non_exhaustive()
    }
}

/// Why a login was refused, for the log (the client only sees 530).
fn refuse(reason: &'static str, user: &str, ip: IpAddr) -> AuthenticationError {
    tracing::info!(user, client_ip = %ip, reason, "login refused");
    crate::metrics::login("failure");
    AuthenticationError::new(reason)
}

#[async_trait]
impl Authenticator for Accounts {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        let ip = creds.source_ip;
        if self.lockout.is_locked(username, ip) {
            return Err(refuse("locked out after repeated failures", username, ip));
        }
        let account = self.lookup(username).cloned();
        let password = creds.password.clone().unwrap_or_default();
        let hash = match &account {
            Some(a) => a.password_hash.clone(),
            None => Some(self.decoy_hash.clone()),
        };
        let password_ok = match hash {
            // Anonymous: any password (traditionally an e-mail address).
            None => true,
            Some(hash) => {
                // argon2id takes ~19 MiB and tens of milliseconds per check:
                // a burst of logins waits for a slot instead of taking
                // memory and every core at once. The semaphore is never
                // closed, so acquiring only fails if it were.
                let Ok(_slot) = self.verifications.acquire().await else {
                    return Err(refuse("server shutting down", username, ip));
                };
                tokio::task::spawn_blocking(move || verify(&hash, &password))
                    .await
                    .unwrap_or(false)
            }
        };
        let Some(account) = account else {
            self.lockout.record_failure(username, ip);
            return Err(refuse("unknown user", username, ip));
        };
        if !password_ok {
            self.lockout.record_failure(username, ip);
            return Err(refuse("bad password", username, ip));
        }
        if !account.enabled {
            return Err(refuse("account disabled", username, ip));
        }
        if !account.allowed_networks.is_empty()
            && !account.allowed_networks.iter().any(|n| n.contains(&ip))
        {
            return Err(refuse("client address not allowed", username, ip));
        }
        if account.tls_required && creds.command_channel_security != ChannelEncryptionState::Tls {
            return Err(refuse("tls required for this user", username, ip));
        }
        self.lockout.record_success(username);
        crate::metrics::login("success");
        tracing::info!(user = username, client_ip = %ip, "login");
        Ok(Principal {
            username: username.to_string(),
        })
    }
}

#[async_trait]
impl UserDetailProvider for Accounts {
    type User = SessionUser;

    async fn provide_user_detail(
        &self,
        principal: &Principal,
    ) -> Result<SessionUser, UserDetailError> {
        match self.lookup(&principal.username) {
            Some(account) => Ok(SessionUser {
                account: account.clone(),
            }),
            None => Err(UserDetailError::UserNotFound {
                username: principal.username.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_plaintext_is_refused() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert_eq!(validate_hash(&hash), Ok(()));
        assert!(verify(&hash, "s3cret"));
        assert!(!verify(&hash, "wrong"));
        assert_eq!(validate_hash("s3cret"), Err(HashError::NotAHash));
        let pbkdf = pbkdf2::Pbkdf2
            .hash_password(b"pw", &SaltString::generate(&mut rand::rngs::OsRng))
            .unwrap()
            .to_string();
        assert_eq!(validate_hash(&pbkdf), Ok(()));
        assert!(verify(&pbkdf, "pw"));
    }

    #[test]
    fn permissions_parse() {
        let set = Permission::parse_list(&["list".into(), "read".into()]).unwrap();
        assert!(set.allows(Permission::Read) && !set.allows(Permission::Write));
        let all = Permission::parse_list(&["all".into()]).unwrap();
        assert!(Permission::ALL.iter().all(|p| all.allows(*p)));
        assert_eq!(
            Permission::parse_list(&["fly".into()]),
            Err("fly".to_string())
        );
    }

    #[test]
    fn lockout_counts_per_user_and_ip() {
        let lock = Lockout::new(2, Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(!lock.is_locked("u", ip));
        lock.record_failure("u", ip);
        lock.record_failure("u", ip);
        assert!(lock.is_locked("u", other), "user locked from any address");
        assert!(lock.is_locked("v", ip), "address locked for any user");
        assert!(!lock.is_locked("v", other));
        let off = Lockout::new(0, Duration::from_secs(60));
        off.record_failure("u", ip);
        assert!(!off.is_locked("u", ip));
    }
}
