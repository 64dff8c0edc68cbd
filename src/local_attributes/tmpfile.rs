//! `file://` uploads made visible with one directory operation.
//!
//! object_store's `LocalFileSystem` writes `name#N` and renames it onto
//! `name`: two directory-modifying operations per file, and with many
//! sessions writing small files into one directory they queue on that
//! directory's lock (docs/benchmarks.md, "Local STOR of small files"). Here
//! an upload is written into an anonymous file (`O_TMPFILE`) in the
//! destination directory, its attributes are set on its descriptor, and one
//! `linkat(2)` gives it its name.
//!
//! What holds, and why:
//! - **Nothing half-written is ever visible.** Until `linkat` the file has
//!   no name at all; it gets one only once its bytes and its attributes
//!   (digests, `Content-Type`) are complete, so both appear together.
//! - **A failed, aborted or dropped upload leaves nothing.** An `O_TMPFILE`
//!   file with no link is freed by the kernel when its last descriptor
//!   closes (after a crash, when the file system replays its orphan list),
//!   so there is no staging file to clean up and none to leak.
//! - **Replacing a file stays atomic.** `linkat` never replaces a name
//!   (`EEXIST`), so the file is linked under a hidden `name#N` — the pattern
//!   `LocalFileSystem` hides from listings and `backend::local_paths`
//!   reserves — and `rename(2)`d over `name`: readers see the old file or
//!   the new one, never neither. Only a crash between the two leaves the
//!   hidden name behind, as `LocalFileSystem`'s staging file would.
//! - **ETags match `LocalFileSystem`'s** (inode, mtime in µs, size): they are
//!   read with `fstat` after the last write, and `linkat`/`rename` change
//!   none of the three (only ctime), so a later `head` reports the same.
//! - **Paths resolve as `LocalFileSystem`'s do**: the directory is opened by
//!   path, symbolic links followed, so `backend::local_paths::check`, run on
//!   every key before it reaches the store, guards the jail as before. The
//!   final name is never followed: a link planted there is replaced, not
//!   written through (as `rename` did).
//!
//! The link goes through `/proc/self/fd/N` with `AT_SYMLINK_FOLLOW`:
//! `AT_EMPTY_PATH` would link the descriptor directly but needs
//! `CAP_DAC_READ_SEARCH`, which the gateway should not hold. Where `/proc`
//! is not mounted or the file system has no `O_TMPFILE`, the caller
//! ([`crate::local_attributes::XattrStore`]) falls back to `LocalFileSystem`.

use super::deferred::Deferral;
use super::xattrs::{
    merged_attributes, put_result, set_xattrs, spawn_blocking, stored_crc32, CompletionAttributes,
};
use async_trait::async_trait;
use futures::FutureExt;
use object_store::{Attributes, MultipartUpload, PutPayload, PutResult, UploadPart};
use std::fs::{File, Metadata};
use std::io::{self, ErrorKind, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// Why an upload into an anonymous file failed. Converted to
/// `object_store::Error` at the store boundary with the I/O error kept as
/// the source, so `backend::reply_codes` still finds `ENOSPC` and friends.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TmpfileError {
    /// The anonymous file could not be created in the directory.
    #[error("cannot create a file in {dir}")]
    Open {
        /// The destination's directory.
        dir: PathBuf,
        /// The file system error.
        #[source]
        source: io::Error,
    },
    /// A missing parent directory could not be created.
    #[error("cannot create directory {dir}")]
    CreateDir {
        dir: PathBuf,
        /// The file system error.
        #[source]
        source: io::Error,
    },
    /// Writing the bytes failed (a full disk, an I/O error).
    #[error("cannot write the file for {path}")]
    Write {
        path: PathBuf,
        /// The file system error.
        #[source]
        source: io::Error,
    },
    /// `fstat` on the written file failed.
    #[error("cannot read the metadata of the file for {path}")]
    Metadata {
        path: PathBuf,
        /// The file system error.
        #[source]
        source: io::Error,
    },
    /// `PutMode::Create` and the name is taken.
    #[error("{path} already exists")]
    AlreadyExists {
        path: PathBuf,
        /// `EEXIST` from `linkat`.
        #[source]
        source: io::Error,
    },
    /// Giving the file its name failed.
    #[error("cannot make the file visible as {path}")]
    Link {
        path: PathBuf,
        /// The file system error.
        #[source]
        source: io::Error,
    },
    /// The upload was completed or aborted already, or a writer panicked.
    #[error("upload already completed or aborted")]
    Aborted,
}

