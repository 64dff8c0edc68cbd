//! The alternative GCS engine: libunftp's own `unftp-sbe-gcs` crate (GCS
//! JSON API), chosen with `storage.engine = "unftp-sbe-gcs"`.
//!
//! Operators migrating from unFTP keep their bucket layout, and the two
//! engines can be compared on the same gateway. Users, homes, permissions,
//! path jailing, transfer tracking and audit records are ours, exactly as
//! with the object_store engine; only the storage calls go to the crate.
//!
//! What the crate cannot do is refused rather than faked: it has no rename
//! (502), and it always writes whole objects, so `REST`+`STOR` and `APPE`
//! (which would silently overwrite) are refused with 502 too.

use crate::paths::{climbs_above_root, normalize, PathError};
use crate::transfers::{SessionContext, TransferGuard};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use unftp_core::storage::{Error as StorageError, ErrorKind as StorageErrorKind};
use unftp_sbe_gcs::options::AuthMethod;
use unftp_sbe_gcs::CloudStorage;

/// How to reach a bucket with the crate.
#[derive(Clone)]
pub struct SbeGcsConfig {
    /// The bucket.
    pub bucket: String,
    /// The JSON API base URL (`https://www.googleapis.com`, or an emulator).
    pub api_base: String,
    /// Service-account key, workload identity, or none (emulators).
    pub auth: AuthMethod,
}

impl std::fmt::Debug for SbeGcsConfig {
    // Hand-written: the auth method may hold a private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SbeGcsConfig")
            .field("bucket", &self.bucket)
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

/// Why the engine could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum SbeGcsError {
    /// The service-account key file could not be read.
    #[error("cannot read google_service_account file {path}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file is not JSON.
    #[error("google_service_account file {path} is not valid JSON")]
    KeyJson {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl SbeGcsConfig {
    /// Builds the configuration from the same options the object_store
    /// engine takes: `google_service_account` names a key file (or the
    /// `GOOGLE_APPLICATION_CREDENTIALS` / `GOOGLE_SERVICE_ACCOUNT`
    /// environment variables do); a key file with `"gcs_base_url"` points
    /// both engines at an emulator, and `"disable_oauth": true` turns
    /// authentication off for it. Without a key: workload identity.
    pub fn from_options(
        bucket: &str,
        options: &std::collections::BTreeMap<String, String>,
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<Self, SbeGcsError> {
        let key_file = options
            .get("google_service_account")
            .or_else(|| options.get("service_account"))
            .or_else(|| env.get("GOOGLE_SERVICE_ACCOUNT"))
            .or_else(|| env.get("GOOGLE_APPLICATION_CREDENTIALS"));
        let mut api_base = DEFAULT_API_BASE.to_string();
        let auth = match key_file {
            None => AuthMethod::WorkloadIdentity(None),
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|source| SbeGcsError::KeyFile {
                    path: path.clone(),
                    source,
                })?;
                let json: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|source| SbeGcsError::KeyJson {
                        path: path.clone(),
                        source,
                    })?;
                if let Some(base) = json.get("gcs_base_url").and_then(|v| v.as_str()) {
                    api_base = base.trim_end_matches('/').to_string();
                }
                if json.get("disable_oauth").and_then(|v| v.as_bool()) == Some(true) {
                    AuthMethod::None
                } else {
                    AuthMethod::ServiceAccountKey(bytes)
                }
            }
        };
        Ok(Self {
            bucket: bucket.to_string(),
            api_base,
            auth,
        })
    }

    /// The crate's client for one account, rooted at its home prefix.
    pub fn storage_for(&self, root: &str) -> Arc<CloudStorage> {
        Arc::new(CloudStorage::with_api_base(
            self.api_base.clone(),
            self.bucket.clone(),
            PathBuf::from(root),
            self.auth.clone(),
        ))
    }
}

/// The public JSON API.
const DEFAULT_API_BASE: &str = "https://www.googleapis.com";

/// The FTP path as the crate should see it: normalised, relative to the
/// account's root (which the crate prepends), never above it.
pub fn crate_path(ftp_path: &Path) -> Result<PathBuf, PathError> {
    let text = ftp_path.to_str().ok_or(PathError::NotUtf8)?;
    let segments = normalize(text)?;
    Ok(PathBuf::from(format!("/{}", segments.join("/"))))
}

/// Whether a CWD target climbs above the home (refused, as with the other
/// engine).
pub fn cwd_escapes(ftp_path: &Path) -> bool {
    ftp_path.to_str().is_some_and(climbs_above_root)
}

