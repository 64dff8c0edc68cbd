//! The libunftp storage back-end: one wrapper around the storage engines.
//!
//! One [`ObjectBackend`] exists per control connection (libunftp calls the
//! factory once per session). Whichever engine stores the account's files
//! ([`engine`]: object_store, or unftp-sbe-gcs), this wrapper is the one
//! place that
//! - checks the user's permissions;
//! - resolves every FTP path through the user's
//!   [`Jail`](crate::paths::Jail), and refuses what no engine may do to the
//!   home directory;
//! - checks REST offsets against the file's size;
//! - registers transfers (shutdown, `server.max_uploads`, metrics);
//! - reads uploads through the commit rule ([`commit_rule`]): an upload
//!   becomes visible only when complete, and ABOR, a vanished client,
//!   shutdown or a failure leave nothing and are never answered 226;
//! - writes one audit record per operation.
//!
//! The object_store engine ([`object_engine`]) maps FTP onto object-store
//! calls:
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

mod account;
mod audit;
mod checksums;
pub(crate) mod close_notify;
mod commit_rule;
mod directories;
pub(crate) mod download;
mod engine;
mod guards;
pub(crate) mod local_paths;
pub(crate) mod modified_time;
mod name_pattern;
mod object_engine;
pub(crate) mod reply_codes;
pub(crate) mod sbe_gcs;
mod settings;
mod spliced;
pub(crate) mod upload;

pub(crate) use account::{Account, SessionUser};
pub(crate) use engine::Engine;
pub(crate) use engine::ObjectMetadata;
pub(crate) use object_engine::ObjectEngine;
pub(crate) use settings::BackendSettings;

use crate::integrity::Algorithm;
use crate::metrics::Direction;
use crate::permissions::Permission;
use crate::transfers::{SessionContext, TransferGuard, TransferRefused, Transfers};
use async_trait::async_trait;
use commit_rule::UploadInput;
use engine::{unsupported, BeginDownload, Listing, Transfer};
use futures::StreamExt;
use guards::HomeUse;
use reply_codes::path_error;
use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use unftp_core::storage::{
    Error as StorageError, ErrorKind as StorageErrorKind, Metadata, Result as StorageResult,
    StorageBackend, FEATURE_RESTART, FEATURE_SITEMD5,
};

/// Buffer between a download's chunks and the data connection.
const COPY_BUFFER: usize = 1 << 20;

/// The per-session storage back-end handed to libunftp.
#[derive(Debug, Clone)]
pub(crate) struct ObjectBackend {
    session: Arc<SessionContext>,
    settings: Arc<BackendSettings>,
    transfers: Arc<Transfers>,
}