impl TmpfileError {
    /// Whether the failure says "this file system has no `O_TMPFILE`":
    /// `EOPNOTSUPP` from file systems without it, `EISDIR` from kernels that
    /// predate the flag and open the directory itself.
    pub(crate) fn is_unsupported(&self) -> bool {
        match self {
            TmpfileError::Open { source, .. } => matches!(
                source.raw_os_error(),
                Some(code) if code == rustix::io::Errno::OPNOTSUPP.raw_os_error()
                    || code == rustix::io::Errno::ISDIR.raw_os_error()
            ),
            _ => false,
        }
    }
}

impl From<TmpfileError> for object_store::Error {
    fn from(e: TmpfileError) -> Self {
        match e {
            TmpfileError::AlreadyExists { path, source } => object_store::Error::AlreadyExists {
                path: path.to_string_lossy().into_owned(),
                source: Box::new(source),
            },
            other => object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(other),
            },
        }
    }
}

/// An upload's file: written while it has no name, named by [`publish`].
///
/// [`publish`]: Tmpfile::publish
#[derive(Debug)]
pub(crate) struct Tmpfile {
    file: File,
    dest: PathBuf,
}

impl Tmpfile {
    /// Creates an anonymous file in `dest`'s directory, creating missing
    /// directories first as `LocalFileSystem` does. Blocking.
    pub(crate) fn create(dest: &Path) -> Result<Self, TmpfileError> {
        let dir = dest.parent().unwrap_or(Path::new("/"));
        let open = || {
            rustix::fs::open(
                dir,
                rustix::fs::OFlags::TMPFILE
                    | rustix::fs::OFlags::RDWR
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::from_raw_mode(0o666),
            )
            .map_err(io::Error::from)
        };
        let fd = match open() {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                create_dirs(dir)?;
                open()
            }
            other => other,
        }
        .map_err(|source| TmpfileError::Open {
            dir: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            file: File::from(fd),
            dest: dest.to_path_buf(),
        })
    }

    /// Appends `chunks` at the file's current offset.
    pub(crate) fn write_all<'a>(
        &mut self,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), TmpfileError> {
        chunks
            .into_iter()
            .try_for_each(|chunk| self.file.write_all(chunk))
            .map_err(|source| self.write_error(source))
    }

    /// Writes `chunks` from `offset` on (a multipart upload's part).
    pub(crate) fn write_all_at<'a>(
        &self,
        chunks: impl IntoIterator<Item = &'a [u8]>,
        mut offset: u64,
    ) -> Result<(), TmpfileError> {
        for chunk in chunks {
            self.file
                .write_all_at(chunk, offset)
                .map_err(|source| self.write_error(source))?;
            offset += chunk.len() as u64;
        }
        Ok(())
    }

    /// Moves exactly `len` bytes out of `pipe` into the file at `offset`
    /// (`splice(2)`: the kernel copies them from the pipe's pages into the
    /// page cache; they never enter the process). Blocking.
    pub(crate) fn splice_from(
        &self,
        pipe: BorrowedFd<'_>,
        mut offset: u64,
        len: usize,
    ) -> Result<(), TmpfileError> {
        let mut left = len;
        while left > 0 {
            let moved = rustix::pipe::splice(
                pipe,
                None,
                &self.file,
                Some(&mut offset),
                left,
                rustix::pipe::SpliceFlags::MOVE,
            )
            .map_err(|e| self.write_error(e.into()))?;
            if moved == 0 {
                return Err(self.write_error(ErrorKind::UnexpectedEof.into()));
            }
            left -= moved;
        }
        Ok(())
    }

    /// The file as written so far (digests are read back through it).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn write_error(&self, source: io::Error) -> TmpfileError {
        TmpfileError::Write {
            path: self.dest.clone(),
            source,
        }
    }

    /// Sets `attributes` on the file, then gives it its name (replacing a
    /// file already there when `replace`). Returns the file with its
    /// metadata as of the link, from which its ETag is computed. Blocking.
    pub(crate) fn publish(
        self,
        attributes: &Attributes,
        xattrs_unsupported: &AtomicBool,
        replace: bool,
    ) -> Result<Published, TmpfileError> {
        set_xattrs(&self.file, &self.dest, attributes, xattrs_unsupported);
        let metadata = self
            .file
            .metadata()
            .map_err(|source| TmpfileError::Metadata {
                path: self.dest.clone(),
                source,
            })?;
        // A replacement goes straight to the hidden name: a `linkat` that
        // fails with EEXIST would still take the directory's lock, and the
        // lookup here does not.
        if replace && std::fs::symlink_metadata(&self.dest).is_ok() {
            self.link_over()?;
            return Ok(self.published(metadata));
        }
        let mut created_dirs = false;
        loop {
            match link(&self.file, &self.dest) {
                Ok(()) => return Ok(self.published(metadata)),
                Err(source) if source.kind() == ErrorKind::AlreadyExists => {
                    if !replace {
                        return Err(TmpfileError::AlreadyExists {
                            path: self.dest,
                            source,
                        });
                    }
                    self.link_over()?;
                    return Ok(self.published(metadata));
                }
                // The directory was removed while the file was written (an
                // RMD from another session): recreate it, as a new upload
                // into it would.
                Err(source) if source.kind() == ErrorKind::NotFound && !created_dirs => {
                    created_dirs = true;
                    if let Some(dir) = self.dest.parent() {
                        create_dirs(dir)?;
                    }
                }
                Err(source) => {
                    return Err(TmpfileError::Link {
                        path: self.dest,
                        source,
                    })
                }
            }
        }
    }

    fn published(self, metadata: Metadata) -> Published {
        Published {
            metadata,
            file: self.file,
            path: self.dest,
        }
    }

    /// Replaces the file at `dest`: linked under a free hidden name beside
    /// it, then renamed over it, so the name never goes missing.
    fn link_over(&self) -> Result<(), TmpfileError> {
        let link_error = |source| TmpfileError::Link {
            path: self.dest.clone(),
            source,
        };
        let mut n: u64 = 1;
        let hidden = loop {
            let hidden = hidden_name(&self.dest, n);
            match link(&self.file, &hidden) {
                Ok(()) => break hidden,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(link_error(e)),
            }
        };
        std::fs::rename(&hidden, &self.dest).map_err(|e| {
            // A directory under that name, or it vanished with its parent:
            // take the hidden name back so nothing stays behind.
            let _ = std::fs::remove_file(&hidden);
            link_error(e)
        })
    }
}

