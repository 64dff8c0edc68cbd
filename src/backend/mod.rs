//! The libunftp storage back-end over `object_store`.
//!
//! One [`ObjectBackend`] exists per control connection (libunftp calls the
//! factory once per session). It resolves every FTP path through the user's
//! [`Jail`](crate::paths::Jail), checks the user's permissions, and maps each
//! FTP operation onto object-store calls:
//!
//! | FTP            | object store                                             |
//! |----------------|----------------------------------------------------------|
//! | LIST/NLST/MLSD | `list_with_delimiter` (dirs = common prefixes + markers); |
//! |                | `*`/`?` in the last segment filter the parent's listing  |
//! | SIZE/MDTM/MLST | `head`, else directory probe; `mtime` metadata wins       |
//! | MFMT           | `mtime` metadata rewritten in place (file mtime on disk) |
//! | RETR (+REST)   | `get` (ranged)                                           |
//! | STOR/APPE/REST | PUT or multipart upload, see [`upload`]                  |
//! | DELE           | `head` + `delete`                                        |
//! | MKD / RMD      | `dir/` marker object (a real directory on `file://`)     |
//! | RNFR/RNTO      | `rename` (copy + delete on clouds), per object for dirs  |

mod checksums;
pub mod close_notify;
mod directories;
pub mod download;
pub mod local_paths;
pub mod modified_time;
mod name_pattern;
pub mod reply_codes;
pub mod sbe_gcs;
pub mod upload;

use crate::auth::{Permission, SessionUser};
use crate::memory_budget::{self, Reservation};
use crate::store_url::StoreKind;
use crate::transfers::{Direction, SessionContext, TransferRefused, Transfers};
use async_trait::async_trait;
use directories::{Entry, EntryKind};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use reply_codes::{local_path_error, path_error, storage_error};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use unftp_core::storage::{
    Error as StorageError, ErrorKind as StorageErrorKind, Fileinfo, Metadata, Permissions,
    Result as StorageResult, StorageBackend, FEATURE_RESTART, FEATURE_SITEMD5,
};
use upload::{UploadError, UploadSettings};

/// Behaviour switches shared by every session.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    /// How uploads are cut into parts.
    pub upload: UploadSettings,
    /// Most objects a directory rename may touch (each is a copy + delete on
    /// clouds, so an unbounded rename could run for hours).
    pub rename_limit: usize,
    /// Answer MKD of an existing directory with success (some NVRs and
    /// cameras disconnect on 550).
    pub mkd_existing_ok: bool,
    /// Most ranged GETs of one part each running at once per cloud
    /// download (fewer under memory pressure, see [`download::open_parallel`]).
    pub download_concurrency: usize,
    /// Most files of one listing whose stored `mtime` is read (a HEAD each).
    pub listing_mtime_limit: usize,
    /// An FTPS upload is complete only at the client's TLS close_notify
    /// (`tls.require_close_notify`, see [`close_notify`]).
    pub require_close_notify: bool,
}

/// Buffer between a download's chunks and the data connection.
const COPY_BUFFER: usize = 1 << 20;

/// The per-session storage back-end handed to libunftp.
#[derive(Debug, Clone)]
pub struct ObjectBackend {
    session: Arc<SessionContext>,
    settings: Arc<BackendSettings>,
    transfers: Arc<Transfers>,
}

impl ObjectBackend {
    /// A back-end for one control connection.
    pub fn new(
        session: Arc<SessionContext>,
        settings: Arc<BackendSettings>,
        transfers: Arc<Transfers>,
    ) -> Self {
        Self {
            session,
            settings,
            transfers,
        }
    }

    fn allow(&self, user: &SessionUser, permission: Permission) -> StorageResult<()> {
        if user.account.permissions.allows(permission) {
            Ok(())
        } else {
            Err(StorageError::new(
                StorageErrorKind::PermissionDenied,
                format!("user lacks the {permission:?} permission"),
            ))
        }
    }

