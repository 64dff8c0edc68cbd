//! `MFMT` (and `MDTM <time> <path>`): the client's modification time.
//!
//! On `file://` it is the file's own mtime, which MDTM, MLSD and LIST
//! report anyway. On object stores, whose own time is that of the upload and
//! cannot be set, it is kept as user metadata `mtime`, the convention rclone
//! uses, in the format rclone's back-end for that cloud writes, so `rclone`
//! reading the bucket directly sees the same times, and objects rclone
//! uploaded show rclone's times through FTP:
//!
//! | store   | metadata                                  | example                          |
//! |---------|-------------------------------------------|----------------------------------|
//! | S3      | `mtime`: seconds since the epoch, decimal | `1704164645.5`                   |
//! | Azure   | `mtime`: RFC 3339, 9 fraction digits      | `2024-01-02T03:04:05.500000000Z` |
//! | GCS     | `mtime`: RFC 3339; and gsutil's `goog-reserved-file-mtime` (whole seconds) | `2024-01-02T03:04:05.5Z`, `1704164645` |
//! | memory  | as S3                                     |                                  |
//!
//! Either `mtime` form is read on every store. The metadata is rewritten in
//! place without sending the body again ([`crate::cloud_attributes`]: S3
//! CopyObject onto itself, Azure Set Blob Metadata, GCS PATCH), keeping the
//! stored SHA-256/CRC-32, Content-Type and the rest; `memory://` puts the
//! same bytes back with the new attributes. An upload (STOR, APPE) writes a
//! new object without `mtime`: its time is then the upload's, as on a disk.
//!
//! Which time wins where: MDTM and MLST read one HEAD; listings read the
//! metadata of up to `storage.listing_mtime_limit` files per directory
//! ([`super::directories::Directories::apply_stored_mtimes`]), because no
//! store's listing API returns user metadata to object_store — except on
//! GCS, whose JSON API listing the gateway asks beside object_store's
//! ([`super::directories::Directories::listed_mtimes`]).

use super::directories::DirStyle;
use super::reply_codes::storage_error;
use crate::cloud_attributes::{Precondition, WriteError};
use crate::store_url::{OpenedStore, StoreKind};
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStoreExt, PutMode, PutOptions, UpdateVersion,
};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use unftp_core::storage::{Error as StorageError, ErrorKind as StorageErrorKind, Result};

/// The user metadata key rclone (and python-swiftclient) keep a file's
/// modification time under.
pub(crate) const MTIME_KEY: &str = "mtime";

/// gsutil's key on GCS: whole seconds since the epoch.
pub(crate) const GSUTIL_MTIME_KEY: &str = "goog-reserved-file-mtime";

/// S3 copies an object onto itself (its only way to change metadata) up to
/// this size; CopyObject refuses larger sources.
const S3_COPY_LIMIT: u64 = 5 << 30;

/// Nanoseconds since the epoch, negative before it.
fn epoch_nanos(when: SystemTime) -> i128 {
    match when.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    }
}

fn from_epoch_nanos(nanos: i128) -> Option<SystemTime> {
    let magnitude = Duration::new(
        u64::try_from(nanos.unsigned_abs() / 1_000_000_000).ok()?,
        (nanos.unsigned_abs() % 1_000_000_000) as u32,
    );
    if nanos >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

/// Seconds since the epoch as a decimal without exponent and without
/// trailing zeros (`1704164645`, `1704164645.5`): exact to the nanosecond,
/// which a float would not be.
fn decimal_seconds(when: SystemTime) -> String {
    let nanos = epoch_nanos(when);
    let sign = if nanos < 0 { "-" } else { "" };
    let (secs, frac) = (
        nanos.unsigned_abs() / 1_000_000_000,
        nanos.unsigned_abs() % 1_000_000_000,
    );
    if frac == 0 {
        format!("{sign}{secs}")
    } else {
        let digits = format!("{frac:09}");
        format!("{sign}{secs}.{}", digits.trim_end_matches('0'))
    }
}

fn parse_decimal_seconds(text: &str) -> Option<SystemTime> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Nanoseconds: the first nine fraction digits, zero-padded.
    let mut nanos_text: String = fraction.chars().take(9).collect();
    while nanos_text.len() < 9 {
        nanos_text.push('0');
    }
    let secs: i128 = whole.parse().ok()?;
    let nanos: i128 = nanos_text.parse().ok()?;
    let total = secs.checked_mul(1_000_000_000)?.checked_add(nanos)?;
    from_epoch_nanos(if negative { -total } else { total })
}

