//! The object_store engine: every store a storage URL names (`s3://`,
//! `gs://`, `az://`, `file://`, `memory://`).
//!
//! Directories follow [`super::directories`] (markers and prefixes on
//! clouds, real directories on `file://`); uploads are [`super::upload`]'s
//! single PUT or multipart upload, downloads [`super::download`]'s ranged
//! reads; checksums and modification times are [`super::checksums`]' and
//! [`super::modified_time`]'s.

use super::commit_rule::UploadInput;
use super::directories::{Directories, EntryKind};
use super::engine::{
    not_found, BeginDownload, ByteStream, Engine, Listing, ObjectMetadata, Transfer,
};
use super::reply_codes::{local_path_error, storage_error};
use super::{checksums, download, local_paths, modified_time, name_pattern, spliced, upload};
use crate::integrity::Algorithm;
use crate::memory_budget;
use crate::store_url::{OpenedStore, StoreKind};
use async_trait::async_trait;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use std::path::PathBuf;
use std::time::SystemTime;
use unftp_core::storage::{
    Error as StorageError, ErrorKind as StorageErrorKind, Fileinfo, Result as StorageResult,
};

/// Bytes per write on `file://` where an upload is read, not spliced
/// (TLS, REST/APPE, no anonymous files; see [`spliced`]), one write in
/// flight while the next fills: the bytes go to the page cache while they are still in the CPU's
/// cache, not one 8 MiB part later. 1 GiB STOR, 6 alternating rounds on the
/// 2-core benchmark machine: 1,367 MiB/s median against 1,044 with 8 MiB
/// parts, 2 in flight (bucketftp 0.68–0.90 s of CPU per GiB against
/// 0.78–1.05); 256 KiB and 512 KiB cost more per write than they gained
/// (docs/benchmarks.md). `storage.part_size` is the clouds' part size.
const LOCAL_WRITE_SIZE: usize = 1 << 20;

/// One account's files in an object store.
pub(crate) struct ObjectEngine {
    store: OpenedStore,
    /// The directories below the account's home.
    dirs: Directories,
}

impl ObjectEngine {
    /// The engine for an account whose home is `root` in `store`.
    pub(crate) fn new(store: OpenedStore, root: ObjectPath) -> Self {
        let dirs = Directories::new(store.clone(), root);
        Self { store, dirs }
    }
}