    /// The object key for an FTP path: jailed under the user's home and, on
    /// `file://`, checked against what a local store can hold (names it
    /// reserves, symbolic links leading outside its root).
    async fn key(&self, user: &SessionUser, path: &Path) -> StorageResult<ObjectPath> {
        let key = user.account.jail.key(path).map_err(path_error)?;
        if let StoreKind::Local { root, fs } = &user.account.store.kind {
            local_paths::check(root, fs, &key)
                .await
                .map_err(local_path_error)?;
        }
        Ok(key)
    }

    /// Metadata reveals that a file exists, so it needs one of the
    /// permissions that show files (SIZE, MDTM, MLST, RNFR; APPE's size
    /// probe then finds nothing and the upload is checked as a new file).
    fn allow_metadata(&self, user: &SessionUser) -> StorageResult<()> {
        self.allow(user, Permission::List)
            .or_else(|_| self.allow(user, Permission::Read))
    }

    fn begin(&self, direction: Direction) -> StorageResult<crate::transfers::TransferGuard> {
        self.transfers.begin(direction).map_err(|e| {
            let kind = match e {
                TransferRefused::ShuttingDown | TransferRefused::TooManyUploads => {
                    StorageErrorKind::TransientFileNotAvailable
                }
            };
            StorageError::new(kind, e)
        })
    }

    /// LIST/MLSD/NLST: the entries of a directory (or of its files matching
    /// a `*`/`?` pattern), with stored `mtime`s read for up to
    /// `mtime_limit` files.
    async fn listing(
        &self,
        user: &SessionUser,
        path: &Path,
        mtime_limit: usize,
    ) -> StorageResult<Vec<Fileinfo<PathBuf, ObjectMetadata>>> {
        let started = Instant::now();
        let result = async {
            self.allow(user, Permission::List)?;
            if let Some(gcs) = &user.account.gcs_engine {
                return sbe_gcs::ops::list(gcs, user, path).await;
            }
            // `LIST *.txt`, `NLST m?.jpg`: the parent's listing, filtered.
            let pattern = name_pattern::split(path);
            let dir = pattern.as_ref().map_or(path, |(dir, _)| dir);
            let key = self.key(user, dir).await?;
            let account = &user.account;
            let mut entries = directories::list(&account.store, account.jail.root(), &key)
                .await
                .map_err(storage_error)?
                .ok_or_else(|| not_found("no such directory"))?;
            if let Some((_, pattern)) = &pattern {
                entries.retain(|e| name_pattern::matches(pattern, &e.name));
            }
            directories::apply_stored_mtimes(&account.store, &mut entries, mtime_limit).await;
            Ok(entries
                .iter()
                .map(|e| Fileinfo {
                    path: PathBuf::from(&e.name),
                    metadata: ObjectMetadata::from(e),
                })
                .collect::<Vec<_>>())
        }
        .await;
        if let Err(e) = &result {
            self.audit(user, "LIST", path, 0, started, &Err(e));
        }
        result
    }

    /// A new transfer's base reservation from the memory budget. A transfer
    /// that gets none within `storage.memory_wait` is refused with 451
    /// ("local error in processing", RFC 959 lists it for both RETR and
    /// STOR): the shortage is the server's own and passes, so the reply is
    /// transient (4xx) and clients retry; 450 already means "file busy"
    /// (max_uploads) and 452 would claim the store is full.
    async fn reserve(
        &self,
        bytes: usize,
        guard: &crate::transfers::TransferGuard,
    ) -> StorageResult<Reservation> {
        self.settings
            .upload
            .budget
            .reserve(bytes, guard.cancelled())
            .await
            .map_err(|e| StorageError::new(StorageErrorKind::LocalError, e))
    }

