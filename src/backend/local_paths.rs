//! What a `file://` store can hold, checked before any file-system call.
//!
//! Replacing `name` on `file://` goes through a hidden `name#N` for a
//! moment (linked, then renamed over it: `crate::local_attributes`; where
//! that is unavailable, object_store's `LocalFileSystem` stages every write
//! the same way), `LocalFileSystem` hides names ending in `#` and digits,
//! and it follows symbolic links wherever they point. So on `file://` a
//! name must leave room for the `#N` suffix, must not look like one, and must
//! resolve (symlinks followed) to a place inside the store's root. Every
//! key the back-end uses on a local store passes [`check`] first; the
//! errors become FTP replies in `reply_codes`.
//!
//! A link planted between this check and the file-system call is not
//! caught: whoever can write links into the root already has the host's
//! file system.

use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use std::io::ErrorKind;
use std::path::Path;

/// Longest name on `file://`: 255 bytes (ext4, xfs, btrfs) minus room for
/// the `#N` suffix of object_store's staging file while it is written.
pub(crate) const MAX_LOCAL_NAME: usize = 250;

/// Why a key cannot be used on a local store.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LocalPathError {
    /// The name ends in `#` and digits, the pattern object_store reserves
    /// for its staging files (it would never list such a file).
    #[error(
        "file name {0:?} ends in '#' and digits, reserved by the local store for staging files"
    )]
    Reserved(String),
    /// A name is longer than [`MAX_LOCAL_NAME`].
    #[error("file name is longer than {MAX_LOCAL_NAME} bytes (the local store needs room for a '#N' suffix while writing)")]
    TooLong,
    /// The path, symbolic links followed, leads outside the store's root.
    #[error("path resolves outside the storage root")]
    OutsideRoot,
    /// The path could not be resolved (a symlink loop, no permission).
    #[error("cannot resolve path")]
    Resolve(#[source] std::io::Error),
    /// object_store refused to map the key to a file path.
    #[error("cannot map key to a file")]
    Map(#[source] object_store::Error),
}

/// Checks `key` against the rules above for the store rooted at `root`
/// (canonical, as `store_url` opens it).
pub(crate) async fn check(
    root: &Path,
    fs: &LocalFileSystem,
    key: &ObjectPath,
) -> Result<(), LocalPathError> {
    for part in key.parts() {
        let name = part.as_ref();
        if name.len() > MAX_LOCAL_NAME {
            return Err(LocalPathError::TooLong);
        }
    }
    if let Some(name) = key.filename() {
        if let Some((_, suffix)) = name.rsplit_once('#') {
            if !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) {
                return Err(LocalPathError::Reserved(name.to_string()));
            }
        }
    }
    if key.as_ref().is_empty() {
        // The root itself (object_store has no file path for it).
        return Ok(());
    }
    let path = fs.path_to_filesystem(key).map_err(LocalPathError::Map)?;
    // The deepest part of the path that exists decides where it leads: a
    // file or directory about to be created lands inside whatever its
    // nearest existing ancestor resolves to.
    let mut probe: &Path = &path;
    loop {
        match tokio::fs::canonicalize(probe).await {
            Ok(real) if real.starts_with(root) => return Ok(()),
            Ok(_) => return Err(LocalPathError::OutsideRoot),
            Err(e) if e.kind() == ErrorKind::NotFound => match probe.parent() {
                Some(parent) if parent.starts_with(root) => probe = parent,
                _ => return Err(LocalPathError::OutsideRoot),
            },
            Err(e) => return Err(LocalPathError::Resolve(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, std::path::PathBuf, LocalFileSystem) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let root = root.canonicalize().unwrap();
        let fs = LocalFileSystem::new_with_prefix(&root).unwrap();
        (dir, root, fs)
    }

    #[tokio::test]
    async fn names_and_links() {
        let (dir, root, fs) = store();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("file-link")).unwrap();
        std::fs::create_dir_all(root.join("inside")).unwrap();
        std::os::unix::fs::symlink(root.join("inside"), root.join("good-link")).unwrap();
        let key = |k: &str| ObjectPath::parse(k).unwrap();
        assert!(check(&root, &fs, &key("a/b/new.txt")).await.is_ok());
        let r = check(&root, &fs, &key("")).await;
        assert!(r.is_ok(), "{r:?}");
        assert!(check(&root, &fs, &key("good-link/x")).await.is_ok());
        for k in ["link", "link/secret", "link/new/deeper", "file-link"] {
            assert!(
                matches!(
                    check(&root, &fs, &key(k)).await,
                    Err(LocalPathError::OutsideRoot)
                ),
                "{k}"
            );
        }
        assert!(matches!(
            check(&root, &fs, &key("name#1")).await,
            Err(LocalPathError::Reserved(_))
        ));
        assert!(check(&root, &fs, &key("name#x")).await.is_ok());
        let long = "x".repeat(MAX_LOCAL_NAME + 1);
        assert!(matches!(
            check(&root, &fs, &key(&long)).await,
            Err(LocalPathError::TooLong)
        ));
        assert!(check(&root, &fs, &key(&"x".repeat(MAX_LOCAL_NAME)))
            .await
            .is_ok());
    }
}
