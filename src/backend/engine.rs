//! The seam between the FTP side and a storage engine.
//!
//! [`super::ObjectBackend`] is the one libunftp back-end, a wrapper in the
//! style of libunftp's own wrapper back-ends: it checks permissions, jails
//! paths under the user's home, refuses what no engine may do to the home,
//! guards REST offsets, registers transfers, applies the commit rule to
//! uploads ([`super::commit_rule`]) and writes the audit record. An engine
//! only stores: it is given jailed object keys and answers in FTP's error
//! kinds.
//!
//! One engine is chosen per account at start-up (`storage.engine`):
//! [`super::object_engine`] over object_store (every storage URL), or
//! [`super::sbe_gcs`] over libunftp's unftp-sbe-gcs crate. A new engine is
//! one file implementing [`Engine`]; what it cannot do it leaves to
//! the default methods, which refuse with 502 rather than fake it.

use super::account::SessionUser;
use super::commit_rule::UploadInput;
use super::directories::{self, Entry, EntryKind};
use super::settings::BackendSettings;
use crate::integrity::Algorithm;
use crate::memory_budget::Reservation;
use crate::transfers::{SessionContext, TransferGuard};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path as ObjectPath;
use std::path::PathBuf;
use std::time::SystemTime;
use unftp_core::storage::{
    Error as StorageError, ErrorKind as StorageErrorKind, Fileinfo, Metadata, Permissions,
    Result as StorageResult,
};

/// An object's bytes as an engine serves them to a download.
pub(crate) type ByteStream = BoxStream<'static, object_store::Result<Bytes>>;

/// A listing as libunftp takes it.
pub(crate) type Listing = Vec<Fileinfo<PathBuf, ObjectMetadata>>;

/// Starts the transfer a checksum may need (it streams the object only when
/// no digest is stored, so it registers a download only then).
pub(crate) type BeginDownload<'a> = dyn Fn() -> StorageResult<TransferGuard> + Send + Sync + 'a;

/// A storage engine: where an account's files live and how they are stored.
///
/// Every key has been jailed under the account's home and admitted by
/// [`Engine::admit`]; permissions, home and REST-offset guards,
/// transfer registration, the commit rule and audit records are the
/// wrapper's, never an engine's.
#[async_trait]
pub(crate) trait Engine: Send + Sync {
    /// The engine's name in refusals ("… is not supported by the … engine").
    fn name(&self) -> &'static str;

    /// Whether an upload can keep the first bytes of the existing object
    /// (REST+STOR, APPE). An engine that writes whole objects only would
    /// overwrite from byte 0, so such uploads are refused (502) before a
    /// byte is read.
    fn resumes_uploads(&self) -> bool {
        true
    }

    /// Refuses keys the engine cannot hold; runs on every key after jailing.
    async fn admit(&self, _key: &ObjectPath) -> StorageResult<()> {
        Ok(())
    }

    /// What is at `key`: a file, a directory, or nothing (`Ok(None)`).
    /// MKD and CWD decide on it.
    async fn stat(&self, key: &ObjectPath) -> StorageResult<Option<ObjectMetadata>>;

    /// SIZE, MDTM, MLST, APPE's size probe and the REST guard. An engine
    /// with a cheaper or narrower lookup than [`Engine::stat`]
    /// overrides it.
    async fn metadata(&self, key: &ObjectPath) -> StorageResult<ObjectMetadata> {
        self.stat(key)
            .await?
            .ok_or_else(|| not_found("no such file or directory"))
    }

    /// Whether a file is stored at `key`, for users who may not overwrite.
    async fn file_exists(&self, key: &ObjectPath) -> StorageResult<bool>;

    /// The entries of the directory `dir` whose names match `pattern` (a
    /// `*`/`?` pattern, see [`super::name_pattern`]), with stored
    /// modification times read for up to `mtime_limit` files.
    async fn list(
        &self,
        dir: &ObjectPath,
        pattern: Option<&str>,
        mtime_limit: usize,
    ) -> StorageResult<Listing>;

    /// The object's bytes from `start_pos`, which the wrapper has checked
    /// lies before its end.
    async fn open(
        &self,
        key: &ObjectPath,
        start_pos: u64,
        transfer: &Transfer<'_>,
    ) -> StorageResult<ByteStream>;

    /// Stores the first `start_pos` bytes of the existing object (0 unless
    /// [`Engine::resumes_uploads`]) followed by everything `input`
    /// yields. The object becomes visible only if `input` ends in
    /// end-of-file; after an error nothing may remain.
    async fn write(
        &self,
        key: &ObjectPath,
        input: UploadInput,
        start_pos: u64,
        transfer: &Transfer<'_>,
    ) -> StorageResult<()>;