    /// For users without [`Permission::Overwrite`]: refuses an upload that
    /// would replace or extend an existing file. (Checked before the upload;
    /// two uploads racing to create the same name can both pass.)
    async fn refuse_existing(
        &self,
        user: &SessionUser,
        path: &Path,
        start_pos: u64,
    ) -> StorageResult<()> {
        let refused = || {
            StorageError::new(
                StorageErrorKind::PermanentFileNotAvailable,
                "file exists and this user may not overwrite files",
            )
        };
        if start_pos > 0 {
            return Err(refused());
        }
        let exists = if let Some(gcs) = &user.account.gcs_engine {
            sbe_gcs::ops::metadata(gcs, user, path).await.is_ok()
        } else {
            let key = self.key(user, path).await?;
            match user.account.store.store.head(&key).await {
                Ok(_) => true,
                Err(object_store::Error::NotFound { .. }) => false,
                Err(e) => return Err(storage_error(e)),
            }
        };
        if exists {
            Err(refused())
        } else {
            Ok(())
        }
    }

    /// What runs when a download's reader is dropped: the audit record and
    /// the transfer metrics, with the bytes actually sent.
    fn finish_download(
        &self,
        user: &SessionUser,
        path: &Path,
        started: Instant,
    ) -> impl FnOnce(u64, bool) + Send + 'static {
        let (backend, user, path) = (self.clone(), user.clone(), path.to_path_buf());
        move |bytes, completed| {
            // An ABOR sent with urgent data during this download must not
            // be taken for an abort of the next upload.
            let _ = backend.session.take_urgent();
            crate::metrics::transfer_outcome(
                Direction::Download,
                completed,
                started.elapsed(),
                bytes,
            );
            let result = if completed {
                Ok(())
            } else {
                Err(StorageError::new(
                    StorageErrorKind::ConnectionClosed,
                    "download did not complete",
                ))
            };
            backend.audit(
                &user,
                "RETR",
                &path,
                bytes,
                started,
                &result.as_ref().map(|_| ()),
            );
        }
    }

    /// Times a command that moves no bytes and writes its audit line, so
    /// DELE, MKD, RNTO, RMD and MFMT report alike.
    async fn audited<T>(
        &self,
        user: &SessionUser,
        command: &'static str,
        path: &Path,
        op: impl std::future::Future<Output = StorageResult<T>>,
    ) -> StorageResult<T> {
        let started = Instant::now();
        let result = op.await;
        self.audit(
            user,
            command,
            path,
            0,
            started,
            &result.as_ref().map(|_| ()),
        );
        result
    }

    /// One audit record per finished operation, at info level.
    fn audit(
        &self,
        user: &SessionUser,
        command: &'static str,
        path: &Path,
        bytes: u64,
        started: Instant,
        result: &Result<(), &StorageError>,
    ) {
        let (outcome, reply) = match result {
            Ok(()) => ("ok", reply_code_ok(command)),
            Err(e) => ("error", reply_code_of(e.kind())),
        };
        tracing::info!(
            target: "bucketftp::audit",
            session = self.session.id,
            user = %user,
            client_ip = %self.session.peer.ip(),
            command,
            path = %path.display(),
            bytes,
            duration_ms = started.elapsed().as_millis() as u64,
            outcome,
            reply,
            cause = result.as_ref().err().map(|e| crate::error_chain(e)).unwrap_or_default(),
            "ftp operation"
        );
    }
}

/// The reply code libunftp sends for a successful command.
fn reply_code_ok(command: &str) -> u16 {
    match command {
        "STOR" | "RETR" | "APPE" => 226,
        "MKD" => 257,
        "MFMT" => 213,
        _ => 250,
    }
}

/// The reply code libunftp sends for a storage error kind.
pub fn reply_code_of(kind: StorageErrorKind) -> u16 {
    match kind {
        StorageErrorKind::TransientFileNotAvailable => 450,
        StorageErrorKind::PermanentFileNotAvailable
        | StorageErrorKind::PermanentDirectoryNotAvailable
        | StorageErrorKind::PermanentDirectoryNotEmpty
        | StorageErrorKind::PermissionDenied => 550,
        StorageErrorKind::ConnectionClosed => 426,
        StorageErrorKind::LocalError => 451,
        StorageErrorKind::PageTypeUnknown => 551,
        StorageErrorKind::InsufficientStorageSpaceError => 452,
        StorageErrorKind::ExceededStorageAllocationError => 552,
        StorageErrorKind::FileNameNotAllowedError => 553,
        StorageErrorKind::CommandNotImplemented => 502,
    }
}