/// A refusal for what the crate cannot do.
pub fn unsupported(what: &str) -> StorageError {
    StorageError::new(
        StorageErrorKind::CommandNotImplemented,
        format!("{what} is not supported by the unftp-sbe-gcs engine"),
    )
}

/// The client's upload as the crate reads it, ending in an error instead of
/// end-of-file when the upload must not be committed: the client vanished
/// (control connection gone when the data ended), shutdown cut it, or the
/// data connection went silent. The crate streams the body of one HTTP
/// request; an error aborts that request, and GCS creates no object from a
/// request whose body never finished.
pub struct GuardedInput<R> {
    inner: R,
    session: Arc<SessionContext>,
    guard: TransferGuard,
    idle: Duration,
    idle_timer: Pin<Box<tokio::time::Sleep>>,
    /// Bytes received from the client.
    pub received: Arc<std::sync::atomic::AtomicU64>,
}

impl<R> GuardedInput<R> {
    /// Wraps the client's data connection.
    pub fn new(
        inner: R,
        session: Arc<SessionContext>,
        guard: TransferGuard,
        idle: Duration,
    ) -> Self {
        Self {
            inner,
            session,
            guard,
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            received: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for GuardedInput<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.guard.is_cancelled() {
            return Poll::Ready(Err(std::io::Error::other("upload cut by server shutdown")));
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n == 0 {
                    if self.session.abort_pending() {
                        return Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "upload aborted by the client",
                        )));
                    }
                    if !self.session.control_alive() {
                        return Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "control connection closed before the upload completed",
                        )));
                    }
                } else {
                    self.received
                        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    crate::metrics::bytes_received(n);
                    let deadline = tokio::time::Instant::now() + self.idle;
                    self.idle_timer.as_mut().reset(deadline);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.idle_timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "data connection idle",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

use std::future::Future;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_paths_stay_inside_the_root() {
        assert_eq!(
            crate_path(Path::new("/a/../../b")).unwrap(),
            PathBuf::from("/b")
        );
        assert_eq!(
            crate_path(Path::new("x/./y/")).unwrap(),
            PathBuf::from("/x/y")
        );
        assert_eq!(crate_path(Path::new("/")).unwrap(), PathBuf::from("/"));
        assert!(crate_path(Path::new("a\\b")).is_err());
        assert!(cwd_escapes(Path::new("/..")));
    }

    #[test]
    fn key_file_selects_emulator_and_auth() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.json");
        std::fs::write(
            &key,
            r#"{"gcs_base_url": "http://127.0.0.1:4443/", "disable_oauth": true}"#,
        )
        .unwrap();
        let mut options = std::collections::BTreeMap::new();
        options.insert(
            "google_service_account".to_string(),
            key.display().to_string(),
        );
        let c = SbeGcsConfig::from_options("b", &options, &Default::default()).unwrap();
        assert_eq!(c.api_base, "http://127.0.0.1:4443");
        assert!(c.auth == AuthMethod::None);
        let c = SbeGcsConfig::from_options("b", &Default::default(), &Default::default()).unwrap();
        assert_eq!(c.api_base, DEFAULT_API_BASE);
        assert!(c.auth == AuthMethod::WorkloadIdentity(None));
    }
}

/// The storage calls, as the gateway's back-end makes them when an account
/// uses this engine. Permissions, auditing and transfer tracking stay in
/// the caller.
pub mod ops {
    use super::{crate_path, cwd_escapes, unsupported, GuardedInput};
    use crate::auth::SessionUser;
    use crate::backend::reply_codes::path_error;
    use crate::backend::ObjectMetadata;
    use std::path::{Path, PathBuf};
    use std::time::SystemTime;
    use unftp_core::storage::{
        Error as StorageError, ErrorKind as StorageErrorKind, Fileinfo, Metadata,
        Result as StorageResult, StorageBackend,
    };
    use unftp_sbe_gcs::CloudStorage;

    fn path(ftp_path: &Path) -> StorageResult<PathBuf> {
        crate_path(ftp_path).map_err(path_error)
    }

    fn convert(m: &impl Metadata) -> ObjectMetadata {
        ObjectMetadata {
            len: m.len(),
            modified: m.modified().ok().filter(|t| *t > SystemTime::UNIX_EPOCH),
            dir: m.is_dir(),
        }
    }

