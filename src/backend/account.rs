//! The user libunftp hands the storage back-end: an account's store, home,
//! permissions and engine, resolved once at start-up.

use super::Engine;
use crate::paths::{Jail, PathError};
use crate::permissions::PermissionSet;
use crate::store_url::OpenedStore;
use std::fmt;
use std::sync::Arc;
use unftp_core::auth::UserDetail;

/// An account as the storage side sees it: where its files live, what it
/// may do there and which engine stores them. What a login must show (the
/// password hash, networks, TLS) is the authenticator's
/// ([`crate::auth::Login`]).
pub struct Account {
    /// Login name.
    pub name: String,
    /// Where the account's files live.
    pub store: OpenedStore,
    /// The account's home inside the store.
    pub jail: Jail,
    /// What the account may do.
    pub permissions: PermissionSet,
    /// Disabled accounts cannot log in but stay in the config.
    pub enabled: bool,
    /// The engine that stores the account's files (object_store, or
    /// unftp-sbe-gcs), chosen once at start-up and rooted at its home.
    pub(crate) engine: Arc<dyn Engine>,
}

impl fmt::Debug for Account {
    // Hand-written: the engine and the store's client are not worth a log line.
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