/// RFC 3339 in UTC with `digits` fraction digits, or as few as needed
/// (`None`: Go's RFC3339Nano, what rclone writes on GCS).
fn rfc3339(when: SystemTime, digits: Option<usize>) -> String {
    let time = chrono::DateTime::<chrono::Utc>::from(when);
    let base = time.format("%Y-%m-%dT%H:%M:%S").to_string();
    let fraction = format!("{:09}", time.timestamp_subsec_nanos());
    let fraction = match digits {
        Some(n) => fraction[..n.min(9)].to_string(),
        None => fraction.trim_end_matches('0').to_string(),
    };
    if fraction.is_empty() {
        format!("{base}Z")
    } else {
        format!("{base}.{fraction}Z")
    }
}

/// The metadata that records `when` on a store of `family` (`s3`, `az`,
/// `gs`, or anything else for the S3 form).
pub(crate) fn mtime_metadata(family: &str, when: SystemTime) -> Vec<(&'static str, String)> {
    match family {
        "az" => vec![(MTIME_KEY, rfc3339(when, Some(9)))],
        "gs" => vec![
            (MTIME_KEY, rfc3339(when, None)),
            (
                GSUTIL_MTIME_KEY,
                (epoch_nanos(when).div_euclid(1_000_000_000)).to_string(),
            ),
        ],
        _ => vec![(MTIME_KEY, decimal_seconds(when))],
    }
}

/// The client's modification time stored with an object, if any: `mtime`
/// in either rclone form, else gsutil's whole seconds.
pub(crate) fn stored_mtime(attributes: &Attributes) -> Option<SystemTime> {
    let value = |key: &str| {
        attributes
            .get(&Attribute::Metadata(key.to_string().into()))
            .map(|v| v.as_ref().trim().to_string())
    };
    if let Some(text) = value(MTIME_KEY) {
        let parsed = parse_decimal_seconds(&text).or_else(|| {
            chrono::DateTime::parse_from_rfc3339(&text)
                .ok()
                .map(SystemTime::from)
        });
        if parsed.is_some() {
            return parsed;
        }
    }
    value(GSUTIL_MTIME_KEY)
        .and_then(|text| text.parse::<i64>().ok())
        .and_then(|secs| from_epoch_nanos(i128::from(secs) * 1_000_000_000))
}

/// The object's ObjectMeta and attributes in one HEAD.
pub(crate) async fn head(
    store: &OpenedStore,
    key: &ObjectPath,
) -> object_store::Result<(object_store::ObjectMeta, Attributes)> {
    let result = store
        .store
        .get_opts(
            key,
            GetOptions {
                head: true,
                ..GetOptions::default()
            },
        )
        .await?;
    Ok((result.meta, result.attributes))
}

/// The reply for a failed metadata write.
fn write_error(err: WriteError) -> StorageError {
    let kind = if err.precondition_failed() || err.transient() {
        // Changed while we looked (a concurrent upload), or a hiccup: the
        // client may try again.
        StorageErrorKind::TransientFileNotAvailable
    } else {
        StorageErrorKind::PermanentFileNotAvailable
    };
    StorageError::new(kind, err)
}

fn not_a_file() -> StorageError {
    StorageError::new(StorageErrorKind::PermanentFileNotAvailable, "not a file")
}

