//! SHA-256 of large `file://` uploads, computed once the file is in place.
//!
//! Why: SHA-256 is serial within one stream and runs at ~1.6 GiB/s on a
//! core here (SHA-NI), slower than a loopback client writes to a local disk
//! (vsftpd takes 1.1–1.75 GiB/s on the benchmark machine). Hashed while the
//! upload streams, it set the pace of every large `file://` STOR: 0.48–0.66×
//! vsftpd, against 0.7–1.08× without it (docs/benchmarks.md). Clouds are
//! slower than the hash, so there it stays inline.
//!
//! How: an upload larger than one part asks for it with [`DeferredSha256`]
//! in its `PutMultipartOptions::extensions`. It then computes only CRC-32
//! while it streams; at completion the store links the file into place with
//! that CRC-32 (and its `Content-Type`), the client gets its 226, and a
//! background job reads the file back through the descriptor it was
//! written with (from the page cache, just written), computes SHA-256 and
//! CRC-32, and stores the SHA-256 as the `user.bucketftp.sha256` xattr.
//! An upload spliced into its file (`super::direct`) never saw its bytes:
//! its job ([`Deferral::start_unseen`]) stores the CRC-32 as well.
//!
//! What holds:
//! - **The digest is always the file's.** The job holds the very inode the
//!   upload wrote: a later upload to the same name is a new inode (see
//!   `tmpfile`) and gets its own digest; the old one's lands on the old
//!   inode, harmlessly. The CRC-32 read back must equal the one computed
//!   from the bytes received, or no SHA-256 is stored (logged): a file
//!   changed under the gateway never gets a digest it does not have. For
//!   an unseen upload the file's size and modification time after the read
//!   must still be those of its commit.
//! - **`HASH` still never reads the object back** through the store: it
//!   passes [`AwaitDigest`], and `head` then waits for the job of that path
//!   (~0.7 s per GiB, a minute at most) before reading the xattrs. Jobs are found by
//!   the name the upload gave the file: one renamed before its job ended
//!   gets its xattr all the same (it is on the inode), but a HASH of the
//!   new name in that window does not wait and computes the digest by
//!   reading the file, as for a file another tool wrote.
//! - **Bounded**: at most one job per core hashes at a time (each with one
//!   [`BUFFER`]); jobs waiting hold only their descriptor.
//! - **The upload event waits for it**, so it carries the SHA-256
//!   (`crate::backend::upload`).
//! - **Shutdown waits for it** ([`settle`], within `server.shutdown_grace`).
//!   A job cut by a crash leaves a file without `sha256`: `HASH` then
//!   computes it by reading the file, as for files written by other tools.
//!
//! Cost: the same SHA-256 as before plus one read of the file from the page
//! cache (~0.1 s of CPU per GiB), after the 226 instead of before it.

use crate::integrity::{ContentDigests, UploadDigests, CRC32_KEY, SHA256_KEY};
use object_store::{Attribute, Attributes};
use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::sync::{watch, Semaphore};

/// Bytes read per `pread`: small enough to stay in the core's L2 cache
/// between the read and the hash.
const BUFFER: usize = 256 * 1024;

/// Longest a `head` with [`AwaitDigest`] waits for a job: a 5 GiB file
/// hashes in ~4 s, but jobs queue behind one per core, and a stalled file
/// system must not hold a HASH (and its control connection) for ever.
const AWAIT_LIMIT: Duration = Duration::from_secs(60);

/// A job's progress: `None` while it runs, then the SHA-256 it stored
/// (`Some(None)` when it could not: a read error, a changed file).
type Outcome = Option<Option<String>>;

/// Asks a `file://` multipart upload to compute its SHA-256 after
/// completion, and hands the result back to the uploader.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeferredSha256(Arc<OnceLock<watch::Receiver<Outcome>>>);

impl DeferredSha256 {
    /// The SHA-256 once stored; `None` when no job ran (a store that
    /// ignores the request) or it stored none.
    pub(crate) async fn digest(&self) -> Option<String> {
        let mut job = self.0.get()?.clone();
        let outcome = job.wait_for(Option::is_some).await.ok()?.clone();
        outcome.flatten()
    }

    fn attach(&self, job: watch::Receiver<Outcome>) {
        let _ = self.0.set(job);
    }
}

/// Passed in `GetOptions::extensions` by a `head` that wants the stored
/// digests: on `file://` it waits for a SHA-256 still being computed after
/// an upload's 226; other stores ignore it. Public for the tests that read
/// an object's attributes through [`crate::OpenedStore`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AwaitDigest;

/// Jobs of one store, by file path, so `head` can wait for them.
#[derive(Debug, Default)]
pub(crate) struct PendingDigests {
    jobs: Mutex<HashMap<PathBuf, (u64, watch::Receiver<Outcome>)>>,
    next_id: AtomicU64,
}

