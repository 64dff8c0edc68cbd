//! The alternative GCS engine: libunftp's own `unftp-sbe-gcs` crate (GCS
//! JSON API), chosen with `storage.engine = "unftp-sbe-gcs"`.
//!
//! Operators migrating from unFTP keep their bucket layout, and the two
//! engines can be compared on the same gateway. Users, homes, permissions,
//! path jailing, transfer tracking, the commit rule and audit records are
//! the wrapper's ([`super::ObjectBackend`]), exactly as with the
//! object_store engine; only the storage calls go to the crate.
//!
//! What the crate cannot do is refused rather than faked: it has no rename
//! (502), and it always writes whole objects, so `REST`+`STOR` and `APPE`
//! (which would silently overwrite) are refused with 502 too; checksums and
//! MFMT are refused as well.

use super::commit_rule::UploadInput;
use super::engine::{ByteStream, Engine, Listing, ObjectMetadata, Transfer};
use super::name_pattern;
use crate::paths::Jail;
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
use unftp_core::auth::DefaultUser;
use unftp_core::storage::{
    Error as StorageError, ErrorKind as StorageErrorKind, Fileinfo, Metadata,
    Result as StorageResult, StorageBackend,
};
use unftp_sbe_gcs::options::AuthMethod;
use unftp_sbe_gcs::CloudStorage;

/// How to reach a bucket with the crate.
#[derive(Clone)]
pub(crate) struct SbeGcsConfig {
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
pub(crate) enum SbeGcsError {
    /// The service-account key file could not be read.
    #[error("cannot read google_service_account file {path}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The key file is not JSON.
    #[error("google_service_account file {path} is not valid JSON")]
    KeyJson {
        path: String,
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
    pub(crate) fn from_options(
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

    /// The engine for one account: the crate's client rooted at its home.
    pub(crate) fn engine(&self, jail: &Jail) -> Arc<dyn Engine> {
        Arc::new(SbeGcsEngine {
            gcs: CloudStorage::with_api_base(
                self.api_base.clone(),
                self.bucket.clone(),
                PathBuf::from(jail.root().as_ref()),
                self.auth.clone(),
            ),
            jail: jail.clone(),
        })
    }
}

/// The public JSON API.
const DEFAULT_API_BASE: &str = "https://www.googleapis.com";

/// The crate ignores the user it is handed (0.3.1); the engine is already
/// bound to one account's home.
const USER: DefaultUser = DefaultUser;

/// `None` where the crate says "no such object" (it answers a 404, and a
/// path outside its root, with `PermanentFileNotAvailable`). Any other
/// error is the store failing, which must not pass for absence: the
/// overwrite guard of a `create`-only account asks `file_exists`.
fn found<T>(result: StorageResult<T>) -> StorageResult<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == StorageErrorKind::PermanentFileNotAvailable => Ok(None),
        Err(e) => Err(e),
    }
}

/// One account's files through the crate.
struct SbeGcsEngine {
    gcs: CloudStorage,
    jail: Jail,
}

impl SbeGcsEngine {
    fn path(&self, key: &ObjectPath) -> StorageResult<PathBuf> {
        crate_path(&self.jail, key)
    }
}

/// The path the crate is given for `key`: absolute, relative to the
/// account's home (which the crate prepends). Keys come from the jail, so
/// one outside the home is a bug, refused rather than mapped.
fn crate_path(jail: &Jail, key: &ObjectPath) -> StorageResult<PathBuf> {
    jail.ftp_path(key).map(PathBuf::from).ok_or_else(|| {
        StorageError::new(
            StorageErrorKind::PermissionDenied,
            "path outside the home directory",
        )
    })
}

fn convert(m: &impl Metadata) -> ObjectMetadata {
    ObjectMetadata {
        len: m.len(),
        modified: m.modified().ok().filter(|t| *t > SystemTime::UNIX_EPOCH),
        dir: m.is_dir(),
    }
}

#[async_trait]
impl Engine for SbeGcsEngine {
    fn name(&self) -> &'static str {
        "unftp-sbe-gcs"
    }

    /// The crate uploads in one streaming request from byte 0.
    fn resumes_uploads(&self) -> bool {
        false
    }

    /// A directory as the crate's `cwd` sees it (a prefix or a `dir/`
    /// marker), else a file as its `metadata` does.
    async fn stat(&self, key: &ObjectPath) -> StorageResult<Option<ObjectMetadata>> {
        let path = self.path(key)?;
        match self.gcs.cwd(&USER, path.clone()).await {
            Ok(()) => return Ok(Some(ObjectMetadata::undated_directory())),
            Err(e) if e.kind() == StorageErrorKind::PermanentDirectoryNotAvailable => {}
            Err(e) => return Err(e),
        }
        Ok(found(self.gcs.metadata(&USER, path).await)?.map(|m| convert(&m)))
    }

    /// One lookup of the object (the home is always a directory).
    async fn metadata(&self, key: &ObjectPath) -> StorageResult<ObjectMetadata> {
        if key == self.jail.root() {
            return Ok(ObjectMetadata::undated_directory());
        }
        let found = self.gcs.metadata(&USER, self.path(key)?).await?;
        Ok(convert(&found))
    }