/// Sets the modification time of the file at `key` (not the home: the
/// caller refuses that).
pub(super) async fn set(store: &OpenedStore, key: &ObjectPath, when: SystemTime) -> Result<()> {
    match &store.kind {
        StoreKind::Local { fs, xattrs, .. } => {
            // A file's digests computed after its upload are stored only if
            // it is unchanged (its mtime included) when they are known:
            // MFMT right after STOR (rclone, lftp mirror) waits for them.
            xattrs.settled(key).await;
            set_local(fs, key, when).await
        }
        StoreKind::Memory => set_in_memory(store, key, when).await,
        StoreKind::Cloud { .. } => set_in_cloud(store, key, when).await,
    }
}

/// `file://`: the file's own mtime.
async fn set_local(
    fs: &object_store::local::LocalFileSystem,
    key: &ObjectPath,
    when: SystemTime,
) -> Result<()> {
    let file = fs.path_to_filesystem(key).map_err(storage_error)?;
    tokio::task::spawn_blocking(move || {
        // Opened for appending: never truncates, and refuses directories.
        std::fs::File::options()
            .append(true)
            .open(&file)
            .and_then(|f| f.set_modified(when))
    })
    .await
    .map_err(|e| StorageError::new(StorageErrorKind::LocalError, e))?
    .map_err(|e| {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory => {
                StorageErrorKind::PermanentFileNotAvailable
            }
            std::io::ErrorKind::PermissionDenied => StorageErrorKind::PermissionDenied,
            _ => StorageErrorKind::LocalError,
        };
        StorageError::new(kind, e)
    })
}

/// `memory://`: the same bytes (shared, not copied) put back with the new
/// attributes, only if the object is still the one read.
async fn set_in_memory(store: &OpenedStore, key: &ObjectPath, when: SystemTime) -> Result<()> {
    let found = store.store.get(key).await.map_err(storage_error)?;
    let (meta, mut attributes) = (found.meta.clone(), found.attributes.clone());
    let bytes = found.bytes().await.map_err(storage_error)?;
    for (name, value) in mtime_metadata("memory", when) {
        attributes.insert(Attribute::Metadata(name.into()), value.into());
    }
    let options = PutOptions {
        mode: PutMode::Update(UpdateVersion {
            e_tag: meta.e_tag,
            version: meta.version,
        }),
        attributes,
        ..PutOptions::default()
    };
    match store.store.put_opts(key, bytes.into(), options).await {
        Ok(_) => Ok(()),
        Err(object_store::Error::Precondition { .. }) => Err(StorageError::new(
            StorageErrorKind::TransientFileNotAvailable,
            "the file changed while its time was being set",
        )),
        Err(e) => Err(storage_error(e)),
    }
}