/// One upload's [`DeferredSha256`] request, taken by a store: where its job
/// will run and what it needs from the store.
#[derive(Debug)]
pub(crate) struct Deferral {
    request: DeferredSha256,
    pending: Arc<PendingDigests>,
    /// The store's "this file system refuses xattrs" flag.
    xattrs_unsupported: Arc<AtomicBool>,
}

impl Deferral {
    /// Starts the job for the committed `file`, named `path`, of `size`
    /// bytes; `crc32` is the CRC-32 computed from the bytes received (hex).
    pub(crate) fn start(&self, file: File, path: PathBuf, size: u64, crc32: Option<String>) {
        self.start_job(file, path, size, Check::Received(crc32), true);
    }

    /// Starts the job for a committed `file` whose bytes the gateway never
    /// saw (spliced into it, see `super::direct`): the job computes its
    /// CRC-32 too (and its SHA-256 when `sha256`) and stores both, as long
    /// as the file's size and modification time are still `metadata`'s.
    pub(crate) fn start_unseen(
        &self,
        file: File,
        path: PathBuf,
        metadata: &Metadata,
        sha256: bool,
    ) {
        let check = Check::Unchanged(metadata.modified().ok());
        self.start_job(file, path, metadata.len(), check, sha256);
    }

    fn start_job(&self, file: File, path: PathBuf, size: u64, check: Check, sha256: bool) {
        let job = Job {
            file,
            path,
            size,
            check,
            sha256,
            xattrs_unsupported: Arc::clone(&self.xattrs_unsupported),
        };
        self.pending.start(job, &self.request);
    }
}

/// How a job knows that what it reads is what the client sent.
enum Check {
    /// The CRC-32 computed from the bytes received (hex): what is read back
    /// must have it.
    Received(Option<String>),
    /// The bytes were never seen: the file must not have been written since
    /// its commit (this modification time, the size committed), and its
    /// CRC-32 is stored as well.
    Unchanged(Option<SystemTime>),
}

/// What a job needs.
struct Job {
    /// The file as committed, read through this descriptor.
    file: File,
    /// Its name (for waiting `head`s and for logs).
    path: PathBuf,
    /// Its size as committed.
    size: u64,
    check: Check,
    /// Whether to compute SHA-256 (`storage.upload_sha256`).
    sha256: bool,
    xattrs_unsupported: Arc<AtomicBool>,
}

impl PendingDigests {
    /// Takes an upload's `request` for this store's jobs.
    pub(crate) fn deferral(
        self: &Arc<Self>,
        request: &DeferredSha256,
        xattrs_unsupported: &Arc<AtomicBool>,
    ) -> Deferral {
        Deferral {
            request: request.clone(),
            pending: Arc::clone(self),
            xattrs_unsupported: Arc::clone(xattrs_unsupported),
        }
    }

    /// Starts `job` in the background and tells `request` about it.
    fn start(self: &Arc<Self>, job: Job, request: &DeferredSha256) {
        let (done, outcome) = watch::channel(None);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(job.path.clone(), (id, outcome.clone()));
        }
        request.attach(outcome);
        let running = Running::begin();
        let pending = Arc::clone(self);
        tokio::spawn(async move {
            let _running = running;
            let path = job.path.clone();
            // Closed never: the semaphore lives for the process.
            let permit = hashing_slots().acquire().await.ok();
            let digest = tokio::task::spawn_blocking(move || label(job))
                .await
                .unwrap_or_else(|e| {
                    tracing::error!(path = %path.display(), cause = %e, "SHA-256 job failed");
                    None
                });
            drop(permit);
            done.send_replace(Some(digest));
            pending.finished(&path, id);
        });
    }

    /// Returns once no job is computing the digest of `path`, or after
    /// [`AWAIT_LIMIT`] (the caller then finds no digest and computes it).
    pub(crate) async fn settled(&self, path: &Path) {
        let job = match self.jobs.lock() {
            Ok(jobs) => jobs.get(path).map(|(_, job)| job.clone()),
            Err(_) => None,
        };
        if let Some(mut job) = job {
            let _ = tokio::time::timeout(AWAIT_LIMIT, job.wait_for(Option::is_some)).await;
        }
    }

    fn finished(&self, path: &Path, id: u64) {
        if let Ok(mut jobs) = self.jobs.lock() {
            // A later upload to the same name may have its own job there.
            if jobs.get(path).is_some_and(|(current, _)| *current == id) {
                jobs.remove(path);
            }
        }
    }
}