/// A file [`Tmpfile::publish`] gave its name.
#[derive(Debug)]
pub(crate) struct Published {
    /// As of the link.
    pub metadata: Metadata,
    /// Still open: a deferred digest reads it back through this.
    pub file: File,
    /// Its name.
    pub path: PathBuf,
}

/// `dest#n`: the staging names `LocalFileSystem` uses and hides.
fn hidden_name(dest: &Path, n: u64) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(format!("#{n}"));
    name.into()
}

/// Links the open (possibly nameless) `file` at `to`; `to` is never
/// followed or replaced.
fn link(file: &File, to: &Path) -> io::Result<()> {
    let fd_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        fd_path.as_str(),
        rustix::fs::CWD,
        to,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    )
    .map_err(io::Error::from)
}

fn create_dirs(dir: &Path) -> Result<(), TmpfileError> {
    std::fs::create_dir_all(dir).map_err(|source| TmpfileError::CreateDir {
        dir: dir.to_path_buf(),
        source,
    })
}

/// Whether this process can link anonymous files into place (`/proc` is
/// mounted). Whether the file system has `O_TMPFILE` shows at the first
/// upload.
pub(crate) fn proc_fd_available() -> bool {
    Path::new("/proc/self/fd").is_dir()
}

/// A multipart upload into an anonymous file: parts are written at their
/// offsets as they arrive (as `LocalFileSystem`'s `LocalUpload` does), and
/// `complete` sets the attributes and links the file into place. Dropping
/// or aborting it closes the file, which frees it: nothing to clean up.
#[derive(Debug)]
pub(crate) struct TmpfileUpload {
    /// Shared with the parts being written; taken by `complete`/`abort`,
    /// and the lock makes `complete` wait for a part being written.
    file: Arc<Mutex<Option<Tmpfile>>>,
    /// Where the next part starts.
    offset: u64,
    attributes: Attributes,
    late: Option<CompletionAttributes>,
    xattrs_unsupported: Arc<AtomicBool>,
    /// Set when the uploader asked for the SHA-256 to be computed here.
    deferred: Option<Deferral>,
}