    async fn file_exists(&self, key: &ObjectPath) -> StorageResult<bool> {
        Ok(found(self.metadata(key).await)?.is_some())
    }

    async fn list(
        &self,
        dir: &ObjectPath,
        pattern: Option<&str>,
        _mtime_limit: usize,
    ) -> StorageResult<Listing> {
        let entries = self.gcs.list(&USER, self.path(dir)?).await?;
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
            .filter(|f| pattern.is_none_or(|p| name_pattern::matches(p, &f.path.to_string_lossy())))
            .collect())
    }

    async fn open(
        &self,
        key: &ObjectPath,
        start_pos: u64,
        _transfer: &Transfer<'_>,
    ) -> StorageResult<ByteStream> {
        let path = self.path(key)?;
        if start_pos == 0 {
            // The crate always sends a Range header, which GCS answers with
            // 416 for an empty object: look first, and serve those as empty.
            // (From a REST offset the object is known to be longer.)
            let found = self.gcs.metadata(&USER, path.clone()).await?;
            if found.is_file() && found.len() == 0 {
                return Ok(futures::stream::empty().boxed());
            }
        }
        let reader = self.gcs.get(&USER, path, start_pos).await?;
        Ok(tokio_util::io::ReaderStream::new(reader)
            .map_err(|e| object_store::Error::Generic {
                store: "unftp-sbe-gcs",
                source: Box::new(e),
            })
            .boxed())
    }

    /// One streaming POST of the whole object (`start_pos` is 0, see
    /// [`Engine::resumes_uploads`]); an error from `input` aborts
    /// the request and GCS stores nothing.
    async fn write(
        &self,
        key: &ObjectPath,
        input: UploadInput,
        _start_pos: u64,
        _transfer: &Transfer<'_>,
    ) -> StorageResult<()> {
        self.gcs
            .put(&USER, input, self.path(key)?, 0)
            .await
            .map(|_| ())
            .map_err(|e| {
                StorageError::new(
                    StorageErrorKind::ConnectionClosed,
                    format!("upload not stored: {e}"),
                )
            })
    }

    async fn delete(&self, key: &ObjectPath) -> StorageResult<()> {
        self.gcs.del(&USER, self.path(key)?).await
    }

    /// The crate writes a `dir/` marker through the JSON API.
    async fn make_dir(&self, key: &ObjectPath) -> StorageResult<()> {
        self.gcs.mkd(&USER, self.path(key)?).await
    }

    async fn remove_dir(&self, key: &ObjectPath) -> StorageResult<()> {
        self.gcs.rmd(&USER, self.path(key)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn crate_paths_stay_inside_the_root() {
        let jail = Jail::with_home(&ObjectPath::from("base"), "/home/alice").unwrap();
        let path = |ftp: &str| crate_path(&jail, &jail.key(Path::new(ftp)).unwrap()).unwrap();
        assert_eq!(path("/a/../../b"), PathBuf::from("/b"));
        assert_eq!(path("x/./y/"), PathBuf::from("/x/y"));
        assert_eq!(path("/"), PathBuf::from("/"));
        assert!(jail.key(Path::new("a\\b")).is_err());
        assert!(crate_path(&jail, &ObjectPath::from("base/home/bob/x")).is_err());
    }

    /// The configuration a `google_service_account` key file with `json`
    /// gives (the directory holds the file while the test runs).
    fn from_key_file(json: &str) -> (tempfile::TempDir, SbeGcsConfig) {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.json");
        std::fs::write(&key, json).unwrap();
        let mut options = std::collections::BTreeMap::new();
        options.insert(
            "google_service_account".to_string(),
            key.display().to_string(),
        );
        let config = SbeGcsConfig::from_options("b", &options, &Default::default()).unwrap();
        (dir, config)
    }

    #[test]
    fn key_file_selects_emulator_and_auth() {
        let (_dir, c) =
            from_key_file(r#"{"gcs_base_url": "http://127.0.0.1:4443/", "disable_oauth": true}"#);
        assert_eq!(c.api_base, "http://127.0.0.1:4443");
        assert!(c.auth == AuthMethod::None);
        let c = SbeGcsConfig::from_options("b", &Default::default(), &Default::default()).unwrap();
        assert_eq!(c.api_base, DEFAULT_API_BASE);
        assert!(c.auth == AuthMethod::WorkloadIdentity(None));
    }

    #[tokio::test]
    async fn a_store_that_does_not_answer_is_not_an_absent_file() {
        // A port nothing listens on: every request is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (_dir, config) = from_key_file(&format!(
            r#"{{"gcs_base_url": "http://127.0.0.1:{port}", "disable_oauth": true}}"#
        ));
        let jail = Jail::with_home(&ObjectPath::ROOT, "/").unwrap();
        let engine = config.engine(&jail);
        let file = ObjectPath::from("photo.jpg");
        let exists = engine.file_exists(&file).await;
        assert!(exists.is_err(), "file_exists answered {exists:?}");
        let stat = engine.stat(&file).await;
        assert!(stat.is_err(), "stat answered {stat:?}");
    }
}