/// Reads the file back, checks it (see [`Check`]) and stores its SHA-256
/// (and its CRC-32 when the upload could not compute it). Blocking.
fn label(job: Job) -> Option<String> {
    let Job {
        file,
        path,
        size,
        check,
        sha256,
        xattrs_unsupported,
    } = job;
    let digests = match read_back(&file, size, sha256) {
        Ok(digests) => digests,
        Err(e) => {
            tracing::error!(path = %path.display(), cause = %e, "cannot read the upload back for its digests; HASH will compute them on demand");
            return None;
        }
    };
    let mut attributes = Attributes::new();
    match check {
        Check::Received(crc32) => {
            if crc32.as_deref() != Some(digests.crc32.as_str()) {
                tracing::error!(path = %path.display(), received = ?crc32, stored = %digests.crc32, "file changed after its upload completed; no SHA-256 stored");
                return None;
            }
        }
        Check::Unchanged(modified) => {
            let now = file.metadata().ok();
            let unchanged = now.as_ref().is_some_and(|now| {
                now.len() == size && modified.is_some() && now.modified().ok() == modified
            });
            if !unchanged {
                tracing::error!(path = %path.display(), "file changed after its upload completed; no digests stored");
                return None;
            }
            attributes.insert(
                Attribute::Metadata(CRC32_KEY.into()),
                digests.crc32.clone().into(),
            );
        }
    }
    if let Some(sha256) = &digests.sha256 {
        attributes.insert(
            Attribute::Metadata(SHA256_KEY.into()),
            sha256.clone().into(),
        );
    }
    super::xattrs::set_xattrs(&file, &path, &attributes, &xattrs_unsupported);
    digests.sha256
}

/// The digests of the first `size` bytes of `file`, read with `pread`.
/// Blocking.
pub(super) fn read_back(file: &File, size: u64, sha256: bool) -> std::io::Result<ContentDigests> {
    let mut digests = UploadDigests::new(sha256);
    // A small file's buffer is its size: inline digests of small uploads
    // run on whichever blocking thread, and a full buffer on each of them
    // stays with that thread's heap.
    let mut buffer = vec![0u8; usize::try_from(size).map_or(BUFFER, |size| size.min(BUFFER))];
    let mut offset = 0;
    while offset < size {
        let want = usize::try_from(size - offset).map_or(BUFFER, |left| left.min(BUFFER));
        let n = file.read_at(&mut buffer[..want], offset)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        digests.update(&buffer[..n]);
        offset += n as u64;
    }
    Ok(digests.finish())
}

/// One job per core hashes at a time: more would only share the cores.
fn hashing_slots() -> &'static Semaphore {
    static SLOTS: LazyLock<Semaphore> = LazyLock::new(|| {
        Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    });
    &SLOTS
}

/// Jobs started and not yet finished, in the whole process.
static RUNNING: LazyLock<watch::Sender<usize>> = LazyLock::new(|| watch::channel(0).0);

/// Counts a job as running until dropped (also when its task is dropped).
struct Running;

impl Running {
    fn begin() -> Self {
        RUNNING.send_modify(|n| *n += 1);
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Waits, at most `grace`, for the digest jobs still running (shutdown:
/// their files are committed; without the job they would have no SHA-256).
/// Returns how many were left.
pub(crate) async fn settle(grace: Duration) -> usize {
    let mut running = RUNNING.subscribe();
    let settled = tokio::time::timeout(grace, running.wait_for(|n| *n == 0))
        .await
        .is_ok();
    if settled {
        0
    } else {
        *running.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A job for the file just written with `data`, checked as unseen.
    fn unseen(dir: &Path, data: &[u8]) -> (Job, PathBuf) {
        let path = dir.join("f.bin");
        let mut file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        file.write_all(data).unwrap();
        let metadata = file.metadata().unwrap();
        let job = Job {
            file,
            path: path.clone(),
            size: metadata.len(),
            check: Check::Unchanged(metadata.modified().ok()),
            sha256: true,
            xattrs_unsupported: Arc::default(),
        };
        (job, path)
    }

    fn stored(path: &Path, key: &str) -> Option<String> {
        let attributes = super::super::xattrs::read_xattrs(&File::open(path).unwrap());
        attributes
            .get(&Attribute::Metadata(key.to_string().into()))
            .map(|v| v.to_string())
    }

    #[test]
    fn an_unseen_upload_gets_both_digests_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let (job, path) = unseen(dir.path(), b"hello world");
        let sha256 = label(job);
        assert_eq!(
            sha256.as_deref(),
            Some("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
        );
        assert_eq!(stored(&path, SHA256_KEY), sha256);
        assert_eq!(stored(&path, CRC32_KEY).as_deref(), Some("0d4a1185"));
    }

    #[test]
    fn an_unseen_upload_written_again_gets_no_digest() {
        let dir = tempfile::tempdir().unwrap();
        let (job, path) = unseen(dir.path(), b"hello world");
        // Another writer appends after the commit (and the clock moves).
        std::thread::sleep(Duration::from_millis(20));
        File::options()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"!")
            .unwrap();
        assert_eq!(label(job), None);
        assert_eq!(stored(&path, SHA256_KEY), None);
        assert_eq!(stored(&path, CRC32_KEY), None);
    }
}