impl TmpfileUpload {
    /// An upload into `file`, labelled with `attributes` and, at
    /// completion, whatever `late` holds by then; its SHA-256 computed
    /// after completion when `deferred` (see [`super::deferred`]).
    pub(crate) fn new(
        file: Tmpfile,
        attributes: Attributes,
        late: Option<CompletionAttributes>,
        xattrs_unsupported: Arc<AtomicBool>,
        deferred: Option<Deferral>,
    ) -> Self {
        Self {
            file: Arc::new(Mutex::new(Some(file))),
            offset: 0,
            attributes,
            late,
            xattrs_unsupported,
            deferred,
        }
    }
}

/// Takes the file out of its slot: `Aborted` when it is gone already or a
/// writer panicked while holding it (its bytes are then unknown).
fn take(slot: &Mutex<Option<Tmpfile>>) -> Result<Tmpfile, TmpfileError> {
    slot.lock()
        .map_err(|_| TmpfileError::Aborted)?
        .take()
        .ok_or(TmpfileError::Aborted)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, TmpfileError> + Send + 'static,
) -> object_store::Result<T> {
    spawn_blocking(work).await?.map_err(Into::into)
}

#[async_trait]
impl MultipartUpload for TmpfileUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let offset = self.offset;
        self.offset += data.content_length() as u64;
        let slot = Arc::clone(&self.file);
        blocking(move || {
            let guard = slot.lock().map_err(|_| TmpfileError::Aborted)?;
            let file = guard.as_ref().ok_or(TmpfileError::Aborted)?;
            file.write_all_at(data.iter().map(|chunk| chunk.as_ref()), offset)
        })
        .boxed()
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let attributes =
            merged_attributes(std::mem::take(&mut self.attributes), self.late.as_ref());
        let crc32 = stored_crc32(&attributes);
        let (slot, unsupported) = (Arc::clone(&self.file), Arc::clone(&self.xattrs_unsupported));
        let published =
            blocking(move || take(&slot)?.publish(&attributes, &unsupported, true)).await?;
        let result = put_result(&published.metadata);
        if let Some(deferral) = &self.deferred {
            let size = published.metadata.len();
            deferral.start(published.file, published.path, size, crc32);
        }
        Ok(result)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let slot = Arc::clone(&self.file);
        // Closing frees the file's blocks, which for a large file takes a
        // while: off the async threads.
        blocking(move || take(&slot).map(drop)).await
    }
}