impl From<UploadError> for StorageError {
    fn from(err: UploadError) -> Self {
        let kind = match &err {
            UploadError::Client(_)
            | UploadError::Idle(_)
            | UploadError::ClientGone
            | UploadError::Aborted => StorageErrorKind::ConnectionClosed,
            UploadError::Shutdown => StorageErrorKind::TransientFileNotAvailable,
            UploadError::Store(e) => reply_codes::kind_for(e),
            UploadError::Existing(e) => reply_codes::kind_for(e),
        };
        StorageError::new(kind, err)
    }
}

/// What LIST, MLSD and MLST show for a file or directory.
#[derive(Debug, Clone)]
pub struct ObjectMetadata {
    len: u64,
    modified: Option<SystemTime>,
    dir: bool,
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

fn not_found(what: &str) -> StorageError {
    StorageError::new(
        StorageErrorKind::PermanentFileNotAvailable,
        what.to_string(),
    )
}

#[async_trait]
impl StorageBackend<SessionUser> for ObjectBackend {
    type Metadata = ObjectMetadata;

    fn name(&self) -> &str {
        "bucketftp-object-store"
    }

    fn supported_features(&self) -> u32 {
        FEATURE_RESTART | FEATURE_SITEMD5
    }

    /// `SITE MD5`: MD5 is not computed during uploads (it would triple their
    /// hashing cost), so it is computed by streaming the object.
    async fn md5<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &SessionUser,
        path: P,
    ) -> StorageResult<String> {
        self.checksum(user, path.as_ref(), crate::integrity::Algorithm::Md5)
            .await
            .map(|(digest, _)| digest)
    }

    /// libunftp calls this once the password was accepted: the session
    /// stops counting as unauthenticated and its login deadline is lifted.
    fn enter(&mut self, _user: &SessionUser) -> std::io::Result<()> {
        self.session.mark_logged_in();
        Ok(())
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &SessionUser,
        path: P,
    ) -> StorageResult<ObjectMetadata> {
        self.allow_metadata(user)?;
        if let Some(gcs) = &user.account.gcs_engine {
            return sbe_gcs::ops::metadata(gcs, user, path.as_ref()).await;
        }
        let key = self.key(user, path.as_ref()).await?;
        let account = &user.account;
        match directories::stat(&account.store, account.jail.root(), &key).await {
            Ok(Some(entry)) => Ok(ObjectMetadata::from(&entry)),
            Ok(None) => Err(not_found("no such file or directory")),
            Err(e) => Err(storage_error(e)),
        }
    }

    async fn list<P>(
        &self,
        user: &SessionUser,
        path: P,
    ) -> StorageResult<Vec<Fileinfo<PathBuf, ObjectMetadata>>>
    where
        P: AsRef<Path> + Send + Debug,
    {
        self.listing(user, path.as_ref(), self.settings.listing_mtime_limit)
            .await
    }

