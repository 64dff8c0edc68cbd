//! Directories on stores that have none.
//!
//! Object stores only have keys. A directory `d` exists for FTP when it is
//! the user's home, when a zero-byte marker object `d/` exists (what MKD
//! writes, as the S3 and GCS consoles and rclone do), or when any key starts
//! with `d/`. On `file://` directories are real, so MKD and RMD use the file
//! system directly and empty directories survive.

use crate::backend::reply_codes::storage_error;
use crate::paths::marker_key;
use crate::store_url::{OpenedStore, StoreKind};
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStoreExt};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use unftp_core::storage::{
    Error as StorageError, ErrorKind as StorageErrorKind, Result as StorageResult,
};

/// How a store holds directories: decided once per store, when its
/// engine is built, instead of asked of the store kind in every operation.
#[derive(Debug, Clone)]
pub(crate) enum DirStyle {
    /// `file://`: real directories, made, removed and renamed on the file
    /// system, so empty directories survive.
    Filesystem {
        /// The typed store, for its key → file-path mapping.
        fs: Arc<LocalFileSystem>,
        /// The directory all keys live under.
        root: PathBuf,
    },
    /// A zero-byte `d/` marker object (S3, GCS, memory).
    Markers,
    /// A zero-byte blob `d` with metadata `hdi_isfolder=true` (Azure).
    FolderBlobs,
}

impl DirStyle {
    /// The convention of a store.
    ///
    /// Azure Blob cannot hold `dir/` markers through object_store (it builds
    /// blob URLs from a key's segments, dropping the trailing slash), so
    /// there a folder is a zero-byte blob `dir` with metadata
    /// `hdi_isfolder=true`: the convention of ADLS Gen2, blobfuse and Azure
    /// Storage Explorer.
    pub(crate) fn of(kind: &StoreKind) -> Self {
        match kind {
            StoreKind::Local { fs, root, .. } => Self::Filesystem {
                fs: fs.clone(),
                root: root.clone(),
            },
            StoreKind::Cloud { scheme: "az" } => Self::FolderBlobs,
            StoreKind::Cloud { .. } | StoreKind::Memory => Self::Markers,
        }
    }
}

/// The directories of one account: its store, its home, and the store's
/// [`DirStyle`].
#[derive(Debug, Clone)]
pub(crate) struct Directories {
    store: OpenedStore,
    root: ObjectPath,
    style: DirStyle,
}

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    File,
    /// A prefix, a marker, or a real directory on `file://`.
    Directory,
}

/// One line of a listing.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The name inside its directory.
    pub name: String,
    /// File or directory.
    pub kind: EntryKind,
    /// Bytes (0 for directories).
    pub size: u64,
    /// Last modification: the object's, a directory marker's, a real
    /// directory's mtime on `file://`, else [`undated_directory`].
    pub modified: Option<SystemTime>,
    /// A file's object key, as listed (for [`apply_stored_mtimes`]).
    pub location: Option<ObjectPath>,
}

/// The date shown for a directory that has no date of its own (a prefix
/// with no marker object, the home on a cloud store): 2000-01-01T00:00:00Z.
/// Clients that parse `LIST` (wget, ftputil) need a real date on every line;
/// a fixed, obviously synthetic one never changes between listings, so a
/// mirror does not see a directory as modified on every run.
pub(super) fn undated_directory() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(946_684_800)
}

impl Entry {
    fn file(name: String, meta: &ObjectMeta) -> Self {
        Self {
            name,
            kind: EntryKind::File,
            size: meta.size,
            modified: Some(meta.last_modified.into()),
            location: Some(meta.location.clone()),
        }
    }

    fn dir(name: String, modified: Option<SystemTime>) -> Self {
        Self {
            name,
            kind: EntryKind::Directory,
            size: 0,
            modified: Some(modified.unwrap_or_else(undated_directory)),
            location: None,
        }
    }
}

fn is_marker(location: &ObjectPath) -> bool {
    location.as_ref().ends_with('/')
}