impl Drop for TmpfileUpload {
    /// Closes the file off the async threads (see `abort`); a part still
    /// being written holds its own reference and the file closes after it.
    fn drop(&mut self) {
        if matches!(self.file.try_lock(), Ok(file) if file.is_none()) {
            return; // completed or aborted
        }
        let slot = Arc::clone(&self.file);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            drop(runtime.spawn_blocking(move || drop(take(&slot))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::xattrs::local_etag;
    use super::super::XattrStore;
    use super::*;
    use object_store::local::LocalFileSystem;
    use object_store::path::Path as Key;
    use object_store::{
        Attribute, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions,
        WriteMultipart,
    };

    fn store() -> (tempfile::TempDir, XattrStore) {
        let dir = tempfile::tempdir().unwrap();
        let fs = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        (dir, XattrStore::new(Arc::new(fs)))
    }

    fn digest(value: &str) -> Attributes {
        let mut a = Attributes::new();
        a.insert(
            Attribute::Metadata("sha256".into()),
            value.to_string().into(),
        );
        a
    }

    async fn put(store: &XattrStore, key: &str, body: &'static [u8], sha: &str) -> PutResult {
        let opts = PutOptions {
            attributes: digest(sha),
            ..Default::default()
        };
        store
            .put_opts(&Key::from(key), body.into(), opts)
            .await
            .unwrap()
    }

    /// Every name in `dir` and below, files and directories.
    fn names(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                for inner in names(&path) {
                    out.push(format!(
                        "{}/{inner}",
                        path.file_name().unwrap().to_string_lossy()
                    ));
                }
            }
        }
        out.sort();
        out
    }

    fn sha_of(got: &object_store::GetResult) -> Option<&str> {
        got.attributes
            .get(&Attribute::Metadata("sha256".into()))
            .map(|v| v.as_ref())
    }

    #[tokio::test]
    async fn a_new_file_gets_its_name_only_when_complete_with_its_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("new.txt");
        let mut file = Tmpfile::create(&dest).unwrap();
        file.write_all([&b"hello "[..], b"world"]).unwrap();
        assert!(names(dir.path()).is_empty(), "visible before publish");
        let unsupported = AtomicBool::new(false);
        let metadata = file.publish(&digest("abc"), &unsupported, true).unwrap();
        assert_eq!(names(dir.path()), ["new.txt"]);
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello world");
        let mut value = [0u8; 8];
        let n = rustix::fs::getxattr(&dest, "user.bucketftp.sha256", &mut value).unwrap();
        assert_eq!(&value[..n], b"abc");
        assert_eq!(
            local_etag(&metadata.metadata),
            local_etag(&std::fs::metadata(&dest).unwrap())
        );
    }

    #[tokio::test]
    async fn put_etag_and_metadata_are_what_head_reports_afterwards() {
        let (_dir, store) = store();
        let result = put(&store, "f.bin", b"0123456789", "d1").await;
        let head = store.head(&Key::from("f.bin")).await.unwrap();
        assert_eq!(result.e_tag, head.e_tag);
        assert_eq!(head.size, 10);
        let got = store.get(&Key::from("f.bin")).await.unwrap();
        assert_eq!(got.meta.e_tag, result.e_tag);
        assert_eq!(sha_of(&got), Some("d1"));
        assert_eq!(&got.bytes().await.unwrap()[..], b"0123456789");
    }

    #[tokio::test]
    async fn missing_parent_directories_are_created() {
        let (dir, store) = store();
        put(&store, "a/b/c.txt", b"deep", "d").await;
        assert_eq!(
            std::fs::read(dir.path().join("a/b/c.txt")).unwrap(),
            b"deep"
        );
        assert_eq!(names(dir.path()), ["a", "a/b", "a/b/c.txt"]);
    }

    #[tokio::test]
    async fn an_overwrite_replaces_the_file_in_one_step_and_leaves_no_hidden_name() {
        let (dir, store) = store();
        put(&store, "f.txt", b"old", "d-old").await;
        // A reader holding the old file keeps it: the name moved to a new
        // inode, the old one was not rewritten in place.
        let old = std::fs::File::open(dir.path().join("f.txt")).unwrap();
        let result = put(&store, "f.txt", b"new!", "d-new").await;
        assert_eq!(names(dir.path()), ["f.txt"]);
        let mut kept = String::new();
        std::io::Read::read_to_string(&mut &old, &mut kept).unwrap();
        assert_eq!(kept, "old");
        let got = store.get(&Key::from("f.txt")).await.unwrap();
        assert_eq!(got.meta.e_tag, result.e_tag);
        assert_eq!(sha_of(&got), Some("d-new"));
        assert_eq!(&got.bytes().await.unwrap()[..], b"new!");
    }

