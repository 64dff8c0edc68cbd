//! Object attributes on `file://`, kept as extended attributes of the file.
//!
//! object_store's `LocalFileSystem` refuses every write that carries
//! attributes and returns none on reads. [`XattrStore`] wraps it (and only
//! it: it needs the key → file mapping) so the rest of the gateway treats a
//! directory like a bucket: user metadata `k` becomes the xattr
//! `user.bucketftp.k`, `Content-Type` the freedesktop.org `user.mime_type`,
//! and both come back on `get`/`head`. Attributes a file system has no place
//! for (storage class, cache control, …) are dropped.
//!
//! Why xattrs and not computing digests on demand: `HASH` must answer in
//! constant time whatever the file size, and a sidecar file would show up
//! in listings and survive renames badly. (The SHA-256 of an upload larger
//! than a part is set just after its commit, see `deferred`.) xattrs move
//! with `rename(2)` and with the hard link `copy` makes; ext4, XFS, btrfs
//! and tmpfs keep `user.*` xattrs. Where the file system refuses them (some network mounts) the
//! upload still succeeds, a warning is logged once, and checksums are
//! computed on demand instead.
//!
//! Writes: [`XattrStore`] also owns how an upload becomes visible, because
//! the attributes must be on the file before anyone can see it. Uploads are
//! written into an anonymous file and linked into place with their
//! attributes already set (`tmpfile`: one directory
//! operation per file instead of `LocalFileSystem`'s two). Where that is not
//! available (no `O_TMPFILE` on the file system, no `/proc`; decided once
//! per store and logged once) writes go through `LocalFileSystem` and the
//! attributes follow its commit. Besides the [`ObjectStore`] interface, an
//! upload can take the anonymous file and write it itself
//! ([`DirectUpload`], `direct`: spliced from the client's socket).
//!
//! Race-freedom: on the anonymous-file path a file and its attributes
//! become visible together, so no reader can see one without the other and
//! no concurrent upload can interleave. On the fallback path attributes are
//! written through a file descriptor after checking that the file still is
//! the one just committed (its ETag — inode, mtime, size — equals the one
//! the put returned). Reads take attributes through the descriptor the read
//! itself opened. Either way a concurrent overwrite can never pair one
//! upload's digest with another's bytes.

mod deferred;
mod direct;
mod tmpfile;
mod xattrs;

use async_trait::async_trait;
pub use deferred::AwaitDigest;
pub(crate) use deferred::{settle as settle_digests, DeferredSha256};
use deferred::{Deferral, PendingDigests};
pub(crate) use direct::{DirectCommit, DirectUpload};
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    RenameOptions, Result, UploadPart,
};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
pub(crate) use tmpfile::Tmpfile;
use tmpfile::TmpfileUpload;
pub(crate) use xattrs::CompletionAttributes;
use xattrs::{
    merged_attributes, put_result, read_xattrs, spawn_blocking, stored_crc32, write_xattrs,
};

/// `LocalFileSystem` with attributes kept as xattrs and uploads linked
/// into place from anonymous files.
#[derive(Debug)]
pub(crate) struct XattrStore {
    inner: Arc<LocalFileSystem>,
    /// Set once the file system refused an xattr (warned about once).
    unsupported: Arc<AtomicBool>,
    /// Set once anonymous files turned out unavailable (logged once):
    /// from then on every write goes through `inner`.
    no_tmpfile: Arc<AtomicBool>,
    /// SHA-256s being computed after their uploads completed.
    pending: Arc<PendingDigests>,
}

impl XattrStore {
    pub(crate) fn new(inner: Arc<LocalFileSystem>) -> Self {
        let store = Self {
            inner,
            unsupported: Arc::new(AtomicBool::new(false)),
            no_tmpfile: Arc::new(AtomicBool::new(false)),
            pending: Arc::default(),
        };
        if !tmpfile::proc_fd_available() {
            store.give_up_tmpfiles(&"/proc/self/fd is not available");
        }
        store
    }

    /// Whether writes still try anonymous files.
    fn tmpfiles(&self) -> bool {
        !self.no_tmpfile.load(Ordering::Relaxed)
    }

    /// Switches this store to `LocalFileSystem`'s writes for good.
    fn give_up_tmpfiles(&self, cause: &dyn fmt::Display) {
        if !self.no_tmpfile.swap(true, Ordering::Relaxed) {
            tracing::warn!(store = %self.inner, %cause, "anonymous files (O_TMPFILE) unavailable: uploads are staged and renamed instead (two directory operations per file)");
        }
    }