/// How object_store can reach the blob `dir/` that other tools write as a
/// folder marker on Azure (rclone's `directory_markers`, several SDK
/// samples): its Azure client builds a blob URL from the key's segments and
/// drops one trailing empty segment, so `dir/` (one empty segment) becomes
/// `dir`, while `dir//` (two) becomes `dir/`. object_store's Azure listing
/// also leaves the blob `dir/` out of a listing of `dir/`, so this HEAD is
/// the only way to see such an empty folder. `tests/it/conformance.rs`
/// (`azure_foreign_folder_markers`) pins this on azurite.
fn foreign_azure_marker(dir: &ObjectPath) -> ObjectPath {
    marker_key(dir).join("")
}

/// The metadata attribute that marks a folder blob on Azure.
const HDI_ISFOLDER: &str = "hdi_isfolder";

/// Whether the zero-byte blob at `location` is an Azure folder marker.
async fn is_folder_blob(store: &OpenedStore, location: &ObjectPath) -> object_store::Result<bool> {
    let (meta, attributes) = super::modified_time::head(store, location).await?;
    Ok(is_folder(&DirStyle::FolderBlobs, &meta, &attributes))
}

/// Whether an object, as one HEAD saw it, is an Azure folder blob.
pub(crate) fn is_folder(
    style: &DirStyle,
    meta: &ObjectMeta,
    attributes: &object_store::Attributes,
) -> bool {
    meta.size == 0
        && matches!(style, DirStyle::FolderBlobs)
        && attributes
            .get(&object_store::Attribute::Metadata(HDI_ISFOLDER.into()))
            .is_some_and(|v| v.as_ref().eq_ignore_ascii_case("true"))
}

/// HEADs of one listing's files in flight at once, when their `mtime`
/// metadata is read.
const MTIME_HEADS_IN_FLIGHT: usize = 16;

/// The last segment of a key, or "" for the root.
fn name_of(key: &ObjectPath) -> String {
    key.parts()
        .next_back()
        .map(|p| p.as_ref().to_string())
        .unwrap_or_default()
}

/// A real directory's modification time on `file://`; `None` elsewhere
/// (and when the file system cannot say).
async fn local_mtime(style: &DirStyle, key: &ObjectPath) -> Option<SystemTime> {
    let DirStyle::Filesystem { fs, root } = style else {
        return None;
    };
    let path = if key.as_ref().is_empty() {
        root.clone()
    } else {
        fs.path_to_filesystem(key).ok()?
    };
    tokio::fs::metadata(&path).await.ok()?.modified().ok()
}

async fn delete_if_present(store: &OpenedStore, key: &ObjectPath) -> StorageResult<()> {
    match store.store.delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(storage_error(e)),
    }
}

impl Directories {
    /// The directories of `store` below the account's home `root`.
    pub(crate) fn new(store: OpenedStore, root: ObjectPath) -> Self {
        let style = DirStyle::of(&store.kind);
        Self { store, root, style }
    }

    /// The client's times stored as `mtime` metadata (see
    /// [`super::modified_time`]) of the files directly in `dir`, from the
    /// listing itself where the store's listings carry metadata (GCS's JSON
    /// API; one request per 1,000 objects, run beside [`Self::list`]).
    /// `None`: the store cannot, or the request failed (logged), and
    /// [`Self::apply_stored_mtimes`] reads each file's metadata instead.
    pub(crate) async fn listed_mtimes(
        &self,
        dir: &ObjectPath,
    ) -> Option<HashMap<ObjectPath, SystemTime>> {
        let writer = self.store.metadata_writer.as_ref()?;
        match writer
            .listed_metadata(dir, super::modified_time::stored_mtime)
            .await
        {
            Ok(times) => times,
            Err(e) => {
                tracing::debug!(dir = %dir, cause = %e, "listing: no metadata listing, reading it per file");
                None
            }
        }
    }