    /// `NLST` shows names only: the same listing without reading stored
    /// times (no HEAD per file). Errors become a generic I/O error, as in
    /// libunftp's default.
    async fn nlst<P>(
        &self,
        user: &SessionUser,
        path: P,
    ) -> std::result::Result<std::io::Cursor<Vec<u8>>, std::io::Error>
    where
        P: AsRef<Path> + Send + Debug,
    {
        let entries = self
            .listing(user, path.as_ref(), 0)
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::Other))?;
        let mut names = String::new();
        for entry in &entries {
            // As libunftp's default: the base name of each entry.
            if let Some(name) = entry.path.file_name() {
                names.push_str(&name.to_string_lossy());
            }
            names.push_str("\r\n");
        }
        Ok(std::io::Cursor::new(names.into_bytes()))
    }

    /// libunftp's default copies through an 8 KiB buffer; the object's
    /// chunks are up to 1 MiB, so copy them whole.
    async fn get_into<'a, P, W: ?Sized>(
        &self,
        user: &SessionUser,
        path: P,
        start_pos: u64,
        output: &'a mut W,
    ) -> StorageResult<u64>
    where
        W: tokio::io::AsyncWrite + Unpin + Sync + Send,
        P: AsRef<Path> + Send + Debug,
    {
        let reader = self.get(user, path, start_pos).await?;
        let mut reader = tokio::io::BufReader::with_capacity(COPY_BUFFER, reader);
        tokio::io::copy_buf(&mut reader, output)
            .await
            .map_err(StorageError::from)
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &SessionUser,
        path: P,
        start_pos: u64,
    ) -> StorageResult<download::DownloadReader> {
        let path = path.as_ref().to_path_buf();
        let started = Instant::now();
        let result = async {
            self.allow(user, Permission::Read)?;
            if let Some(gcs) = &user.account.gcs_engine {
                let reader = sbe_gcs::ops::get(gcs, user, path.as_ref(), start_pos).await?;
                let guard = self.begin(Direction::Download)?;
                let stream = tokio_util::io::ReaderStream::new(reader)
                    .map_err(|e| object_store::Error::Generic {
                        store: "unftp-sbe-gcs",
                        source: Box::new(e),
                    })
                    .boxed();
                return Ok(download::reader(
                    stream,
                    guard,
                    self.finish_download(user, &path, started),
                ));
            }
            let key = self.key(user, path.as_ref()).await?;
            let store = &user.account.store.store;
            if start_pos > 0 {
                let meta = store.head(&key).await.map_err(storage_error)?;
                if start_pos > meta.size {
                    return Err(StorageError::new(
                        StorageErrorKind::PermanentFileNotAvailable,
                        format!(
                            "restart offset {start_pos} is beyond the end of the file ({} bytes)",
                            meta.size
                        ),
                    ));
                }
                if start_pos == meta.size {
                    let guard = self.begin(Direction::Download)?;
                    let done = self.finish_download(user, &path, started);
                    return Ok(download::reader(
                        Box::pin(futures::stream::empty()),
                        guard,
                        done,
                    ));
                }
            }
            let guard = self.begin(Direction::Download)?;
            let ranged = matches!(user.account.store.kind, StoreKind::Cloud { .. })
                && self.settings.download_concurrency > 1;
            let stream = if ranged {
                let part_size = self.settings.upload.part_size;
                let memory = self
                    .reserve(memory_budget::part_reservation(part_size), &guard)
                    .await?;
                let read_ahead = download::ReadAhead {
                    chunk: part_size as u64,
                    max_ranges: self.settings.download_concurrency,
                    budget: self.settings.upload.budget.clone(),
                };
                download::open_parallel(store, &key, start_pos, read_ahead, memory).await
            } else {
                let memory = self
                    .reserve(memory_budget::STREAM_RESERVATION, &guard)
                    .await?;
                download::open_range(store, &key, start_pos, None)
                    .await
                    .map(|stream| download::hold(stream, memory))
            }
            .map_err(storage_error)?;
            Ok(download::reader(
                stream,
                guard,
                self.finish_download(user, &path, started),
            ))
        }
        .await;
        if let Err(e) = &result {
            self.audit(user, "RETR", &path, 0, started, &Err(e));
        }
        result
    }

    async fn put<
        P: AsRef<Path> + Send + Debug,
        R: tokio::io::AsyncRead + Send + Sync + Unpin + 'static,
    >(
        &self,
        user: &SessionUser,
        input: R,
        path: P,
        start_pos: u64,
    ) -> StorageResult<u64> {
        let path = path.as_ref().to_path_buf();
        let started = Instant::now();
        let input = close_notify::UploadEnd::new(input, self.settings.require_close_notify);
        let result = async {
            self.allow(user, Permission::Write)?;
            if !user.account.permissions.allows(Permission::Overwrite) {
                self.refuse_existing(user, path.as_ref(), start_pos).await?;
            }
            if let Some(gcs) = &user.account.gcs_engine {
                let guard = self.begin(Direction::Upload)?;
                let input = sbe_gcs::GuardedInput::new(
                    input,
                    self.session.clone(),
                    guard,
                    self.settings.upload.idle_timeout,
                );
                let received = sbe_gcs::ops::put(gcs, user, input, path.as_ref(), start_pos).await;
                crate::metrics::upload_finished(
                    received.is_ok(),
                    started.elapsed(),
                    *received.as_ref().unwrap_or(&0),
                );
                return received;
            }
            let key = self.key(user, path.as_ref()).await?;
            if &key == user.account.jail.root() {
                return Err(StorageError::new(
                    StorageErrorKind::FileNameNotAllowedError,
                    "cannot store a file as the home directory",
                ));
            }
            let store = user.account.store.store.clone();
            let existing = if start_pos > 0 {
                let meta = store.head(&key).await.map_err(storage_error)?;
                if start_pos > meta.size {
                    return Err(StorageError::new(
                        StorageErrorKind::PermanentFileNotAvailable,
                        format!(
                            "restart offset {start_pos} is beyond the end of the file ({} bytes)",
                            meta.size
                        ),
                    ));
                }
                Some(
                    download::open_range(&store, &key, 0, Some(start_pos))
                        .await
                        .map_err(storage_error)?,
                )
            } else {
                None
            };
            let guard = self.begin(Direction::Upload)?;
            let memory = self
                .reserve(
                    memory_budget::part_reservation(self.settings.upload.part_size),
                    &guard,
                )
                .await?;
            let target = upload::UploadTarget {
                store,
                key,
                store_url: user.account.store.display_url.clone(),
                user: user.account.name.clone(),
            };
            let received = upload::upload(
                target,
                existing,
                input,
                self.settings.upload.clone(),
                memory,
                &self.session,
                &guard,
            )
            .await
            .map(|committed| committed.received);
            crate::metrics::upload_finished(
                received.is_ok(),
                started.elapsed(),
                *received.as_ref().unwrap_or(&0),
            );
            Ok(received?)
        }
        .await;
        // The Telnet Synch of an ABOR that stopped this upload (or came after
        // it) must not abort the next one.
        let _ = self.session.take_urgent();
        let command = if start_pos > 0 { "APPE" } else { "STOR" };
        match &result {
            Ok(bytes) => self.audit(user, command, path.as_ref(), *bytes, started, &Ok(())),
            Err(e) => self.audit(user, command, path.as_ref(), 0, started, &Err(e)),
        }
        result
    }

    async fn del<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &SessionUser,
        path: P,
    ) -> StorageResult<()> {
        let path = path.as_ref().to_path_buf();
        self.audited(user, "DELE", &path, async {
            self.allow(user, Permission::Delete)?;
            if let Some(gcs) = &user.account.gcs_engine {
                return sbe_gcs::ops::del(gcs, user, path.as_ref()).await;
            }
            let key = self.key(user, path.as_ref()).await?;
            if &key == user.account.jail.root() {
                return Err(StorageError::new(
                    StorageErrorKind::PermanentFileNotAvailable,
                    "the home directory is not a file",
                ));
            }
            let store = &user.account.store.store;
            // S3 answers a delete of a missing key with success; DELE of a
            // missing file must be 550, so look first.
            store.head(&key).await.map_err(storage_error)?;
            store.delete(&key).await.map_err(storage_error)
        })
        .await
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &SessionUser,
        path: P,
    ) -> StorageResult<()> {
        let path = path.as_ref().to_path_buf();
        self.audited(user, "MKD", &path, async {
            self.allow(user, Permission::Mkdir)?;
            if let Some(gcs) = &user.account.gcs_engine {
                return sbe_gcs::ops::mkd(gcs, user, path.as_ref(), self.settings.mkd_existing_ok)
                    .await;
            }
            let key = self.key(user, path.as_ref()).await?;
            let account = &user.account;
            match directories::stat(&account.store, account.jail.root(), &key)
                .await
                .map_err(storage_error)?
            {
                Some(entry)
                    if entry.kind == EntryKind::Directory && self.settings.mkd_existing_ok =>
                {
                    return Ok(())
                }
                Some(_) => {
                    return Err(StorageError::new(
                        StorageErrorKind::PermanentFileNotAvailable,
                        "a file or directory with that name exists",
                    ))
                }
                None => {}
            }
            directories::make(&account.store, &key)
                .await
                .map_err(storage_error)
        })
        .await
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &SessionUser,
        from: P,
        to: P,
    ) -> StorageResult<()> {
        let (from, to) = (from.as_ref().to_path_buf(), to.as_ref().to_path_buf());
        self.audited(user, "RNTO", &to, async {
            self.allow(user, Permission::Rename)?;
            if user.account.gcs_engine.is_some() {
                return Err(sbe_gcs::unsupported("rename"));
            }
            let from_key = self.key(user, from.as_ref()).await?;
            let to_key = self.key(user, to.as_ref()).await?;
            let account = &user.account;
            let root = account.jail.root();
            if &from_key == root || &to_key == root {
                return Err(StorageError::new(
                    StorageErrorKind::PermissionDenied,
                    "cannot rename the home directory",
                ));
            }
            if from_key == to_key {
                return Ok(());
            }
            let entry = directories::stat(&account.store, root, &from_key)
                .await
                .map_err(storage_error)?
                .ok_or_else(|| not_found("no such file or directory"))?;
            match entry.kind {
                EntryKind::File => account
                    .store
                    .store
                    .rename(&from_key, &to_key)
                    .await
                    .map_err(storage_error),
                EntryKind::Directory => {
                    if to_key.prefix_matches(&from_key) {
                        return Err(StorageError::new(
                            StorageErrorKind::PermanentDirectoryNotAvailable,
                            "cannot move a directory into itself",
                        ));
                    }
                    directories::rename_dir(
                        &account.store,
                        &from_key,
                        &to_key,
                        self.settings.rename_limit,
                    )
                    .await
                }
            }
        })
        .await
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &SessionUser,
        path: P,
    ) -> StorageResult<()> {
        let path = path.as_ref().to_path_buf();
        self.audited(user, "RMD", &path, async {
            self.allow(user, Permission::Delete)?;
            if let Some(gcs) = &user.account.gcs_engine {
                return sbe_gcs::ops::rmd(gcs, user, path.as_ref()).await;
            }
            let key = self.key(user, path.as_ref()).await?;
            let account = &user.account;
            if &key == account.jail.root() {
                return Err(StorageError::new(
                    StorageErrorKind::PermissionDenied,
                    "cannot remove the home directory",
                ));
            }
            directories::remove(&account.store, account.jail.root(), &key).await
        })
        .await
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &SessionUser,
        path: P,
    ) -> StorageResult<()> {
        if !user.account.permissions.allows(Permission::List) {
            // A user who may not list learns nothing from CWD: every
            // directory inside the home "exists" (uploads create what they
            // need), so a drop box can still CWD to where it uploads.
            return match user.account.jail.key(path.as_ref()) {
                Ok(_) => Ok(()),
                Err(e) => Err(path_error(e)),
            };
        }
        if let Some(gcs) = &user.account.gcs_engine {
            return sbe_gcs::ops::cwd(gcs, user, path.as_ref()).await;
        }
        if path
            .as_ref()
            .to_str()
            .is_some_and(crate::paths::climbs_above_root)
        {
            return Err(StorageError::new(
                StorageErrorKind::PermanentDirectoryNotAvailable,
                "cannot change above the home directory",
            ));
        }
        let key = self.key(user, path.as_ref()).await?;
        let account = &user.account;
        let found = directories::stat(&account.store, account.jail.root(), &key)
            .await
            .map_err(|e| {
                tracing::warn!(session = self.session.id, path = %path.as_ref().display(), cause = %e, "CWD: storage error");
                storage_error(e)
            })?;
        let refusal = match found {
            Some(entry) if entry.kind == EntryKind::Directory => return Ok(()),
            Some(_) => "not a directory",
            None => "no such directory",
        };
        // Routine: clients probe with CWD before MKD (curl --ftp-create-dirs).
        tracing::debug!(session = self.session.id, path = %path.as_ref().display(), refusal, "CWD refused");
        Err(StorageError::new(
            StorageErrorKind::PermanentDirectoryNotAvailable,
            refusal,
        ))
    }
}
