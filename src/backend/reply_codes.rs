//! The one table from `object_store` errors to FTP reply classes.
//!
//! libunftp chooses the reply code from a [`StorageErrorKind`]; choosing the
//! kind well is what lets a client tell "retry later" (4xx) from "give up"
//! (5xx). Every row has a unit test below.

use super::local_paths::LocalPathError;
use crate::paths::PathError;
use unftp_core::storage::{Error as StorageError, ErrorKind as StorageErrorKind};

/// The reply kind for an `object_store` failure.
///
/// Authentication and authorisation failures are the operator's problem, not
/// the client's: they answer 550 but are logged at error level as a
/// configuration problem so they are not mistaken for a missing file.
pub(crate) fn kind_for(err: &object_store::Error) -> StorageErrorKind {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => StorageErrorKind::PermanentFileNotAvailable,
        E::AlreadyExists { .. } | E::Precondition { .. } | E::NotModified { .. } => {
            StorageErrorKind::PermanentFileNotAvailable
        }
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            StorageErrorKind::PermissionDenied
        }
        E::InvalidPath { .. } => StorageErrorKind::FileNameNotAllowedError,
        E::NotSupported { .. } | E::NotImplemented { .. } => {
            StorageErrorKind::CommandNotImplemented
        }
        E::Generic { source, .. } => kind_for_source(source.as_ref()),
        E::JoinError { .. } | E::UnknownConfigurationKey { .. } => StorageErrorKind::LocalError,
        // `object_store::Error` is non-exhaustive: anything new is treated as a
        // transient local problem, which invites the client to retry.
        _ => StorageErrorKind::LocalError,
    }
}

/// Generic errors carry the cause from the back-end: an I/O error from the
/// local file system (disk full, permission) or an HTTP error that survived
/// object_store's retries (throttling, 5xx, timeouts). Only the local file
/// system tells us enough to pick a permanent class; everything else is worth
/// retrying.
fn kind_for_source(source: &(dyn std::error::Error + Send + Sync + 'static)) -> StorageErrorKind {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.raw_os_error() {
                Some(libc_enospc) if libc_enospc == ENOSPC || libc_enospc == EDQUOT => {
                    StorageErrorKind::InsufficientStorageSpaceError
                }
                Some(code) if code == EACCES || code == EPERM || code == EROFS => {
                    StorageErrorKind::PermissionDenied
                }
                _ => StorageErrorKind::LocalError,
            };
        }
        cause = err.source();
    }
    StorageErrorKind::LocalError
}

// errno values on Linux; the gateway targets Linux containers.
const EPERM: i32 = 1;
const EACCES: i32 = 13;
const ENOSPC: i32 = 28;
const EROFS: i32 = 30;
const EDQUOT: i32 = 122;

/// Wraps an `object_store` error for libunftp, keeping it as the source so
/// the log line shows the real cause.
pub(crate) fn storage_error(err: object_store::Error) -> StorageError {
    let kind = kind_for(&err);
    if matches!(
        err,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) {
        tracing::error!(cause = %err, "storage refused our credentials: check the storage configuration");
    }
    StorageError::new(kind, err)
}

/// A path the jail refused becomes 553 "file name not allowed".
pub(crate) fn path_error(err: PathError) -> StorageError {
    StorageError::new(StorageErrorKind::FileNameNotAllowedError, err)
}

/// A key a `file://` store cannot use: names it cannot hold are 553 (the
/// client should pick another name, not retry); a path leading outside the
/// root through a symbolic link is 550, as if nothing were there.
pub(crate) fn local_path_error(err: LocalPathError) -> StorageError {
    let kind = match &err {
        LocalPathError::Reserved(_) | LocalPathError::TooLong => {
            StorageErrorKind::FileNameNotAllowedError
        }
        LocalPathError::OutsideRoot | LocalPathError::Resolve(_) => {
            StorageErrorKind::PermanentFileNotAvailable
        }
        LocalPathError::Map(e) => kind_for(e),
    };
    if matches!(err, LocalPathError::OutsideRoot) {
        tracing::warn!("refused a path that resolves outside the file:// root (symbolic link)");
    }
    StorageError::new(kind, err)
}