#[async_trait]
impl Engine for ObjectEngine {
    fn name(&self) -> &'static str {
        "object_store"
    }

    /// On `file://`: names the store reserves and symbolic links leading
    /// outside its root are refused.
    async fn admit(&self, key: &ObjectPath) -> StorageResult<()> {
        if let StoreKind::Local { root, fs, .. } = &self.store.kind {
            local_paths::check(root, fs, key)
                .await
                .map_err(local_path_error)?;
        }
        Ok(())
    }

    async fn stat(&self, key: &ObjectPath) -> StorageResult<Option<ObjectMetadata>> {
        self.dirs
            .stat(key)
            .await
            .map(|found| found.as_ref().map(ObjectMetadata::from))
            .map_err(storage_error)
    }

    async fn file_exists(&self, key: &ObjectPath) -> StorageResult<bool> {
        match self.store.store.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(storage_error(e)),
        }
    }

    async fn list(
        &self,
        dir: &ObjectPath,
        pattern: Option<&str>,
        mtime_limit: usize,
    ) -> StorageResult<Listing> {
        // Where the listing API can carry the stored times too (GCS), they
        // are asked for beside the listing, not a HEAD per file after it.
        let listed_times = async {
            if mtime_limit == 0 {
                None
            } else {
                self.dirs.listed_mtimes(dir).await
            }
        };
        let (entries, listed_times) = tokio::join!(self.dirs.list(dir), listed_times);
        let mut entries = entries
            .map_err(storage_error)?
            .ok_or_else(|| not_found("no such directory"))?;
        if let Some(pattern) = pattern {
            entries.retain(|e| name_pattern::matches(pattern, &e.name));
        }
        // After the filter: only the files shown cost a HEAD.
        self.dirs
            .apply_stored_mtimes(&mut entries, mtime_limit, listed_times)
            .await;
        Ok(entries
            .iter()
            .map(|e| Fileinfo {
                path: PathBuf::from(&e.name),
                metadata: ObjectMetadata::from(e),
            })
            .collect())
    }

    /// Clouds read ahead in parallel ranges ([`download::open_parallel`]);
    /// `file://` and `memory://` stream one read.
    async fn open(
        &self,
        key: &ObjectPath,
        start_pos: u64,
        transfer: &Transfer<'_>,
    ) -> StorageResult<ByteStream> {
        let store = &self.store.store;
        let settings = transfer.settings;
        let ranged =
            matches!(self.store.kind, StoreKind::Cloud { .. }) && settings.download.max_ranges > 1;
        if ranged {
            let memory = transfer
                .reserve(memory_budget::part_reservation(
                    settings.download.chunk as usize,
                ))
                .await?;
            download::open_parallel(store, key, start_pos, settings.download.clone(), memory).await
        } else {
            let memory = transfer.reserve(memory_budget::STREAM_RESERVATION).await?;
            download::open_range(store, key, start_pos, None)
                .await
                .map(|stream| download::hold(stream, memory))
        }
        .map_err(storage_error)
    }

    async fn write(
        &self,
        key: &ObjectPath,
        input: UploadInput,
        start_pos: u64,
        transfer: &Transfer<'_>,
    ) -> StorageResult<()> {
        let store = self.store.store.clone();
        let existing = if start_pos > 0 {
            Some(
                download::open_range(&store, key, 0, Some(start_pos))
                    .await
                    .map_err(storage_error)?,
            )
        } else {
            None
        };
        let mut settings = transfer.settings.upload.clone();
        if let StoreKind::Local { .. } = self.store.kind {
            // A disk takes bytes faster than one core hashes them: there
            // the SHA-256 of a large upload is the store's, after the commit.
            settings.defer_sha256 = true;
            settings.part_size = LOCAL_WRITE_SIZE;
            settings.concurrency = 1;
        }
        let memory = transfer
            .reserve(memory_budget::part_reservation(settings.part_size))
            .await?;
        let target = upload::UploadTarget {
            store,
            key: key.clone(),
            store_url: self.store.display_url.clone(),
            user: transfer.user.account.name.clone(),
        };
        if let (StoreKind::Local { xattrs, .. }, None, true) =
            (&self.store.kind, &existing, input.is_raw())
        {
            let direct = xattrs
                .direct_upload(key, settings.attributes(key))
                .await
                .map_err(storage_error)?;
            if let Some(direct) = direct {
                return spliced::receive(
                    direct,
                    input,
                    target,
                    &settings,
                    memory,
                    transfer.session,
                    transfer.guard,
                )
                .await
                .map_err(StorageError::from);
            }
        }
        upload::upload(
            target,
            existing,
            input,
            settings,
            memory,
            transfer.session,
            transfer.guard,
        )
        .await
        .map(|_| ())
        .map_err(StorageError::from)
    }

    async fn delete(&self, key: &ObjectPath) -> StorageResult<()> {
        let store = &self.store.store;
        // S3 answers a delete of a missing key with success; DELE of a
        // missing file must be 550, so look first.
        store.head(key).await.map_err(storage_error)?;
        store.delete(key).await.map_err(storage_error)
    }

    async fn make_dir(&self, key: &ObjectPath) -> StorageResult<()> {
        self.dirs.make(key).await.map_err(storage_error)
    }

    async fn remove_dir(&self, key: &ObjectPath) -> StorageResult<()> {
        self.dirs.remove(key).await
    }

    /// A file is one `rename` (copy + delete on clouds); a directory is
    /// renamed object by object, at most `limit` of them.
    async fn rename(&self, from: &ObjectPath, to: &ObjectPath, limit: usize) -> StorageResult<()> {
        if from == to {
            return Ok(());
        }
        let entry = self
            .dirs
            .stat(from)
            .await
            .map_err(storage_error)?
            .ok_or_else(|| not_found("no such file or directory"))?;
        match entry.kind {
            EntryKind::File => self
                .store
                .store
                .rename(from, to)
                .await
                .map_err(storage_error),
            EntryKind::Directory => {
                if to.prefix_matches(from) {
                    return Err(StorageError::new(
                        StorageErrorKind::PermanentDirectoryNotAvailable,
                        "cannot move a directory into itself",
                    ));
                }
                self.dirs.rename_dir(from, to, limit).await
            }
        }
    }

    async fn checksum(
        &self,
        key: &ObjectPath,
        algorithm: Algorithm,
        begin: &BeginDownload<'_>,
    ) -> StorageResult<(String, u64)> {
        checksums::checksum(&self.store, key, algorithm, begin).await
    }

    async fn set_modified(&self, key: &ObjectPath, when: SystemTime) -> StorageResult<()> {
        modified_time::set(&self.store, key, when).await
    }
}