    #[tokio::test]
    async fn an_overwrite_skips_hidden_names_in_use() {
        let (dir, store) = store();
        put(&store, "f.txt", b"old", "d").await;
        std::fs::write(dir.path().join("f.txt#1"), b"someone else's").unwrap();
        put(&store, "f.txt", b"new", "d").await;
        assert_eq!(names(dir.path()), ["f.txt", "f.txt#1"]);
        assert_eq!(std::fs::read(dir.path().join("f.txt")).unwrap(), b"new");
        assert_eq!(
            std::fs::read(dir.path().join("f.txt#1")).unwrap(),
            b"someone else's"
        );
    }

    #[tokio::test]
    async fn create_mode_refuses_an_existing_name() {
        let (dir, store) = store();
        put(&store, "f.txt", b"first", "d").await;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let err = store
            .put_opts(&Key::from("f.txt"), "second".into(), opts)
            .await
            .unwrap_err();
        assert!(
            matches!(err, object_store::Error::AlreadyExists { .. }),
            "{err}"
        );
        assert_eq!(std::fs::read(dir.path().join("f.txt")).unwrap(), b"first");
        assert_eq!(names(dir.path()), ["f.txt"]);
    }

    #[tokio::test]
    async fn a_link_planted_at_the_name_is_replaced_not_written_through() {
        let (dir, store) = store();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, b"untouched").unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("link")).unwrap();
        put(&store, "link", b"upload", "d").await;
        assert_eq!(std::fs::read(&secret).unwrap(), b"untouched");
        let at_name = std::fs::symlink_metadata(dir.path().join("link")).unwrap();
        assert!(at_name.is_file());
        assert_eq!(std::fs::read(dir.path().join("link")).unwrap(), b"upload");
    }

    #[tokio::test]
    async fn multipart_parts_land_at_their_offsets() {
        let (dir, store) = store();
        let key = Key::from("sub/big.bin");
        let upload = store
            .put_multipart_opts(&key, PutMultipartOptions::default())
            .await
            .unwrap();
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 1 << 20);
        let body: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i % 251) as u8).collect();
        writer.write(&body);
        assert!(
            names(dir.path()).iter().all(|n| n == "sub"),
            "visible early"
        );
        let result = writer.finish().await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("sub/big.bin")).unwrap(), body);
        assert_eq!(store.head(&key).await.unwrap().e_tag, result.e_tag);
    }

    #[tokio::test]
    async fn an_aborted_or_dropped_upload_leaves_nothing() {
        let (dir, store) = store();
        let key = Key::from("gone.bin");
        let mut upload = store
            .put_multipart_opts(&key, PutMultipartOptions::default())
            .await
            .unwrap();
        upload.put_part(vec![1u8; 1000].into()).await.unwrap();
        upload.abort().await.unwrap();
        assert!(upload.complete().await.is_err(), "completed after abort");
        let mut upload = store
            .put_multipart_opts(&key, PutMultipartOptions::default())
            .await
            .unwrap();
        upload.put_part(vec![2u8; 1000].into()).await.unwrap();
        drop(upload);
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }

    #[test]
    fn only_a_missing_o_tmpfile_counts_as_unsupported() {
        let open = |errno: rustix::io::Errno| TmpfileError::Open {
            dir: PathBuf::from("/x"),
            source: io::Error::from(errno),
        };
        assert!(open(rustix::io::Errno::OPNOTSUPP).is_unsupported());
        assert!(open(rustix::io::Errno::ISDIR).is_unsupported());
        assert!(!open(rustix::io::Errno::NOSPC).is_unsupported());
        assert!(!open(rustix::io::Errno::ACCESS).is_unsupported());
    }
}