    /// Gives listed files the client's time stored as `mtime` metadata (see
    /// [`super::modified_time`]): from `listed` when the store listed them
    /// ([`Self::listed_mtimes`]), else one HEAD per file,
    /// [`MTIME_HEADS_IN_FLIGHT`] at a time, when the listing holds at most
    /// `limit` files; larger listings keep the store's own times. A file whose
    /// HEAD fails (deleted since the listing, a store hiccup) keeps its listed
    /// time: a listing never fails for this. Called after a `LIST *.jpg`
    /// pattern filtered the entries, so only the files shown are looked at.
    pub(crate) async fn apply_stored_mtimes(
        &self,
        entries: &mut [Entry],
        limit: usize,
        listed: Option<HashMap<ObjectPath, SystemTime>>,
    ) {
        let (store, style) = (&self.store, &self.style);
        if matches!(style, DirStyle::Filesystem { .. }) {
            return;
        }
        if let Some(times) = listed {
            for entry in entries.iter_mut().filter(|e| e.kind == EntryKind::File) {
                if let Some(time) = entry.location.as_ref().and_then(|key| times.get(key)) {
                    entry.modified = Some(*time);
                }
            }
            return;
        }
        let mut files: Vec<&mut Entry> = entries
            .iter_mut()
            .filter(|e| e.kind == EntryKind::File && e.location.is_some())
            .collect();
        if files.is_empty() || files.len() > limit {
            return;
        }
        let keys: Vec<ObjectPath> = files.iter().filter_map(|e| e.location.clone()).collect();
        // Owned values in each future: the stream is held across an await of
        // libunftp's `Send` listing future.
        let inner = store.store.clone();
        let times: Vec<Option<SystemTime>> = futures::stream::iter(keys)
            .map(move |key| {
                let inner = inner.clone();
                async move {
                    let head = object_store::GetOptions {
                        head: true,
                        ..Default::default()
                    };
                    match inner.get_opts(&key, head).await {
                        Ok(found) => super::modified_time::stored_mtime(&found.attributes),
                        Err(e) => {
                            tracing::debug!(key = %key, cause = %e, "listing: no stored mtime");
                            None
                        }
                    }
                }
            })
            .buffered(MTIME_HEADS_IN_FLIGHT)
            .collect()
            .await;
        for (entry, time) in files.iter_mut().zip(times) {
            if time.is_some() {
                entry.modified = time;
            }
        }
    }

    /// What `key` is: a file, a directory, or nothing (`Ok(None)`).
    pub(crate) async fn stat(&self, key: &ObjectPath) -> object_store::Result<Option<Entry>> {
        let (store, root, style) = (&self.store, &self.root, &self.style);
        if key == root {
            return Ok(Some(Entry::dir(
                String::new(),
                local_mtime(style, key).await,
            )));
        }
        let found = if matches!(style, DirStyle::Filesystem { .. }) {
            // The file's own mtime is the time on a file system.
            store
                .store
                .head(key)
                .await
                .map(|meta| (meta, object_store::Attributes::new()))
        } else {
            super::modified_time::head(store, key).await
        };
        match found {
            Ok((meta, attributes)) if is_folder(style, &meta, &attributes) => {
                return Ok(Some(Entry::dir(
                    name_of(key),
                    Some(meta.last_modified.into()),
                )))
            }
            Ok((meta, attributes)) => {
                let mut entry = Entry::file(name_of(key), &meta);
                if let Some(time) = super::modified_time::stored_mtime(&attributes) {
                    entry.modified = Some(time);
                }
                return Ok(Some(entry));
            }
            Err(object_store::Error::NotFound { .. }) => {}
            // Some stores answer HEAD of a directory path with a non-404 error
            // (the local file system: "is a directory"); look for a directory.
            Err(e) if matches!(style, DirStyle::Filesystem { .. }) => {
                tracing::debug!(cause = %e, "head failed on local store; probing for a directory");
            }
            Err(e) => return Err(e),
        }
        self.dir_stat(key).await
    }

