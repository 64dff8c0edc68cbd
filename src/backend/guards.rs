//! The guards every engine's operations pass, written once: permissions,
//! the jail, what may not be done to the home directory, REST offsets and
//! overwriting.

use super::account::SessionUser;
use super::reply_codes::path_error;
use super::ObjectBackend;
use crate::permissions::Permission;
use object_store::path::Path as ObjectPath;
use std::path::Path;
use unftp_core::storage::{
    Error as StorageError, ErrorKind as StorageErrorKind, Metadata, Result as StorageResult,
};

/// What a command would do to the home directory: refused alike whatever
/// the engine, each with the reply its command calls for.
#[derive(Debug, Clone, Copy)]
pub(super) enum HomeUse {
    Store,
    Delete,
    Rename,
    Remove,
    SetTime,
}

impl HomeUse {
    fn refusal(self) -> StorageError {
        use StorageErrorKind::*;
        let (kind, why) = match self {
            HomeUse::Store => (
                FileNameNotAllowedError,
                "cannot store a file as the home directory",
            ),
            HomeUse::Delete => (
                PermanentFileNotAvailable,
                "the home directory is not a file",
            ),
            HomeUse::Rename => (PermissionDenied, "cannot rename the home directory"),
            HomeUse::Remove => (PermissionDenied, "cannot remove the home directory"),
            HomeUse::SetTime => (PermanentFileNotAvailable, "not a file"),
        };
        StorageError::new(kind, why)
    }
}

impl ObjectBackend {
    /// Refuses (550) what the user's permissions do not allow.
    pub(super) fn allow(&self, user: &SessionUser, permission: Permission) -> StorageResult<()> {
        if user.account.permissions.allows(permission) {
            Ok(())
        } else {
            Err(StorageError::new(
                StorageErrorKind::PermissionDenied,
                format!("user lacks the {permission:?} permission"),
            ))
        }
    }

    /// Metadata reveals that a file exists, so it needs one of the
    /// permissions that show files (SIZE, MDTM, MLST, RNFR; APPE's size
    /// probe then finds nothing and the upload is checked as a new file).
    pub(super) fn allow_metadata(&self, user: &SessionUser) -> StorageResult<()> {
        self.allow(user, Permission::List)
            .or_else(|_| self.allow(user, Permission::Read))
    }

    /// The object key for an FTP path: jailed under the user's home, then
    /// admitted by the account's engine (on `file://`: no name the store
    /// reserves, no symbolic link leading outside its root).
    pub(super) async fn resolve(
        &self,
        user: &SessionUser,
        path: &Path,
    ) -> StorageResult<ObjectPath> {
        let key = user.account.jail.key(path).map_err(path_error)?;
        user.account.engine.admit(&key).await?;
        Ok(key)
    }

    /// Refuses `what` when `key` is the user's home.
    pub(super) fn not_home(
        user: &SessionUser,
        key: &ObjectPath,
        what: HomeUse,
    ) -> StorageResult<()> {
        if key == user.account.jail.root() {
            Err(what.refusal())
        } else {
            Ok(())
        }
    }

    /// The REST guard of RETR and STOR/APPE: an offset beyond the end of
    /// the file is refused (550). Returns the file's size.
    pub(super) async fn restart_within(
        &self,
        user: &SessionUser,
        key: &ObjectPath,
        start_pos: u64,
    ) -> StorageResult<u64> {
        let size = user.account.engine.metadata(key).await?.len();
        if start_pos > size {
            return Err(StorageError::new(
                StorageErrorKind::PermanentFileNotAvailable,
                format!("restart offset {start_pos} is beyond the end of the file ({size} bytes)"),
            ));
        }
        Ok(size)
    }

    /// For users without [`Permission::Overwrite`]: refuses an upload that
    /// would replace or extend an existing file. (Checked before the upload;
    /// two uploads racing to create the same name can both pass.)
    pub(super) async fn refuse_existing(
        &self,
        user: &SessionUser,
        key: &ObjectPath,
        start_pos: u64,
    ) -> StorageResult<()> {
        if start_pos > 0 || user.account.engine.file_exists(key).await? {
            return Err(StorageError::new(
                StorageErrorKind::PermanentFileNotAvailable,
                "file exists and this user may not overwrite files",
            ));
        }
        Ok(())
    }
}
