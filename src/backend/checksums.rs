//! Checksums of stored objects, for `SITE MD5` (and the HASH/X* commands of
//! the engine patches).
//!
//! One `head` first: an object the gateway wrote carries its SHA-256 and
//! CRC-32 as metadata ([`crate::integrity`]), so those answers cost one
//! request and never read the body, whatever the size. Other algorithms, and
//! objects written by other tools (or multipart uploads on a cloud, whose
//! metadata is fixed before the content is known), are computed by streaming
//! the object: counted as a download (so `server.max_uploads`-style limits,
//! shutdown and the in-flight metrics apply) and refused above
//! [`ON_DEMAND_LIMIT`].

use super::engine::BeginDownload;
use super::reply_codes::storage_error;
use crate::integrity::{self, Algorithm, DigestError};
use crate::local_attributes::AwaitDigest;
use crate::store_url::OpenedStore;
use object_store::path::Path as ObjectPath;
use object_store::GetOptions;
use unftp_core::storage::{Error as StorageError, ErrorKind as StorageErrorKind, Result};

/// Largest object whose checksum is computed by reading it (4 GiB: about
/// 8 s of MD5 on one core, longer from a cloud). Larger objects without a
/// stored value are refused with 550 rather than tie up a core and the
/// store for minutes per request.
pub(super) const ON_DEMAND_LIMIT: u64 = 4 << 30;

/// The `algorithm` digest (lowercase hex) of the object at `key`, and the
/// object's size; `begin` registers the download when the object must be
/// read.
pub(super) async fn checksum(
    store: &OpenedStore,
    key: &ObjectPath,
    algorithm: Algorithm,
    begin: &BeginDownload<'_>,
) -> Result<(String, u64)> {
    let store = &store.store;
    let mut options = GetOptions {
        head: true,
        ..GetOptions::default()
    };
    // On `file://` a large upload's SHA-256 may still be being computed.
    options.extensions.insert(AwaitDigest);
    let head = store.get_opts(key, options).await.map_err(storage_error)?;
    let size = head.meta.size;
    if let Some(value) = integrity::stored(&head.attributes, algorithm) {
        return Ok((value, size));
    }
    if size > ON_DEMAND_LIMIT {
        return Err(StorageError::new(
            StorageErrorKind::PermanentFileNotAvailable,
            DigestError::TooLarge {
                size,
                limit: ON_DEMAND_LIMIT,
            },
        ));
    }
    let guard = begin()?;
    let options = GetOptions {
        if_match: head.meta.e_tag.clone(),
        ..GetOptions::default()
    };
    let body = store
        .get_opts(key, options)
        .await
        .map_err(storage_error)?
        .into_stream();
    tokio::select! {
        _ = guard.cancelled() => Err(StorageError::new(
            StorageErrorKind::TransientFileNotAvailable,
            "server shutting down",
        )),
        digest = integrity::compute(algorithm, body) => digest
            .map(|digest| (digest, size))
            .map_err(|e| match e {
                DigestError::Read(source) => storage_error(source),
                other => StorageError::new(StorageErrorKind::LocalError, other),
            }),
    }
}