impl ObjectBackend {
    /// A back-end for one control connection.
    pub(crate) fn new(
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

    /// Registers a transfer. Refusals (shutdown begun, `server.max_uploads`
    /// reached) pass, so they are 450: try again later.
    fn begin(&self, direction: Direction) -> StorageResult<TransferGuard> {
        self.transfers.begin(direction).map_err(|e| {
            let kind = match e {
                TransferRefused::ShuttingDown | TransferRefused::TooManyUploads => {
                    StorageErrorKind::TransientFileNotAvailable
                }
            };
            StorageError::new(kind, e)
        })
    }

    /// What an engine is lent of this session for one transfer.
    fn transfer<'a>(&'a self, user: &'a SessionUser, guard: &'a TransferGuard) -> Transfer<'a> {
        Transfer {
            user,
            session: &self.session,
            settings: &self.settings,
            guard,
        }
    }

    /// LIST/MLSD/NLST: the entries of a directory (or of its files matching
    /// a `*`/`?` pattern), with stored `mtime`s read for up to
    /// `mtime_limit` files.
    async fn listing(
        &self,
        user: &SessionUser,
        path: &Path,
        mtime_limit: usize,
    ) -> StorageResult<Listing> {
        let started = Instant::now();
        let result = async {
            self.allow(user, Permission::List)?;
            // `LIST *.txt`, `NLST m?.jpg`: the parent's listing, filtered.
            let pattern = name_pattern::split(path);
            let dir = pattern.as_ref().map_or(path, |(dir, _)| dir);
            let key = self.resolve(user, dir).await?;
            let pattern = pattern.as_ref().map(|(_, pattern)| pattern.as_str());
            user.account.engine.list(&key, pattern, mtime_limit).await
        }
        .await;
        if let Err(e) = &result {
            self.audit(user, "LIST", path, 0, started, &Err(e));
        }
        result
    }

    /// The `algorithm` digest (lowercase hex) of the file at `path`, and
    /// its size: `SITE MD5`, `HASH` and the `X*` digest commands.
    pub(crate) async fn checksum(
        &self,
        user: &SessionUser,
        path: &Path,
        algorithm: Algorithm,
    ) -> StorageResult<(String, u64)> {
        self.allow(user, Permission::Read)?;
        let key = self.resolve(user, path).await?;
        let begin: &BeginDownload<'_> = &|| self.begin(Direction::Download);
        user.account.engine.checksum(&key, algorithm, begin).await
    }

    /// Sets the modification time of the file at `path` (MFMT; one audit
    /// record).
    pub(crate) async fn set_modified(
        &self,
        user: &SessionUser,
        path: &Path,
        when: SystemTime,
    ) -> StorageResult<()> {
        self.audited(user, "MFMT", path, async {
            self.allow(user, Permission::Write)?;
            let key = self.resolve(user, path).await?;
            Self::not_home(user, &key, HomeUse::SetTime)?;
            user.account.engine.set_modified(&key, when).await
        })
        .await
    }
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
        self.checksum(user, path.as_ref(), Algorithm::Md5)
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
        let key = self.resolve(user, path.as_ref()).await?;
        user.account.engine.metadata(&key).await
    }

    async fn list<P>(&self, user: &SessionUser, path: P) -> StorageResult<Listing>
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
            let key = self.resolve(user, &path).await?;
            let at_end =
                start_pos > 0 && self.restart_within(user, &key, start_pos).await? == start_pos;
            let guard = self.begin(Direction::Download)?;
            let stream = if at_end {
                futures::stream::empty().boxed()
            } else {
                let transfer = self.transfer(user, &guard);
                user.account.engine.open(&key, start_pos, &transfer).await?
            };
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
        let input = close_notify::UploadEnd::new(
            commit_rule::data_source(input),
            self.settings.require_close_notify,
        );
        let result = async {
            self.allow(user, Permission::Write)?;
            let key = self.resolve(user, &path).await?;
            if !user.account.permissions.allows(Permission::Overwrite) {
                self.refuse_existing(user, &key, start_pos).await?;
            }
            Self::not_home(user, &key, HomeUse::Store)?;
            let engine = &user.account.engine;
            if start_pos > 0 {
                if !engine.resumes_uploads() {
                    return Err(unsupported(
                        engine.name(),
                        "resuming or appending (REST+STOR, APPE)",
                    ));
                }
                self.restart_within(user, &key, start_pos).await?;
            }
            let guard = self.begin(Direction::Upload)?;
            let idle = self.settings.upload.idle_timeout;
            let (input, report) =
                UploadInput::new(Box::new(input), self.session.clone(), &guard, idle);
            let transfer = self.transfer(user, &guard);
            let stored = engine.write(&key, input, start_pos, &transfer).await;
            // A cut upload is answered for its cut, whatever the engine made
            // of the error it read.
            let received = match report.cut() {
                Some(cut) => Err(StorageError::from(cut)),
                None => stored.map(|()| report.received()),
            };
            crate::metrics::upload_finished(
                received.is_ok(),
                started.elapsed(),
                *received.as_ref().unwrap_or(&0),
            );
            received
        }
        .await;
        // The Telnet Synch of an ABOR that stopped this upload (or came after
        // it) must not abort the next one.
        let _ = self.session.take_urgent();
        let command = if start_pos > 0 { "APPE" } else { "STOR" };
        match &result {
            Ok(bytes) => self.audit(user, command, &path, *bytes, started, &Ok(())),
            Err(e) => self.audit(user, command, &path, 0, started, &Err(e)),
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
            let key = self.resolve(user, &path).await?;
            Self::not_home(user, &key, HomeUse::Delete)?;
            user.account.engine.delete(&key).await
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
            let key = self.resolve(user, &path).await?;
            let engine = &user.account.engine;
            match engine.stat(&key).await? {
                Some(found) if found.is_dir() && self.settings.mkd_existing_ok => Ok(()),
                Some(_) => Err(StorageError::new(
                    StorageErrorKind::PermanentFileNotAvailable,
                    "a file or directory with that name exists",
                )),
                None => engine.make_dir(&key).await,
            }
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
            let from_key = self.resolve(user, &from).await?;
            let to_key = self.resolve(user, &to).await?;
            Self::not_home(user, &from_key, HomeUse::Rename)?;
            Self::not_home(user, &to_key, HomeUse::Rename)?;
            let limit = self.settings.rename_limit;
            user.account.engine.rename(&from_key, &to_key, limit).await
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
            let key = self.resolve(user, &path).await?;
            Self::not_home(user, &key, HomeUse::Remove)?;
            user.account.engine.remove_dir(&key).await
        })
        .await
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &SessionUser,
        path: P,
    ) -> StorageResult<()> {
        let path = path.as_ref();
        if !user.account.permissions.allows(Permission::List) {
            // A user who may not list learns nothing from CWD: every
            // directory inside the home "exists" (uploads create what they
            // need), so a drop box can still CWD to where it uploads.
            return user.account.jail.key(path).map(|_| ()).map_err(path_error);
        }
        if path.to_str().is_some_and(crate::paths::climbs_above_root) {
            return Err(StorageError::new(
                StorageErrorKind::PermanentDirectoryNotAvailable,
                "cannot change above the home directory",
            ));
        }
        let key = self.resolve(user, path).await?;
        let found = user.account.engine.stat(&key).await.map_err(|e| {
            tracing::warn!(session = self.session.id, path = %path.display(), cause = %e, "CWD: storage error");
            e
        })?;
        let refusal = match found {
            Some(found) if found.is_dir() => return Ok(()),
            Some(_) => "not a directory",
            None => "no such directory",
        };
        // Routine: clients probe with CWD before MKD (curl --ftp-create-dirs).
        tracing::debug!(session = self.session.id, path = %path.display(), refusal, "CWD refused");
        Err(StorageError::new(
            StorageErrorKind::PermanentDirectoryNotAvailable,
            refusal,
        ))
    }
}