    /// An anonymous file for an upload to `location`; `None` when this
    /// store writes through `LocalFileSystem` (no `O_TMPFILE`, found now or
    /// before).
    async fn create_tmpfile(&self, location: &Path) -> Result<Option<Tmpfile>> {
        if !self.tmpfiles() {
            return Ok(None);
        }
        let path = self.inner.path_to_filesystem(location)?;
        match spawn_blocking(move || Tmpfile::create(&path)).await? {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.is_unsupported() => {
                self.give_up_tmpfiles(&e);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Returns once no digest job runs for `location` (a minute at most).
    pub(crate) async fn settled(&self, location: &Path) {
        if let Ok(path) = self.inner.path_to_filesystem(location) {
            self.pending.settled(&path).await;
        }
    }

    /// Writes `payload` into an anonymous file and links it into place;
    /// `None` when the file system turned out to have no `O_TMPFILE`.
    async fn put_tmpfile(
        &self,
        location: &Path,
        payload: PutPayload,
        attributes: Attributes,
        replace: bool,
    ) -> Result<Option<PutResult>> {
        let path = self.inner.path_to_filesystem(location)?;
        let unsupported = self.unsupported.clone();
        let outcome = spawn_blocking(move || {
            let mut file = Tmpfile::create(&path)?;
            file.write_all(payload.iter().map(|chunk| chunk.as_ref()))?;
            file.publish(&attributes, &unsupported, replace)
        })
        .await?;
        match outcome {
            Ok(published) => Ok(Some(put_result(&published.metadata))),
            Err(e) if e.is_unsupported() => {
                self.give_up_tmpfiles(&e);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl fmt::Display for XattrStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Xattr({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for XattrStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> Result<PutResult> {
        // LocalFileSystem refuses any write that carries attributes.
        let attributes = std::mem::take(&mut opts.attributes);
        let replace = match opts.mode {
            PutMode::Overwrite => Some(true),
            PutMode::Create => Some(false),
            // Conditional updates stay LocalFileSystem's (it refuses them).
            PutMode::Update(_) => None,
        };
        if let (Some(replace), true) = (replace, self.tmpfiles()) {
            let written = self
                .put_tmpfile(location, payload.clone(), attributes.clone(), replace)
                .await?;
            if let Some(result) = written {
                return Ok(result);
            }
        }
        let result = self.inner.put_opts(location, payload, opts).await?;
        let path = self.inner.path_to_filesystem(location)?;
        let (etag, unsupported) = (result.e_tag.clone(), self.unsupported.clone());
        let _ = tokio::task::spawn_blocking(move || {
            write_xattrs(&path, etag.as_deref(), &attributes, &unsupported)
        })
        .await;
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        mut opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        // LocalFileSystem refuses any write that carries attributes.
        let attributes = std::mem::take(&mut opts.attributes);
        let late = opts.extensions.get::<CompletionAttributes>().cloned();
        let deferred = opts
            .extensions
            .get::<DeferredSha256>()
            .map(|request| self.pending.deferral(request, &self.unsupported));
        if let Some(file) = self.create_tmpfile(location).await? {
            return Ok(Box::new(TmpfileUpload::new(
                file,
                attributes,
                late,
                self.unsupported.clone(),
                deferred,
            )));
        }
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(XattrUpload {
            inner,
            path: self.inner.path_to_filesystem(location)?,
            attributes,
            late,
            unsupported: self.unsupported.clone(),
            deferred,
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        if options.extensions.get::<AwaitDigest>().is_some() {
            self.settled(location).await;
        }
        let mut result = self.inner.get_opts(location, options).await?;
        if let GetResultPayload::File(file, path) = result.payload {
            let (file, attributes) = tokio::task::spawn_blocking(move || {
                let attributes = read_xattrs(&file);
                (file, attributes)
            })
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            })?;
            result.payload = GetResultPayload::File(file, path);
            result.attributes = attributes;
        }
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// A `LocalFileSystem` multipart upload (the fallback) whose attributes are
/// written once it completed.
#[derive(Debug)]
struct XattrUpload {
    inner: Box<dyn MultipartUpload>,
    path: std::path::PathBuf,
    attributes: Attributes,
    late: Option<CompletionAttributes>,
    unsupported: Arc<AtomicBool>,
    /// Set when the uploader asked for the SHA-256 to be computed here.
    deferred: Option<Deferral>,
}

#[async_trait]
impl MultipartUpload for XattrUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let result = self.inner.complete().await?;
        let attributes =
            merged_attributes(std::mem::take(&mut self.attributes), self.late.as_ref());
        let crc32 = stored_crc32(&attributes);
        let (path, etag, unsupported) = (
            self.path.clone(),
            result.e_tag.clone(),
            self.unsupported.clone(),
        );
        let committed = tokio::task::spawn_blocking(move || {
            write_xattrs(&path, etag.as_deref(), &attributes, &unsupported)
        })
        .await;
        if let (Some(deferral), Ok(Some((file, size)))) = (&self.deferred, committed) {
            deferral.start(file, self.path.clone(), size, crc32);
        }
        Ok(result)
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::Attribute;
    use object_store::{ObjectStoreExt, WriteMultipart};

    fn store() -> (tempfile::TempDir, XattrStore) {
        let dir = tempfile::tempdir().unwrap();
        let fs = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        (dir, XattrStore::new(Arc::new(fs)))
    }

    fn attributes() -> Attributes {
        let mut a = Attributes::new();
        a.insert(Attribute::ContentType, "image/jpeg".into());
        a.insert(Attribute::Metadata("sha256".into()), "abc".into());
        a.insert(Attribute::StorageClass, "COLD".into());
        a
    }

    #[tokio::test]
    async fn put_keeps_attributes_and_head_returns_them() {
        let (dir, store) = store();
        let key = Path::from("a/b.jpg");
        store
            .put_opts(
                &key,
                "data".into(),
                PutOptions {
                    attributes: attributes(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let head = store
            .get_opts(
                &key,
                GetOptions {
                    head: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            head.attributes
                .get(&Attribute::ContentType)
                .map(|v| v.as_ref()),
            Some("image/jpeg")
        );
        assert_eq!(
            head.attributes
                .get(&Attribute::Metadata("sha256".into()))
                .map(|v| v.as_ref()),
            Some("abc")
        );
        assert_eq!(head.attributes.get(&Attribute::StorageClass), None);
        // The xattr is on the file itself, under the documented name.
        let mut value = [0u8; 16];
        let n = rustix::fs::getxattr(
            dir.path().join("a/b.jpg"),
            "user.bucketftp.sha256",
            &mut value,
        )
        .unwrap();
        assert_eq!(&value[..n], b"abc");
        // A rename keeps them.
        let moved = Path::from("c.jpg");
        store.rename(&key, &moved).await.unwrap();
        let got = store.get(&moved).await.unwrap();
        assert!(got
            .attributes
            .get(&Attribute::Metadata("sha256".into()))
            .is_some());
    }

    #[tokio::test]
    async fn multipart_gets_attributes_known_at_completion() {
        let (_dir, store) = store();
        multipart_labelled_at_completion(store).await;
    }

    /// Where anonymous files are unavailable, `LocalFileSystem` writes and
    /// the attributes still follow.
    #[tokio::test]
    async fn the_fallback_path_keeps_attributes() {
        let (dir, store) = store();
        store.give_up_tmpfiles(&"test");
        let key = Path::from("a/b.jpg");
        let opts = PutOptions {
            attributes: attributes(),
            ..Default::default()
        };
        let put = store.put_opts(&key, "data".into(), opts).await.unwrap();
        let got = store.get(&key).await.unwrap();
        assert_eq!(got.meta.e_tag, put.e_tag);
        assert_eq!(
            got.attributes
                .get(&Attribute::Metadata("sha256".into()))
                .map(|v| v.as_ref()),
            Some("abc")
        );
        multipart_labelled_at_completion(store).await;
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "big.bin"]);
    }

    /// Writes `data` as a multipart upload whose SHA-256 is left to the
    /// store, labelled at completion with `crc32`; returns the request.
    async fn deferred_upload(
        store: &XattrStore,
        key: &Path,
        data: &[u8],
        crc32: &str,
    ) -> DeferredSha256 {
        let (late, request) = (CompletionAttributes::default(), DeferredSha256::default());
        let mut opts = PutMultipartOptions::default();
        opts.extensions.insert(late.clone());
        opts.extensions.insert(request.clone());
        let upload = store.put_multipart_opts(key, opts).await.unwrap();
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 5 << 20);
        writer.write(data);
        let mut known = Attributes::new();
        known.insert(
            Attribute::Metadata("crc32".into()),
            crc32.to_string().into(),
        );
        late.set(known);
        writer.finish().await.unwrap();
        request
    }

    fn digests_of(data: &[u8]) -> crate::integrity::ContentDigests {
        let mut digests = crate::integrity::UploadDigests::new(true);
        digests.update(data);
        digests.finish()
    }

    /// A `head` asking for the digests, right after completion.
    async fn digest_at(store: &XattrStore, key: &Path) -> Option<String> {
        let mut options = GetOptions {
            head: true,
            ..Default::default()
        };
        options.extensions.insert(AwaitDigest);
        let head = store.get_opts(key, options).await.unwrap();
        head.attributes
            .get(&Attribute::Metadata("sha256".into()))
            .map(|v| v.as_ref().to_string())
    }

    async fn deferred_digest_lands_on_the_file(store: XattrStore, dir: tempfile::TempDir) {
        let data: Vec<u8> = (0..(11 << 20) + 5).map(|i| (i % 249) as u8).collect();
        let expected = digests_of(&data);
        let key = Path::from("d/big.bin");
        let request = deferred_upload(&store, &key, &data, &expected.crc32).await;
        // `head` with AwaitDigest waits for the job: no race, no read.
        assert_eq!(digest_at(&store, &key).await, expected.sha256);
        assert_eq!(request.digest().await, expected.sha256);
        assert_eq!(sha256_xattr(&dir.path().join("d/big.bin")), expected.sha256);
    }

    /// The `user.bucketftp.sha256` xattr of the file at `path`.
    fn sha256_xattr(path: &std::path::Path) -> Option<String> {
        let mut value = [0u8; 64];
        let n = rustix::fs::getxattr(path, "user.bucketftp.sha256", &mut value).ok()?;
        Some(String::from_utf8_lossy(&value[..n]).into_owned())
    }

    #[tokio::test]
    async fn a_deferred_sha256_lands_on_the_file_after_completion() {
        let (dir, store) = store();
        deferred_digest_lands_on_the_file(store, dir).await;
    }

    #[tokio::test]
    async fn a_deferred_sha256_lands_on_the_file_on_the_fallback_path() {
        let (dir, store) = store();
        store.give_up_tmpfiles(&"test");
        deferred_digest_lands_on_the_file(store, dir).await;
    }

    /// Shutdown's wait: once `settle_digests` returns 0 the file has its
    /// SHA-256, without anyone having asked for it.
    #[tokio::test]
    async fn settling_waits_for_the_digest_jobs() {
        let (dir, store) = store();
        let data = vec![5u8; 7 << 20];
        let expected = digests_of(&data);
        let key = Path::from("s.bin");
        deferred_upload(&store, &key, &data, &expected.crc32).await;
        assert_eq!(settle_digests(std::time::Duration::from_secs(60)).await, 0);
        assert_eq!(sha256_xattr(&dir.path().join("s.bin")), expected.sha256);
    }

    /// The CRC-32 of what was received must match what is read back, or
    /// the file gets no SHA-256 (it was changed under the gateway).
    #[tokio::test]
    async fn a_file_that_reads_back_differently_gets_no_sha256() {
        let (_dir, store) = store();
        let data = vec![3u8; 6 << 20];
        let key = Path::from("changed.bin");
        let request = deferred_upload(&store, &key, &data, "00000000").await;
        assert_eq!(request.digest().await, None);
        assert_eq!(digest_at(&store, &key).await, None);
    }

    /// An upload replacing a file whose digest is still being computed
    /// keeps its own digest: the late one lands on the old inode.
    #[tokio::test]
    async fn an_overwrite_keeps_its_own_sha256() {
        let (_dir, store) = store();
        let key = Path::from("f.bin");
        let data = vec![9u8; 12 << 20];
        let expected = digests_of(&data);
        let first = deferred_upload(&store, &key, &data, &expected.crc32).await;
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::Metadata("sha256".into()), "second".into());
        let opts = PutOptions {
            attributes,
            ..Default::default()
        };
        store.put_opts(&key, "new".into(), opts).await.unwrap();
        assert_eq!(first.digest().await, expected.sha256);
        assert_eq!(digest_at(&store, &key).await.as_deref(), Some("second"));
    }

    async fn multipart_labelled_at_completion(store: XattrStore) {
        let key = Path::from("big.bin");
        let late = CompletionAttributes::default();
        let mut opts = PutMultipartOptions {
            attributes: attributes(),
            ..Default::default()
        };
        opts.extensions.insert(late.clone());
        let upload = store.put_multipart_opts(&key, opts).await.unwrap();
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 5 << 20);
        writer.write(&vec![7u8; 11 << 20]);
        let mut known = Attributes::new();
        known.insert(Attribute::Metadata("sha256".into()), "digest".into());
        late.set(known);
        writer.finish().await.unwrap();
        let head = store.head(&key).await.unwrap();
        assert_eq!(head.size, 11 << 20);
        let got = store.get(&key).await.unwrap();
        assert_eq!(
            got.attributes
                .get(&Attribute::Metadata("sha256".into()))
                .map(|v| v.as_ref()),
            Some("digest")
        );
        assert_eq!(
            got.attributes
                .get(&Attribute::ContentType)
                .map(|v| v.as_ref()),
            Some("image/jpeg")
        );
    }
}