    /// `metadata`.
    pub async fn metadata(
        gcs: &CloudStorage,
        user: &SessionUser,
        ftp_path: &Path,
    ) -> StorageResult<ObjectMetadata> {
        let p = path(ftp_path)?;
        if p == Path::new("/") {
            return Ok(ObjectMetadata {
                len: 0,
                modified: None,
                dir: true,
            });
        }
        gcs.metadata(user, p).await.map(|m| convert(&m))
    }

    /// `list`.
    pub async fn list(
        gcs: &CloudStorage,
        user: &SessionUser,
        ftp_path: &Path,
    ) -> StorageResult<Vec<Fileinfo<PathBuf, ObjectMetadata>>> {
        let entries = gcs.list(user, path(ftp_path)?).await?;
        Ok(entries
            .into_iter()
            .map(|f| Fileinfo {
                path: f
                    .path
                    .file_name()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| f.path.clone()),
                metadata: convert(&f.metadata),
            })
            .collect())
    }

    /// `get`: the object from `start_pos` (the crate sends a ranged read).
    pub async fn get(
        gcs: &CloudStorage,
        user: &SessionUser,
        ftp_path: &Path,
        start_pos: u64,
    ) -> StorageResult<Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>> {
        let p = path(ftp_path)?;
        // The crate always sends a Range header, which GCS answers with 416
        // for an empty object: look first, and serve those as empty.
        let meta = gcs.metadata(user, p.clone()).await?;
        if meta.is_file() && meta.len() == 0 && start_pos == 0 {
            return Ok(Box::new(tokio::io::empty()));
        }
        gcs.get(user, p, start_pos).await
    }

    /// `put`: whole objects only; the upload is aborted (no object) unless
    /// the data connection ended cleanly with the client still there.
    pub async fn put<R>(
        gcs: &CloudStorage,
        user: &SessionUser,
        input: GuardedInput<R>,
        ftp_path: &Path,
        start_pos: u64,
    ) -> StorageResult<u64>
    where
        R: tokio::io::AsyncRead + Send + Sync + Unpin + 'static,
    {
        if start_pos > 0 {
            // The crate would overwrite the object from byte 0.
            return Err(unsupported("resuming or appending (REST+STOR, APPE)"));
        }
        let p = path(ftp_path)?;
        if p == Path::new("/") {
            return Err(StorageError::new(
                StorageErrorKind::FileNameNotAllowedError,
                "cannot store a file as the home directory",
            ));
        }
        let received = input.received.clone();
        gcs.put(user, input, p, 0).await.map_err(|e| {
            StorageError::new(
                StorageErrorKind::ConnectionClosed,
                format!("upload not stored: {e}"),
            )
        })?;
        Ok(received.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// `del`.
    pub async fn del(gcs: &CloudStorage, user: &SessionUser, ftp_path: &Path) -> StorageResult<()> {
        gcs.del(user, path(ftp_path)?).await
    }

    /// `mkd`: the crate writes a `dir/` marker through the JSON API; an
    /// existing name is refused (or accepted, for devices that need it).
    pub async fn mkd(
        gcs: &CloudStorage,
        user: &SessionUser,
        ftp_path: &Path,
        existing_ok: bool,
    ) -> StorageResult<()> {
        let p = path(ftp_path)?;
        let is_dir = gcs.cwd(user, p.clone()).await.is_ok();
        if is_dir && existing_ok {
            return Ok(());
        }
        if is_dir || gcs.metadata(user, p.clone()).await.is_ok() {
            return Err(StorageError::new(
                StorageErrorKind::PermanentFileNotAvailable,
                "a file or directory with that name exists",
            ));
        }
        gcs.mkd(user, p).await
    }

    /// `rmd`.
    pub async fn rmd(gcs: &CloudStorage, user: &SessionUser, ftp_path: &Path) -> StorageResult<()> {
        let p = path(ftp_path)?;
        if p == Path::new("/") {
            return Err(StorageError::new(
                StorageErrorKind::PermissionDenied,
                "cannot remove the home directory",
            ));
        }
        gcs.rmd(user, p).await
    }

    /// `cwd`.
    pub async fn cwd(gcs: &CloudStorage, user: &SessionUser, ftp_path: &Path) -> StorageResult<()> {
        if cwd_escapes(ftp_path) {
            return Err(StorageError::new(
                StorageErrorKind::PermanentDirectoryNotAvailable,
                "cannot change above the home directory",
            ));
        }
        let p = path(ftp_path)?;
        if p == Path::new("/") {
            return Ok(());
        }
        gcs.cwd(user, p).await
    }
}
