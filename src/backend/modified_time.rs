//! `MFMT` (and `MDTM <time> <path>`): setting a file's modification time.
//!
//! On `file://` this is the file's own mtime, which MDTM, MLSD and LIST
//! already report, so `rclone sync`, lftp `mirror` and WinSCP keep
//! timestamps. Object stores keep the time of the upload and can change an
//! object's metadata only by copying the object onto itself (S3 CopyObject
//! with a new metadata set, which object_store does not offer and which
//! fails above 5 GiB), so there the command answers 502.

use super::{reply_codes::storage_error, ObjectBackend};
use crate::auth::{Permission, SessionUser};
use crate::store_url::StoreKind;
use std::path::Path;
use std::time::SystemTime;
use unftp_core::storage::{Error as StorageError, ErrorKind as StorageErrorKind, Result};

impl ObjectBackend {
    /// Sets the modification time of the file at `path`.
    pub async fn set_modified(
        &self,
        user: &SessionUser,
        path: &Path,
        when: SystemTime,
    ) -> Result<()> {
        self.allow(user, Permission::Write)?;
        let key = self.key(user, path).await?;
        let StoreKind::Local { fs, .. } = &user.account.store.kind else {
            return Err(StorageError::new(
                StorageErrorKind::CommandNotImplemented,
                "setting modification times is only supported on file:// storage",
            ));
        };
        if user.account.gcs_engine.is_some() || &key == user.account.jail.root() {
            return Err(StorageError::new(
                StorageErrorKind::PermanentFileNotAvailable,
                "not a file",
            ));
        }
        let file = fs.path_to_filesystem(&key).map_err(storage_error)?;
        tokio::task::spawn_blocking(move || {
            // Opened for appending: never truncates, and refuses directories.
            std::fs::File::options()
                .append(true)
                .open(&file)
                .and_then(|f| f.set_modified(when))
        })
        .await
        .map_err(|e| StorageError::new(StorageErrorKind::LocalError, e))?
        .map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory => {
                    StorageErrorKind::PermanentFileNotAvailable
                }
                std::io::ErrorKind::PermissionDenied => StorageErrorKind::PermissionDenied,
                _ => StorageErrorKind::LocalError,
            };
            StorageError::new(kind, e)
        })
    }
}
