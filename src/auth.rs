//! Logins: the libunftp authenticator, with lockout.
//!
//! Password verification ([`crate::passwords`]) runs on the blocking pool
//! because a good hash is deliberately slow, and it runs even for unknown
//! users so response time does not reveal which names exist.

use crate::backend::{Account, SessionUser};
use crate::config::ANONYMOUS_NAMES;
use crate::passwords::{hash_password, verify};
use async_trait::async_trait;
use ipnet::IpNet;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use unftp_core::auth::{
    AuthenticationError, Authenticator, ChannelEncryptionState, Credentials, Principal,
    UserDetailError, UserDetailProvider,
};

/// What a login must show to become its account.
pub(crate) struct Login {
    /// The account the login opens.
    pub account: Arc<Account>,
    /// PHC password hash; `None` for the anonymous account.
    pub password_hash: Option<String>,
    /// Client networks allowed to log in as this account (empty = any).
    pub allowed_networks: Vec<IpNet>,
    /// Refuse the login unless the control channel is TLS.
    pub tls_required: bool,
}

impl fmt::Debug for Login {
    // Hand-written so the password hash never reaches a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("account", &self.account)
            .field("allowed_networks", &self.allowed_networks)
            .field("tls_required", &self.tls_required)
            .finish_non_exhaustive()
    }
}