    /// Deletes the file at `key` (550 when there is none).
    async fn delete(&self, key: &ObjectPath) -> StorageResult<()>;

    /// Creates the directory `key`, which does not exist yet.
    async fn make_dir(&self, key: &ObjectPath) -> StorageResult<()>;

    /// Removes the empty directory `key`.
    async fn remove_dir(&self, key: &ObjectPath) -> StorageResult<()>;

    /// Renames a file or a directory of at most `limit` objects.
    async fn rename(
        &self,
        _from: &ObjectPath,
        _to: &ObjectPath,
        _limit: usize,
    ) -> StorageResult<()> {
        Err(unsupported(self.name(), "rename"))
    }

    /// The `algorithm` digest (lowercase hex) of the file and its size.
    async fn checksum(
        &self,
        _key: &ObjectPath,
        _algorithm: Algorithm,
        _begin: &BeginDownload<'_>,
    ) -> StorageResult<(String, u64)> {
        Err(unsupported(self.name(), "checksums"))
    }

    /// Sets the file's modification time (MFMT).
    async fn set_modified(&self, _key: &ObjectPath, _when: SystemTime) -> StorageResult<()> {
        Err(unsupported(self.name(), "setting modification times"))
    }
}

/// What the session lends an engine for one transfer.
pub(crate) struct Transfer<'a> {
    /// The logged-in user (upload events name the account).
    pub(crate) user: &'a SessionUser,
    /// The control connection's context (upload events name the session).
    pub(crate) session: &'a SessionContext,
    /// Part sizes, read-ahead and the memory budget.
    pub(crate) settings: &'a BackendSettings,
    /// The registered transfer; shutdown cuts it through this.
    pub(crate) guard: &'a TransferGuard,
}

impl Transfer<'_> {
    /// The transfer's base reservation from the memory budget. A transfer
    /// that gets none within `storage.memory_wait` is refused with 451
    /// ("local error in processing", RFC 959 lists it for both RETR and
    /// STOR): the shortage is the server's own and passes, so the reply is
    /// transient (4xx) and clients retry; 450 already means "file busy"
    /// (max_uploads) and 452 would claim the store is full.
    pub(crate) async fn reserve(&self, bytes: usize) -> StorageResult<Reservation> {
        self.settings
            .upload
            .budget
            .reserve(bytes, self.guard.cancelled())
            .await
            .map_err(|e| StorageError::new(StorageErrorKind::LocalError, e))
    }
}

/// A refusal for what an engine cannot do.
pub(crate) fn unsupported(engine: &str, what: &str) -> StorageError {
    StorageError::new(
        StorageErrorKind::CommandNotImplemented,
        format!("{what} is not supported by the {engine} engine"),
    )
}

/// Nothing at the path (550).
pub(crate) fn not_found(what: &str) -> StorageError {
    StorageError::new(
        StorageErrorKind::PermanentFileNotAvailable,
        what.to_string(),
    )
}

/// What LIST, MLSD and MLST show for a file or directory, whichever engine
/// stores it.
#[derive(Debug, Clone)]
pub(crate) struct ObjectMetadata {
    pub(super) len: u64,
    pub(super) modified: Option<SystemTime>,
    pub(super) dir: bool,
}

impl ObjectMetadata {
    /// A directory without a date of its own.
    pub(super) fn undated_directory() -> Self {
        Self {
            len: 0,
            modified: None,
            dir: true,
        }
    }
}

impl Metadata for ObjectMetadata {
    fn len(&self) -> u64 {
        self.len
    }
    fn is_dir(&self) -> bool {
        self.dir
    }
    fn is_file(&self) -> bool {
        !self.dir
    }
    fn is_symlink(&self) -> bool {
        false
    }
    /// Every directory has a date (see [`directories::undated_directory`]):
    /// `LIST` would otherwise print `--- -- --:--`, which wget and ftputil
    /// cannot parse.
    fn modified(&self) -> StorageResult<SystemTime> {
        self.modified
            .or_else(|| self.dir.then(directories::undated_directory))
            .ok_or_else(|| StorageError::from(StorageErrorKind::PermanentFileNotAvailable))
    }
    fn gid(&self) -> u32 {
        0
    }
    fn uid(&self) -> u32 {
        0
    }
    fn permissions(&self) -> Permissions {
        Permissions(if self.dir { 0o755 } else { 0o644 })
    }
}

impl From<&Entry> for ObjectMetadata {
    fn from(entry: &Entry) -> Self {
        Self {
            len: entry.size,
            modified: entry.modified,
            dir: entry.kind == EntryKind::Directory,
        }
    }
}