    async fn dir_stat(&self, key: &ObjectPath) -> object_store::Result<Option<Entry>> {
        let (store, style) = (&self.store, &self.style);
        if let DirStyle::Filesystem { fs, .. } = style {
            let Ok(path) = fs.path_to_filesystem(key) else {
                return Ok(None);
            };
            return Ok(match tokio::fs::metadata(&path).await {
                Ok(m) if m.is_dir() => Some(Entry::dir(name_of(key), m.modified().ok())),
                _ => None,
            });
        }
        // The marker first: one HEAD, and the only way to see an empty
        // directory on stores whose prefix listing skips the key `d/` itself
        // (object_store's in-memory store does).
        let marker = if matches!(style, DirStyle::FolderBlobs) {
            // Our own folder blob has the URL of `key`, already looked at by
            // `stat`; another tool's `dir/` blob is this one.
            store.store.head(&foreign_azure_marker(key)).await
        } else {
            store.store.head(&marker_key(key)).await
        };
        match marker {
            Ok(meta) => {
                return Ok(Some(Entry::dir(
                    name_of(key),
                    Some(meta.last_modified.into()),
                )))
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        // Otherwise any key under `d/` makes it a directory; `list` with a
        // prefix matches whole segments, and one result is enough.
        let mut listing = store.store.list(Some(key));
        match listing.try_next().await? {
            Some(meta) if is_marker(&meta.location) || meta.location == *key => Ok(Some(
                Entry::dir(name_of(key), Some(meta.last_modified.into())),
            )),
            Some(_) => Ok(Some(Entry::dir(name_of(key), None))),
            None => Ok(None),
        }
    }

    /// Lists the directory `key`: `Ok(None)` when it is not a directory.
    /// A file named directly lists as itself, as `ls -l file` does. Files carry
    /// the listing API's times; [`apply_stored_mtimes`] adds stored ones.
    pub(crate) async fn list(&self, key: &ObjectPath) -> object_store::Result<Option<Vec<Entry>>> {
        let (store, root, style) = (&self.store, &self.root, &self.style);
        let prefix = (key != &ObjectPath::ROOT).then_some(key);
        let result = store.store.list_with_delimiter(prefix).await?;
        let mut dirs: BTreeMap<String, Entry> = BTreeMap::new();
        for p in &result.common_prefixes {
            let name = name_of(p);
            if !name.is_empty() {
                let modified = local_mtime(style, p).await;
                dirs.insert(name.clone(), Entry::dir(name, modified));
            }
        }
        let mut saw_own_marker = false;
        let mut files = Vec::new();
        for meta in &result.objects {
            if meta.location == *key
                || (is_marker(&meta.location)
                    && ObjectPath::parse(meta.location.as_ref()).ok().as_ref() == Some(key))
            {
                // The directory's own marker (`d/`, which object_store may hand
                // back as `d` with the slash stripped).
                saw_own_marker = true;
                continue;
            }
            if is_marker(&meta.location) {
                // A marker listed as an object: show the directory it marks.
                let name = meta
                    .location
                    .as_ref()
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_string();
                if !name.is_empty() {
                    dirs.entry(name.clone())
                        .and_modify(|d| d.modified = Some(meta.last_modified.into()))
                        .or_insert_with(|| Entry::dir(name, Some(meta.last_modified.into())));
                }
                continue;
            }
            let name = name_of(&meta.location);
            if meta.size == 0
                && matches!(style, DirStyle::FolderBlobs)
                && !dirs.contains_key(&name)
                && is_folder_blob(store, &meta.location).await?
            {
                dirs.insert(
                    name.clone(),
                    Entry::dir(name, Some(meta.last_modified.into())),
                );
                continue;
            }
            if dirs.contains_key(&name) {
                // A zero-byte object shadowing a directory of the same name is a
                // marker whose slash was stripped: show only the directory.
                continue;
            }
            files.push(Entry::file(name, meta));
        }
        if dirs.is_empty() && files.is_empty() && !saw_own_marker && key != root {
            return match self.stat(key).await? {
                Some(entry) if entry.kind == EntryKind::File => Ok(Some(vec![entry])),
                Some(_) => Ok(Some(Vec::new())),
                None => Ok(None),
            };
        }
        let mut entries: Vec<Entry> = dirs.into_values().collect();
        entries.extend(files);
        Ok(Some(entries))
    }

    /// Creates directory `key`: a real directory on `file://`, a marker
    /// object elsewhere.
    pub(crate) async fn make(&self, key: &ObjectPath) -> object_store::Result<()> {
        let (store, style) = (&self.store, &self.style);
        if let DirStyle::Filesystem { fs, .. } = style {
            let path = fs.path_to_filesystem(key)?;
            return tokio::fs::create_dir_all(&path).await.map_err(|e| {
                object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                }
            });
        }
        if matches!(style, DirStyle::FolderBlobs) {
            let mut attributes = object_store::Attributes::new();
            attributes.insert(
                object_store::Attribute::Metadata(HDI_ISFOLDER.into()),
                "true".into(),
            );
            store
                .store
                .put_opts(
                    key,
                    bytes::Bytes::new().into(),
                    object_store::PutOptions {
                        attributes,
                        ..Default::default()
                    },
                )
                .await?;
            return Ok(());
        }
        store
            .store
            .put(&marker_key(key), bytes::Bytes::new().into())
            .await?;
        Ok(())
    }

    /// Removes the empty directory `key`; 550 when it is missing or not empty.
    pub(crate) async fn remove(&self, key: &ObjectPath) -> StorageResult<()> {
        let (store, style) = (&self.store, &self.style);
        match self.stat(key).await.map_err(storage_error)? {
            Some(entry) if entry.kind == EntryKind::Directory => {}
            Some(_) => {
                return Err(StorageError::new(
                    StorageErrorKind::PermanentDirectoryNotAvailable,
                    "not a directory",
                ))
            }
            None => {
                return Err(StorageError::new(
                    StorageErrorKind::PermanentDirectoryNotAvailable,
                    "no such directory",
                ))
            }
        }
        if let DirStyle::Filesystem { fs, .. } = style {
            let path = fs.path_to_filesystem(key).map_err(storage_error)?;
            return tokio::fs::remove_dir(&path)
                .await
                .map_err(StorageError::from);
        }
        let marker = marker_key(key);
        let mut listing = store.store.list(Some(key));
        while let Some(meta) = listing.try_next().await.map_err(storage_error)? {
            if meta.location != marker && meta.location != *key {
                return Err(StorageError::new(
                    StorageErrorKind::PermanentDirectoryNotEmpty,
                    "directory is not empty",
                ));
            }
        }
        delete_if_present(store, &marker).await?;
        if matches!(style, DirStyle::FolderBlobs) {
            // `marker` addressed our own folder blob `dir`; another tool's may
            // be the blob `dir/`.
            delete_if_present(store, &foreign_azure_marker(key)).await?;
        }
        Ok(())
    }

    /// Renames a directory: every object under it, up to `limit` objects.
    ///
    /// On `file://` this is one atomic rename of the directory. On clouds each
    /// object is copied then deleted (object stores have no rename), so the limit
    /// keeps one command from running unbounded; the check happens before any
    /// object is touched.
    pub(crate) async fn rename_dir(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        limit: usize,
    ) -> StorageResult<()> {
        let (store, style) = (&self.store, &self.style);
        if let DirStyle::Filesystem { fs, .. } = style {
            let src = fs.path_to_filesystem(from).map_err(storage_error)?;
            let dst = fs.path_to_filesystem(to).map_err(storage_error)?;
            if tokio::fs::metadata(&dst).await.is_ok() {
                return Err(StorageError::new(
                    StorageErrorKind::PermanentFileNotAvailable,
                    "target already exists",
                ));
            }
            if let Some(parent) = dst.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(StorageError::from)?;
            }
            return tokio::fs::rename(&src, &dst)
                .await
                .map_err(StorageError::from);
        }
        if self.stat(to).await.map_err(storage_error)?.is_some() {
            return Err(StorageError::new(
                StorageErrorKind::PermanentFileNotAvailable,
                "target already exists",
            ));
        }
        let mut objects = Vec::new();
        let own_marker = marker_key(from);
        let mut listed_own_marker = false;
        let mut listing = store.store.list(Some(from));
        while let Some(meta) = listing.try_next().await.map_err(storage_error)? {
            // The own marker `from/` may come back as `from/` or, slash
            // stripped, as `from`.
            listed_own_marker |= meta.location == own_marker || meta.location == *from;
            objects.push(meta);
            if objects.len() > limit {
                // libunftp words replies by kind alone ("Permission denied");
                // the reason reaches the operator through the audit log.
                return Err(StorageError::new(
                StorageErrorKind::PermissionDenied,
                format!("directory holds more than {limit} objects; renaming it is refused (raise storage.rename_limit)"),
            ));
            }
        }
        if !listed_own_marker {
            // Some stores leave the directory's own marker out of its listing.
            match store.store.head(&own_marker).await {
                Ok(meta) => objects.push(meta),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(storage_error(e)),
            }
        }
        for meta in objects {
            let source = meta.location;
            let target = retarget(&source, from, to)
                .map_err(|e| StorageError::new(StorageErrorKind::FileNameNotAllowedError, e))?;
            match store.store.copy(&source, &target).await {
                Ok(()) => store.store.delete(&source).await.map_err(storage_error)?,
                // Cloud listings strip a marker's trailing slash (`d/` lists as
                // `d`), so the listed key does not exist: move the marker itself.
                Err(object_store::Error::NotFound { .. })
                    if meta.size == 0 && !is_marker(&source) =>
                {
                    let (marker, new_marker) = (marker_key(&source), marker_key(&target));
                    store
                        .store
                        .copy(&marker, &new_marker)
                        .await
                        .map_err(storage_error)?;
                    store.store.delete(&marker).await.map_err(storage_error)?;
                }
                Err(e) => return Err(storage_error(e)),
            }
        }
        Ok(())
    }
}