/// Failed-login lockout, keyed by user name *and* client address.
///
/// Ours rather than libunftp's `failed_logins_policy` because the gateway
/// services each connection separately, and a policy must span connections.
///
/// The key is the pair, so wrong guesses from one address never lock the
/// user out from the addresses it really uses (a user-wide lock would hand
/// every attacker a switch to turn any known account off). An optional
/// per-address limit (`auth.lockout_attempts_per_address`, off by default
/// because clients behind one NAT share an address) also stops one address
/// from spraying guesses over many names. Only wrong passwords (and unknown
/// names) count; refusals that need no password never do.
///
/// The table is bounded: expired entries are pruned as new ones arrive and,
/// at [`MAX_LOCKOUT_ENTRIES`], the stalest entry is evicted. Names longer
/// than [`MAX_USER_NAME`] never reach it.
#[derive(Debug)]
pub(crate) struct Lockout {
    max_failures: u32,
    max_per_address: u32,
    period: Duration,
    table: Mutex<LockTable>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LockKey {
    UserAtAddress(String, IpAddr),
    Address(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

#[derive(Debug, Default)]
struct LockTable {
    entries: HashMap<LockKey, Failures>,
    inserts_since_prune: usize,
}

/// Most entries the lockout table holds (each at most ~300 bytes: a name of
/// up to [`MAX_USER_NAME`] bytes, an address, a counter), so an attacker
/// inventing names and addresses can make it hold at most a few MiB.
pub(crate) const MAX_LOCKOUT_ENTRIES: usize = 10_000;

/// Expired entries are swept after this many inserts, so a table that never
/// reaches its cap still forgets old failures.
const PRUNE_EVERY: usize = 1_024;

/// Longest user name we look at. Longer names are refused before they are
/// counted, hashed or logged (no account can have one: they are refused as
/// "unknown" anyway).
pub(crate) const MAX_USER_NAME: usize = 256;

/// How much of a refused name a log line shows.
const LOGGED_NAME: usize = 64;

impl Lockout {
    /// Lock a (user, address) pair after `max_failures` consecutive failures
    /// for `period`, and a whole address after `max_per_address` failures
    /// over any names; zero turns either off.
    pub(crate) fn new(max_failures: u32, max_per_address: u32, period: Duration) -> Self {
        Self {
            max_failures,
            max_per_address,
            period,
            table: Mutex::new(LockTable::default()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, LockTable> {
        // A poisoned lock only means another thread panicked mid-update of a
        // counter; the data is still usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn keys(&self, user: &str, ip: IpAddr) -> Vec<(LockKey, u32)> {
        let mut keys = Vec::with_capacity(2);
        if self.max_failures > 0 {
            keys.push((
                LockKey::UserAtAddress(user.to_string(), ip),
                self.max_failures,
            ));
        }
        if self.max_per_address > 0 {
            keys.push((LockKey::Address(ip), self.max_per_address));
        }
        keys
    }

    fn is_locked(&self, user: &str, ip: IpAddr) -> bool {
        let now = Instant::now();
        let table = self.table();
        self.keys(user, ip).iter().any(|(key, limit)| {
            table
                .entries
                .get(key)
                .is_some_and(|f| f.count >= *limit && now.duration_since(f.last) < self.period)
        })
    }

    fn record_failure(&self, user: &str, ip: IpAddr) {
        let keys = self.keys(user, ip);
        if keys.is_empty() {
            return;
        }
        let now = Instant::now();
        let period = self.period;
        let mut table = self.table();
        for (key, _) in keys {
            if !table.entries.contains_key(&key) {
                table.inserts_since_prune += 1;
                if table.inserts_since_prune >= PRUNE_EVERY
                    || table.entries.len() >= MAX_LOCKOUT_ENTRIES
                {
                    table.inserts_since_prune = 0;
                    table
                        .entries
                        .retain(|_, f| now.duration_since(f.last) < period);
                }
                if table.entries.len() >= MAX_LOCKOUT_ENTRIES {
                    // Full of live entries: forget the stalest one. O(n),
                    // but only at the cap, and n is bounded.
                    let stalest = table
                        .entries
                        .iter()
                        .min_by_key(|(_, f)| f.last)
                        .map(|(k, _)| k.clone());
                    if let Some(stalest) = stalest {
                        table.entries.remove(&stalest);
                    }
                }
            }
            let entry = table.entries.entry(key).or_insert(Failures {
                count: 0,
                last: now,
            });
            if now.duration_since(entry.last) >= period {
                entry.count = 0;
            }
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
        }
        crate::metrics::login_failure();
    }

    fn record_success(&self, user: &str, ip: IpAddr) {
        if self.max_failures > 0 {
            self.table()
                .entries
                .remove(&LockKey::UserAtAddress(user.to_string(), ip));
        }
    }

    /// Entries held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table().entries.len()
    }
}

/// A user name as log lines show it: at most [`LOGGED_NAME`] bytes (cut on
/// a character boundary), marked when cut.
fn loggable(name: &str) -> std::borrow::Cow<'_, str> {
    if name.len() <= LOGGED_NAME {
        return name.into();
    }
    let mut end = LOGGED_NAME;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…({} bytes)", &name[..end], name.len()).into()
}

/// All accounts, and the authenticator libunftp asks.
pub struct Accounts {
    users: HashMap<String, Arc<Login>>,
    anonymous: Option<Arc<Login>>,
    lockout: Lockout,
    /// A real hash to verify against for unknown names, so that a login
    /// with a wrong name costs as much time as one with a wrong password.
    decoy_hash: String,
    /// Password checks running at once (see [`MAX_VERIFICATIONS`]).
    verifications: Arc<tokio::sync::Semaphore>,
}

/// Most password verifications running at once: one per core, never more
/// than this. argon2id takes ~19 MiB and tens of milliseconds of one core
/// per check: a login storm queues for these slots instead of multiplying
/// memory (at most ~76 MiB) and taking every core.
pub(crate) const MAX_VERIFICATIONS: usize = 4;

impl Accounts {
    /// Collects the accounts; names must be unique (checked by config).
    pub(crate) fn new(
        users: Vec<Login>,
        anonymous: Option<Login>,
        lockout: Lockout,
    ) -> Result<Self, password_hash::Error> {
        Ok(Self {
            users: users
                .into_iter()
                .map(|l| (l.account.name.clone(), Arc::new(l)))
                .collect(),
            anonymous: anonymous.map(Arc::new),
            lockout,
            decoy_hash: hash_password("decoy password nobody has")?,
            verifications: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .min(MAX_VERIFICATIONS),
            )),
        })
    }

    fn lookup(&self, name: &str) -> Option<&Arc<Login>> {
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

/// Why a login was refused, for the log (the client only sees 530). The
/// one log line per refusal: libunftp's own is filtered out (see
/// [`crate::logging::log_directive`]) because it prints the whole name.
fn refuse(reason: &'static str, user: &str, ip: IpAddr) -> AuthenticationError {
    tracing::info!(user = %loggable(user), client_ip = %ip, reason, "login refused");
    crate::metrics::login("failure");
    AuthenticationError::new(reason)
}

impl Accounts {
    /// Checks the password against `hash` on the blocking pool, in one of
    /// the verification slots (see [`MAX_VERIFICATIONS`]). The slot moves into the blocking
    /// task, so a client that hangs up mid-check does not free it early.
    async fn verify_in_pool(&self, hash: String, password: String) -> bool {
        // The semaphore is never closed, so acquiring cannot fail.
        let Ok(slot) = self.verifications.clone().acquire_owned().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || {
            let ok = verify(&hash, &password);
            drop(slot);
            ok
        })
        .await
        .unwrap_or(false)
    }
}

#[async_trait]
impl Authenticator for Accounts {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        // A dual-stack listener shows IPv4 clients as ::ffff:a.b.c.d; allow
        // lists, lockout keys and logs use the plain IPv4 form.
        let ip = creds.source_ip.to_canonical();
        if username.len() > MAX_USER_NAME {
            return Err(refuse("user name too long", username, ip));
        }
        if self.lockout.is_locked(username, ip) {
            return Err(refuse("locked out after repeated failures", username, ip));
        }
        let account = self.lookup(username).cloned();
        // Refusals that need no password come first and never count
        // towards lockout: they cannot be guessed past, and counting them
        // would let anyone lock an account from an address it never uses.
        if let Some(account) = &account {
            if !account.account.enabled {
                return Err(refuse("account disabled", username, ip));
            }
            if !account.allowed_networks.is_empty()
                && !account.allowed_networks.iter().any(|n| n.contains(&ip))
            {
                return Err(refuse("client address not allowed", username, ip));
            }
            if account.tls_required && creds.command_channel_security != ChannelEncryptionState::Tls
            {
                return Err(refuse("tls required for this user", username, ip));
            }
        }
        let password = creds.password.clone().unwrap_or_default();
        let hash = match &account {
            Some(a) => a.password_hash.clone(),
            None => Some(self.decoy_hash.clone()),
        };
        let password_ok = match hash {
            // Anonymous: any password (traditionally an e-mail address).
            None => true,
            Some(hash) => self.verify_in_pool(hash, password).await,
        };
        let Some(account) = account else {
            self.lockout.record_failure(username, ip);
            return Err(refuse("unknown user", username, ip));
        };
        if !password_ok {
            self.lockout.record_failure(username, ip);
            return Err(refuse("bad password", username, ip));
        }
        self.lockout.record_success(username, ip);
        crate::metrics::login("success");
        tracing::info!(user = username, client_ip = %ip, "login");
        Ok(Principal {
            username: account.account.name.clone(),
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
            Some(login) => Ok(SessionUser {
                account: login.account.clone(),
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
    fn lockout_is_per_user_and_address() {
        let lock = Lockout::new(2, 0, Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(!lock.is_locked("u", ip));
        lock.record_failure("u", ip);
        lock.record_failure("u", ip);
        assert!(
            lock.is_locked("u", ip),
            "locked where the guesses came from"
        );
        assert!(
            !lock.is_locked("u", other),
            "not from the user's other address"
        );
        assert!(!lock.is_locked("v", ip), "no per-address limit by default");
        lock.record_success("u", other);
        assert!(lock.is_locked("u", ip));
        let off = Lockout::new(0, 0, Duration::from_secs(60));
        off.record_failure("u", ip);
        assert!(!off.is_locked("u", ip));
        assert_eq!(off.len(), 0);
    }

    #[test]
    fn per_address_limit_spans_names() {
        let lock = Lockout::new(5, 3, Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for name in ["a", "b", "c"] {
            lock.record_failure(name, ip);
        }
        assert!(lock.is_locked("d", ip));
        assert!(!lock.is_locked("d", "10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn lockout_table_is_bounded() {
        let lock = Lockout::new(5, 0, Duration::from_secs(3600));
        for i in 0..(MAX_LOCKOUT_ENTRIES as u32 + 500) {
            let ip = IpAddr::from(i.to_be_bytes());
            lock.record_failure(&"x".repeat(MAX_USER_NAME), ip);
        }
        assert_eq!(lock.len(), MAX_LOCKOUT_ENTRIES);
        // Expired entries go first.
        let short = Lockout::new(5, 0, Duration::ZERO);
        for i in 0..(PRUNE_EVERY as u32 * 2) {
            short.record_failure("n", IpAddr::from(i.to_be_bytes()));
        }
        assert!(short.len() <= PRUNE_EVERY, "{}", short.len());
    }

    #[test]
    fn long_names_are_cut_in_logs() {
        assert_eq!(loggable("alice"), "alice");
        let long = "é".repeat(100);
        let shown = loggable(&long);
        assert!(shown.len() < LOGGED_NAME + 20, "{shown}");
        assert!(shown.ends_with("(200 bytes)"));
    }
}
