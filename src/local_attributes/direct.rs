//! Uploads whose bytes the gateway writes into the file itself.
//!
//! A `file://` upload over plain TCP is spliced from the client's socket
//! into its file (`crate::backend::spliced`): the bytes never enter the
//! process, so nothing hashes them on the way. [`DirectUpload`] is the
//! file side of that: an anonymous file like a multipart upload's
//! (`tmpfile`), linked into place with its attributes by `complete`, and
//! freed, never visible, when dropped. Its digests come from the file:
//! - up to [`INLINE_DIGESTS`] bytes, read back before the link, so a small
//!   file becomes visible with its digests as every other upload does
//!   (cheap: it was just written, it is in the page cache);
//! - larger, by a job after the link (`deferred`), as a large multipart
//!   upload's SHA-256 already is, here with its CRC-32 too; the job stores
//!   nothing if the file was written again meanwhile.

use super::deferred::{read_back, DeferredSha256, PendingDigests};
use super::tmpfile::Tmpfile;
use super::xattrs::spawn_blocking;
use super::XattrStore;
use object_store::path::Path;
use object_store::{Attributes, Result};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Largest upload whose digests are computed before it is linked into
/// place (~1 ms of reading and hashing).
pub(crate) const INLINE_DIGESTS: u64 = 1 << 20;

/// An upload into an anonymous file the caller writes through
/// [`file`](Self::file); see the module docs.
#[derive(Debug)]
pub(crate) struct DirectUpload {
    /// `Some` until `complete` (which takes the upload) or drop.
    file: Option<Arc<Tmpfile>>,
    attributes: Attributes,
    xattrs_unsupported: Arc<AtomicBool>,
    pending: Arc<PendingDigests>,
}

/// A [`DirectUpload`] linked into place.
#[derive(Debug)]
pub(crate) struct DirectCommit {
    /// Its SHA-256 when computed before the link (and asked for).
    pub sha256: Option<String>,
    /// Set when its digests are computed after the link.
    pub deferred: Option<DeferredSha256>,
}

impl XattrStore {
    /// Starts a [`DirectUpload`] to `location`, labelled with `attributes`;
    /// `None` where the file system has no anonymous files (the caller then
    /// uploads through the [`object_store::ObjectStore`] interface).
    pub(crate) async fn direct_upload(
        &self,
        location: &Path,
        attributes: Attributes,
    ) -> Result<Option<DirectUpload>> {
        let file = self.create_tmpfile(location).await?;
        Ok(file.map(|file| DirectUpload {
            file: Some(Arc::new(file)),
            attributes,
            xattrs_unsupported: Arc::clone(&self.unsupported),
            pending: Arc::clone(&self.pending),
        }))
    }
}

impl DirectUpload {
    /// The file to write into (blocking writes: off the async threads).
    pub(crate) fn file(&self) -> Arc<Tmpfile> {
        // `file` is taken only by `complete` and `drop`, which own the
        // upload: whoever can call this finds it there.
        Arc::clone(self.file.as_ref().expect("the file until complete"))
    }

    /// Links the file, `size` bytes, into place (replacing what is there)
    /// with its digests, SHA-256 included when `sha256`. Every write must
    /// have returned; `last` is a pipe holding the file's last bytes (how
    /// many), written first on the same blocking thread.
    pub(crate) async fn complete(
        mut self,
        size: u64,
        sha256: bool,
        last: Option<(OwnedFd, usize)>,
    ) -> Result<DirectCommit> {
        let file = self.file.take().and_then(Arc::into_inner);
        let Some(file) = file else {
            return Err(super::tmpfile::TmpfileError::Aborted.into());
        };
        let mut attributes = std::mem::take(&mut self.attributes);
        let unsupported = Arc::clone(&self.xattrs_unsupported);
        let (published, inline) = spawn_blocking(move || {
            if let Some((pipe, len)) = last {
                let offset = size.saturating_sub(len as u64);
                file.splice_from(pipe.as_fd(), offset, len)?;
            }
            let written = file.file().metadata().map(|m| m.len());
            if written.as_ref().ok() != Some(&size) {
                let found = written.map_or_else(|e| e.to_string(), |n| format!("{n} bytes"));
                return Err(file.write_error(std::io::Error::other(format!(
                    "{size} bytes written, the file has {found}"
                ))));
            }
            let inline = if size <= INLINE_DIGESTS {
                let digests =
                    read_back(file.file(), size, sha256).map_err(|e| file.write_error(e))?;
                digests.add_to(&mut attributes);
                Some(digests)
            } else {
                None
            };
            let published = file.publish(&attributes, &unsupported, true)?;
            Ok((published, inline))
        })
        .await??;
        Ok(match inline {
            Some(digests) => DirectCommit {
                sha256: digests.sha256,
                deferred: None,
            },
            None => {
                let request = DeferredSha256::default();
                let deferral = self.pending.deferral(&request, &self.xattrs_unsupported);
                deferral.start_unseen(published.file, published.path, &published.metadata, sha256);
                DirectCommit {
                    sha256: None,
                    deferred: Some(request),
                }
            }
        })
    }
}

impl Drop for DirectUpload {
    /// Not completed: closing frees the file (never linked) and its blocks,
    /// which for a large file takes a while: off the async threads. A write
    /// still running holds its own reference; the file closes after it.
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                drop(runtime.spawn_blocking(move || drop(file)));
            }
        }
    }
}