/// Clouds: the metadata rewritten in place, conditional on the version the
/// HEAD saw.
async fn set_in_cloud(store: &OpenedStore, key: &ObjectPath, when: SystemTime) -> Result<()> {
    let Some(writer) = &store.metadata_writer else {
        return Err(StorageError::new(
            StorageErrorKind::CommandNotImplemented,
            "this store cannot set modification times",
        ));
    };
    let (meta, current) = head(store, key).await.map_err(storage_error)?;
    if super::directories::is_folder(&DirStyle::of(&store.kind), &meta, &current) {
        return Err(not_a_file());
    }
    let wanted = mtime_metadata(writer.family(), when);
    let unchanged = wanted.iter().all(|(name, value)| {
        current
            .get(&Attribute::Metadata((*name).into()))
            .is_some_and(|v| v.as_ref() == value)
    });
    if unchanged {
        return Ok(());
    }
    if writer.family() == "s3" && meta.size > S3_COPY_LIMIT {
        return Err(StorageError::new(
            StorageErrorKind::PermanentFileNotAvailable,
            "S3 changes metadata by copying the object onto itself, which it refuses above 5 GiB",
        ));
    }
    let mut attributes = if writer.replaces_all() {
        current
    } else {
        Attributes::new()
    };
    for (name, value) in wanted {
        attributes.insert(Attribute::Metadata(name.into()), value.into());
    }
    if attributes.get(&Attribute::StorageClass).is_none() {
        // REPLACE on S3 would move a cold object to STANDARD otherwise.
        if let Some(class) = writer.storage_class(key).await.map_err(write_error)? {
            attributes.insert(Attribute::StorageClass, class.into());
        }
    }
    let precondition = Precondition {
        e_tag: meta.e_tag,
        version: meta.version,
    };
    writer
        .replace(key, &precondition, &attributes)
        .await
        .map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, nanos: u32) -> SystemTime {
        from_epoch_nanos(i128::from(secs) * 1_000_000_000 + i128::from(nanos)).unwrap()
    }

    fn attributes(pairs: &[(&str, &str)]) -> Attributes {
        let mut a = Attributes::new();
        for (k, v) in pairs {
            a.insert(
                Attribute::Metadata(k.to_string().into()),
                v.to_string().into(),
            );
        }
        a
    }

    #[test]
    fn rclone_s3_form() {
        assert_eq!(decimal_seconds(at(1_704_164_645, 0)), "1704164645");
        assert_eq!(
            decimal_seconds(at(1_704_164_645, 500_000_000)),
            "1704164645.5"
        );
        assert_eq!(
            decimal_seconds(at(1_354_040_105, 123_456_789)),
            "1354040105.123456789"
        );
        assert_eq!(decimal_seconds(at(-1, 0)), "-1");
        for text in [
            "1704164645",
            "1704164645.5",
            "1354040105.123456789",
            "-86400.25",
            "0",
        ] {
            let parsed = parse_decimal_seconds(text).unwrap();
            assert_eq!(decimal_seconds(parsed), text);
        }
        // More than nine digits: truncated, as rclone reads them.
        assert_eq!(
            parse_decimal_seconds("1.1234567899"),
            Some(at(1, 123_456_789))
        );
        for bad in ["", ".5", "1e9", "12a", "1.2.3", "--1"] {
            assert_eq!(parse_decimal_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn rclone_azure_and_gcs_forms() {
        let t = at(1_704_164_645, 500_000_000);
        assert_eq!(
            mtime_metadata("az", t),
            [(MTIME_KEY, "2024-01-02T03:04:05.500000000Z".to_string())]
        );
        assert_eq!(
            mtime_metadata("gs", t),
            [
                (MTIME_KEY, "2024-01-02T03:04:05.5Z".to_string()),
                (GSUTIL_MTIME_KEY, "1704164645".to_string())
            ]
        );
        assert_eq!(
            mtime_metadata("s3", t),
            [(MTIME_KEY, "1704164645.5".to_string())]
        );
        assert_eq!(rfc3339(at(1_704_164_645, 0), None), "2024-01-02T03:04:05Z");
    }

    #[test]
    fn stored_times_in_every_form() {
        let t = at(1_704_164_645, 500_000_000);
        for value in [
            "1704164645.5",
            "2024-01-02T03:04:05.500000000Z",
            "2024-01-02T03:04:05.5Z",
            "2024-01-02T04:04:05.5+01:00",
        ] {
            assert_eq!(
                stored_mtime(&attributes(&[(MTIME_KEY, value)])),
                Some(t),
                "{value}"
            );
        }
        assert_eq!(
            stored_mtime(&attributes(&[(GSUTIL_MTIME_KEY, "1704164645")])),
            Some(at(1_704_164_645, 0))
        );
        // A malformed mtime falls back to gsutil's, then to nothing.
        assert_eq!(
            stored_mtime(&attributes(&[
                (MTIME_KEY, "yesterday"),
                (GSUTIL_MTIME_KEY, "7")
            ])),
            Some(at(7, 0))
        );
        assert_eq!(stored_mtime(&attributes(&[(MTIME_KEY, "yesterday")])), None);
        assert_eq!(stored_mtime(&Attributes::new()), None);
    }
}