/// `from/x/y` → `to/x/y`, keeping a marker's trailing slash.
///
/// An error, not a fallback, when the result is no valid key: every object
/// of the directory would otherwise be copied onto one key.
fn retarget(
    source: &ObjectPath,
    from: &ObjectPath,
    to: &ObjectPath,
) -> Result<ObjectPath, object_store::path::Error> {
    let rest = source
        .as_ref()
        .strip_prefix(from.as_ref())
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .ok_or_else(|| object_store::path::Error::PrefixMismatch {
            path: source.to_string(),
            prefix: from.to_string(),
        })?;
    let raw = format!("{}{}", to.as_ref(), rest);
    // `parse` strips a trailing slash, so build the marker form explicitly.
    Ok(match raw.strip_suffix('/') {
        Some(dir) => marker_key(&ObjectPath::parse(dir)?),
        None => ObjectPath::parse(&raw)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retarget_keeps_markers() {
        let from = ObjectPath::from("a/b");
        let to = ObjectPath::from("c");
        assert_eq!(
            retarget(&ObjectPath::from("a/b/x/y"), &from, &to)
                .unwrap()
                .as_ref(),
            "c/x/y"
        );
        assert_eq!(
            retarget(&marker_key(&ObjectPath::from("a/b/x")), &from, &to)
                .unwrap()
                .as_ref(),
            "c/x/"
        );
        assert_eq!(
            retarget(&marker_key(&from), &from, &to).unwrap().as_ref(),
            "c/"
        );
        // A key outside `from` is refused, never collapsed onto `to`.
        assert!(retarget(&ObjectPath::from("z/y"), &from, &to).is_err());
        assert!(retarget(&ObjectPath::from("a/bc"), &from, &to).is_err());
    }
}
