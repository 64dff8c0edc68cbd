//! Attributes as extended attributes of a file: the names, the encoding,
//! and writing them through a descriptor so they land on the file just
//! committed (see the parent module for why).

use object_store::{Attribute, Attributes, PutResult, Result};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// xattr name prefix for user metadata.
const METADATA_PREFIX: &str = "user.bucketftp.";
/// The freedesktop.org shared-mime-info xattr for a file's MIME type.
const MIME_XATTR: &str = "user.mime_type";
/// Longest xattr value read back (digests, times and MIME types are short).
const MAX_VALUE: usize = 1024;

/// Attributes known only when a multipart upload completes (its digests),
/// passed to the store in `PutMultipartOptions::extensions` and filled just
/// before `complete()`. A store that cannot set attributes after the fact
/// ignores it.
#[derive(Debug, Clone, Default)]
pub(crate) struct CompletionAttributes(Arc<OnceLock<Attributes>>);

impl CompletionAttributes {
    /// Sets the attributes (once; later calls are ignored).
    pub(crate) fn set(&self, attributes: Attributes) {
        let _ = self.0.set(attributes);
    }

    /// The attributes, once set.
    pub(crate) fn get(&self) -> Option<&Attributes> {
        self.0.get()
    }
}

/// Runs blocking file-system work off the async threads, as
/// `LocalFileSystem` does.
pub(crate) async fn spawn_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        })
}

/// The xattr name for an attribute, or `None` for those a file has no place for.
fn xattr_name(attribute: &Attribute) -> Option<String> {
    match attribute {
        Attribute::ContentType => Some(MIME_XATTR.to_string()),
        Attribute::Metadata(key) => Some(format!("{METADATA_PREFIX}{key}")),
        _ => None,
    }
}

/// The attribute an xattr name stands for.
fn attribute_of(name: &str) -> Option<Attribute> {
    if name == MIME_XATTR {
        Some(Attribute::ContentType)
    } else {
        name.strip_prefix(METADATA_PREFIX)
            .filter(|key| !key.is_empty())
            .map(|key| Attribute::Metadata(key.to_string().into()))
    }
}

/// What a put answers for the file it wrote: its ETag as `LocalFileSystem`
/// would report it.
pub(crate) fn put_result(metadata: &std::fs::Metadata) -> PutResult {
    PutResult {
        e_tag: Some(local_etag(metadata)),
        version: None,
        extensions: Default::default(),
    }
}

/// The ETag `LocalFileSystem` gives a file (inode, mtime in µs, size).
pub(crate) fn local_etag(metadata: &std::fs::Metadata) -> String {
    let mtime = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("\"{:x}-{:x}-{:x}\"", metadata.ino(), mtime, metadata.len())
}

/// Writes `attributes` on the file committed at `path` with `etag`, and
/// returns that file, open, with its size; `None` when it is gone or was
/// replaced already.
pub(crate) fn write_xattrs(
    path: &std::path::Path,
    etag: Option<&str>,
    attributes: &Attributes,
    unsupported: &AtomicBool,
) -> Option<(File, u64)> {
    let Ok(file) = File::open(path) else {
        return None; // already deleted or replaced: nothing to label
    };
    let size = match (file.metadata(), etag) {
        (Ok(meta), Some(etag)) if local_etag(&meta) == etag => meta.len(),
        _ => {
            tracing::debug!(path = %path.display(), "file replaced before its attributes were written; skipped");
            return None;
        }
    };
    set_xattrs(&file, path, attributes, unsupported);
    Some((file, size))
}

/// The CRC-32 among `attributes` (what the upload computed from the bytes
/// it received).
pub(crate) fn stored_crc32(attributes: &Attributes) -> Option<String> {
    attributes
        .get(&Attribute::Metadata(crate::integrity::CRC32_KEY.into()))
        .map(|value| value.as_ref().to_string())
}

/// Writes `attributes` on the open `file` (`path` names it in the warning
/// if the file system refuses xattrs).
pub(crate) fn set_xattrs(
    file: &File,
    path: &std::path::Path,
    attributes: &Attributes,
    unsupported: &AtomicBool,
) {
    let names = attributes
        .iter()
        .filter_map(|(attribute, value)| Some((xattr_name(attribute)?, value.as_ref())));
    for (name, value) in names {
        if let Err(e) = rustix::fs::fsetxattr(
            file,
            name.as_str(),
            value.as_bytes(),
            rustix::fs::XattrFlags::empty(),
        ) {
            if !unsupported.swap(true, Ordering::Relaxed) {
                tracing::warn!(path = %path.display(), cause = %e, "this file system refuses extended attributes: checksums will be computed on demand");
            }
            return;
        }
    }
}

/// Reads the attributes kept on an open file.
pub(crate) fn read_xattrs(file: &File) -> Attributes {
    let mut attributes = Attributes::new();
    let mut list = vec![0u8; 4096];
    let Ok(len) = rustix::fs::flistxattr(file, &mut list[..]) else {
        return attributes;
    };
    for name in list[..len].split(|b| *b == 0) {
        let Some(attribute) = std::str::from_utf8(name).ok().and_then(attribute_of) else {
            continue;
        };
        let mut value = [0u8; MAX_VALUE];
        if let Ok(n) = rustix::fs::fgetxattr(file, name, &mut value) {
            if let Ok(text) = std::str::from_utf8(&value[..n]) {
                attributes.insert(attribute, text.to_string().into());
            }
        }
    }
    attributes
}

/// The attributes of a multipart upload: those known at its start plus
/// those set in [`CompletionAttributes`] before `complete()`.
pub(crate) fn merged_attributes(
    mut attributes: Attributes,
    late: Option<&CompletionAttributes>,
) -> Attributes {
    if let Some(late) = late.and_then(CompletionAttributes::get) {
        for (attribute, value) in late.iter() {
            attributes.insert(attribute.clone(), value.clone());
        }
    }
    attributes
}