/// The reply code libunftp sends for a storage error kind.
pub(crate) fn reply_code_of(kind: StorageErrorKind) -> u16 {
    match kind {
        StorageErrorKind::TransientFileNotAvailable => 450,
        StorageErrorKind::PermanentFileNotAvailable
        | StorageErrorKind::PermanentDirectoryNotAvailable
        | StorageErrorKind::PermanentDirectoryNotEmpty
        | StorageErrorKind::PermissionDenied => 550,
        StorageErrorKind::ConnectionClosed => 426,
        StorageErrorKind::LocalError => 451,
        StorageErrorKind::PageTypeUnknown => 551,
        StorageErrorKind::InsufficientStorageSpaceError => 452,
        StorageErrorKind::ExceededStorageAllocationError => 552,
        StorageErrorKind::FileNameNotAllowedError => 553,
        StorageErrorKind::CommandNotImplemented => 502,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::Error as E;

    fn generic(source: impl std::error::Error + Send + Sync + 'static) -> E {
        E::Generic {
            store: "test",
            source: Box::new(source),
        }
    }

    #[test]
    fn table() {
        let p = || "k".to_string();
        let boxed = || -> Box<dyn std::error::Error + Send + Sync> { "x".into() };
        let rows: Vec<(E, StorageErrorKind)> = vec![
            (
                E::NotFound {
                    path: p(),
                    source: boxed(),
                },
                StorageErrorKind::PermanentFileNotAvailable,
            ),
            (
                E::AlreadyExists {
                    path: p(),
                    source: boxed(),
                },
                StorageErrorKind::PermanentFileNotAvailable,
            ),
            (
                E::Precondition {
                    path: p(),
                    source: boxed(),
                },
                StorageErrorKind::PermanentFileNotAvailable,
            ),
            (
                E::NotModified {
                    path: p(),
                    source: boxed(),
                },
                StorageErrorKind::PermanentFileNotAvailable,
            ),
            (
                E::PermissionDenied {
                    path: p(),
                    source: boxed(),
                },
                StorageErrorKind::PermissionDenied,
            ),
            (
                E::Unauthenticated {
                    path: p(),
                    source: boxed(),
                },
                StorageErrorKind::PermissionDenied,
            ),
            (
                E::InvalidPath {
                    source: object_store::path::Error::EmptySegment { path: p() },
                },
                StorageErrorKind::FileNameNotAllowedError,
            ),
            (
                E::NotSupported { source: boxed() },
                StorageErrorKind::CommandNotImplemented,
            ),
            (
                E::NotImplemented {
                    operation: p(),
                    implementer: p(),
                },
                StorageErrorKind::CommandNotImplemented,
            ),
            (
                E::UnknownConfigurationKey {
                    store: "s3",
                    key: p(),
                },
                StorageErrorKind::LocalError,
            ),
            (
                generic(std::io::Error::from_raw_os_error(ENOSPC)),
                StorageErrorKind::InsufficientStorageSpaceError,
            ),
            (
                generic(std::io::Error::from_raw_os_error(EDQUOT)),
                StorageErrorKind::InsufficientStorageSpaceError,
            ),
            (
                generic(std::io::Error::from_raw_os_error(EACCES)),
                StorageErrorKind::PermissionDenied,
            ),
            (
                generic(std::io::Error::from_raw_os_error(EROFS)),
                StorageErrorKind::PermissionDenied,
            ),
            (
                generic(std::io::Error::other("connection reset")),
                StorageErrorKind::LocalError,
            ),
            (generic(std::fmt::Error), StorageErrorKind::LocalError),
        ];
        for (err, want) in rows {
            let shown = err.to_string();
            assert_eq!(kind_for(&err), want, "{shown}");
        }
    }

    #[test]
    fn io_error_found_below_a_wrapper() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapper")]
        struct Wrapper(#[source] std::io::Error);
        let err = generic(Wrapper(std::io::Error::from_raw_os_error(ENOSPC)));
        assert_eq!(
            kind_for(&err),
            StorageErrorKind::InsufficientStorageSpaceError
        );
    }

    #[test]
    fn local_path_rows() {
        let rows = [
            (
                LocalPathError::Reserved("a#1".into()),
                StorageErrorKind::FileNameNotAllowedError,
            ),
            (
                LocalPathError::TooLong,
                StorageErrorKind::FileNameNotAllowedError,
            ),
            (
                LocalPathError::OutsideRoot,
                StorageErrorKind::PermanentFileNotAvailable,
            ),
            (
                LocalPathError::Resolve(std::io::Error::from_raw_os_error(40)),
                StorageErrorKind::PermanentFileNotAvailable,
            ),
            (
                LocalPathError::Map(E::InvalidPath {
                    source: object_store::path::Error::EmptySegment { path: "k".into() },
                }),
                StorageErrorKind::FileNameNotAllowedError,
            ),
        ];
        for (err, want) in rows {
            let shown = err.to_string();
            assert_eq!(local_path_error(err).kind(), want, "{shown}");
        }
    }

    #[test]
    fn path_errors_are_553() {
        assert_eq!(
            path_error(PathError::SegmentTooLong).kind(),
            StorageErrorKind::FileNameNotAllowedError
        );
    }
}
