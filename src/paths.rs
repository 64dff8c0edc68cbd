//! FTP path → object key normalisation.
//!
//! Every path a client names goes through [`Jail::key`] before it reaches the
//! store. The jail resolves `.`, `..`, repeated and trailing `/` the way a
//! Unix shell would, but `..` can never climb above the user's home: the home
//! prefix is prepended *after* normalisation, so no input can produce a key
//! outside it. Names the stores cannot hold are refused with a typed error
//! (mapped to FTP 553) instead of being percent-encoded behind the user's back.

use object_store::path::{Path as ObjectPath, PathPart};
use thiserror::Error;

/// Longest single name we accept. 255 bytes is the limit of every common
/// local file system, so a name accepted here works on `file://` too.
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Longest full key we accept. S3 and GCS cap keys at 1024 bytes; Azure allows
/// more, but one limit for every back-end keeps behaviour portable.
pub const MAX_KEY_BYTES: usize = 1024;

/// Why a client path could not become an object key.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PathError {
    /// A segment holds a character no store keeps verbatim: control
    /// characters, or `\\`, which Azure Blob turns into `/` (so
    /// `..\\..\\x` would become a path with `..` segments there).
    #[error("file name {segment:?} contains a control character or a backslash")]
    IllegalCharacter {
        /// The offending segment.
        segment: String,
    },
    /// A single name is longer than [`MAX_SEGMENT_BYTES`].
    #[error("file name is longer than {MAX_SEGMENT_BYTES} bytes")]
    SegmentTooLong,
    /// The whole key is longer than [`MAX_KEY_BYTES`].
    #[error("path is longer than {MAX_KEY_BYTES} bytes")]
    KeyTooLong,
    /// The path is not valid UTF-8 (libunftp decodes lossily, so this is rare).
    #[error("path is not valid utf-8")]
    NotUtf8,
}

/// Normalises an FTP path into its segments, relative to the user's root.
///
/// `..` at the root stays at the root (like `cd ..` in `/`), so the result
/// never refers to anything above it. The result is idempotent: normalising
/// the joined output again yields the same segments.
pub fn normalize(ftp_path: &str) -> Result<Vec<String>, PathError> {
    let mut segments: Vec<String> = Vec::new();
    for segment in ftp_path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            name => {
                if name.len() > MAX_SEGMENT_BYTES {
                    return Err(PathError::SegmentTooLong);
                }
                if name.contains('\\') || PathPart::parse(name).is_err() {
                    return Err(PathError::IllegalCharacter {
                        segment: name.to_string(),
                    });
                }
                segments.push(name.to_string());
            }
        }
    }
    Ok(segments)
}

/// Whether an FTP path climbs above the root with `..` at some point.
///
/// Keys never do (see [`normalize`]), but libunftp keeps the session's
/// working directory as the raw joined path and shows it in `PWD`; refusing
/// such a `CWD` keeps `PWD` from ever showing a place above the home.
pub fn climbs_above_root(ftp_path: &str) -> bool {
    let mut depth = 0usize;
    for segment in ftp_path.split('/') {
        match segment {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

/// The part of a store a user may see: every key it hands out starts with
/// `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    root: ObjectPath,
}

impl Jail {
    /// A jail rooted at `root` (already a valid object path).
    pub fn new(root: ObjectPath) -> Self {
        Self { root }
    }

    /// A jail for `home` (an FTP-style path, normalised) beneath `base`.
    pub fn with_home(base: &ObjectPath, home: &str) -> Result<Self, PathError> {
        Ok(Self {
            root: extend(base, &normalize(home)?),
        })
    }

    /// The key of the user's `/`.
    pub fn root(&self) -> &ObjectPath {
        &self.root
    }

    /// Resolves an FTP path (as libunftp hands it: the session's cwd joined
    /// with the argument) to an object key inside the jail.
    pub fn key(&self, ftp_path: &std::path::Path) -> Result<ObjectPath, PathError> {
        let text = ftp_path.to_str().ok_or(PathError::NotUtf8)?;
        let key = extend(&self.root, &normalize(text)?);
        if key.as_ref().len() > MAX_KEY_BYTES {
            return Err(PathError::KeyTooLong);
        }
        Ok(key)
    }

    /// The FTP path (always absolute) that `key` has inside the jail, or
    /// `None` when the key lies outside it.
    pub fn ftp_path(&self, key: &ObjectPath) -> Option<String> {
        let rest = key.prefix_match(&self.root)?;
        let parts: Vec<String> = rest.map(|p| p.as_ref().to_string()).collect();
        Some(format!("/{}", parts.join("/")))
    }
}

/// Appends already-validated segments *verbatim*.
///
/// `Path::join` would percent-encode characters such as `%`, `#` or `[`,
/// so a file uploaded as `report[1].txt` would land under another name than
/// the one other tools see. [`normalize`] has checked every segment with
/// `PathPart::parse`, so the raw join is a valid path.
fn extend(base: &ObjectPath, segments: &[String]) -> ObjectPath {
    let mut raw = base.as_ref().to_string();
    for segment in segments {
        if !raw.is_empty() {
            raw.push('/');
        }
        raw.push_str(segment);
    }
    // Cannot fail: `base` is a valid path and every segment passed
    // `PathPart::parse`; fall back to the base (never outside the jail).
    ObjectPath::parse(&raw).unwrap_or_else(|_| base.clone())
}

/// The key of a directory marker for `dir`: the directory's key followed by
/// `/`, the convention of the S3 and GCS consoles, rclone and unftp-sbe-gcs.
///
/// `object_store::path::Path` strips trailing delimiters when parsing, so the
/// marker is built by joining an empty final part, which keeps the `/`.
pub fn marker_key(dir: &ObjectPath) -> ObjectPath {
    dir.clone().join("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn climbing_above_the_root_is_detected() {
        for p in ["..", "/..", "/a/../..", "../a", "/a/b/../../../c"] {
            assert!(climbs_above_root(p), "{p}");
        }
        for p in ["/", "/a/..", "a/b/../c", "./a/./..", "/a//b/../.."] {
            assert!(!climbs_above_root(p), "{p}");
        }
    }
    use proptest::prelude::*;
    use std::path::Path;

    fn jail() -> Jail {
        Jail::with_home(&ObjectPath::from("base"), "/users/alice").unwrap()
    }

    #[test]
    fn resolves_dots_and_slashes() {
        let j = jail();
        let k = |p: &str| j.key(Path::new(p)).unwrap().to_string();
        assert_eq!(k("/"), "base/users/alice");
        assert_eq!(k("a//b/./c/"), "base/users/alice/a/b/c");
        assert_eq!(k("/a/b/../c"), "base/users/alice/a/c");
        assert_eq!(k("../../../../etc/passwd"), "base/users/alice/etc/passwd");
        assert_eq!(k("/a/../../.."), "base/users/alice");
        assert_eq!(
            k("with space/ünï cödé/100%.txt"),
            "base/users/alice/with space/ünï cödé/100%.txt"
        );
        assert_eq!(k("report[1]#2.txt"), "base/users/alice/report[1]#2.txt");
    }

    #[test]
    fn refuses_unstorable_names() {
        let j = jail();
        assert!(matches!(
            j.key(Path::new("/a\nb")),
            Err(PathError::IllegalCharacter { .. })
        ));
        assert!(matches!(
            j.key(Path::new("/a\0b")),
            Err(PathError::IllegalCharacter { .. })
        ));
        assert!(matches!(
            j.key(Path::new("..\\..\\x")),
            Err(PathError::IllegalCharacter { .. })
        ));
        let long = "x".repeat(MAX_SEGMENT_BYTES + 1);
        assert_eq!(j.key(Path::new(&long)), Err(PathError::SegmentTooLong));
        let deep = vec!["y".repeat(200); 6].join("/");
        assert_eq!(j.key(Path::new(&deep)), Err(PathError::KeyTooLong));
    }

    #[test]
    fn marker_keeps_its_trailing_slash() {
        let dir = ObjectPath::from("a/b");
        assert_eq!(marker_key(&dir).as_ref(), "a/b/");
        assert_eq!(marker_key(&ObjectPath::ROOT).as_ref(), "");
    }

    #[test]
    fn ftp_path_round_trips() {
        let j = jail();
        let key = j.key(Path::new("/x/y")).unwrap();
        assert_eq!(j.ftp_path(&key).as_deref(), Some("/x/y"));
        assert_eq!(j.ftp_path(&ObjectPath::from("other/x")), None);
    }

    proptest! {
        #[test]
        fn never_escapes_home(parts in proptest::collection::vec("(\\.\\.|\\.|[a-z]{1,3}|/|%2e|\\.\\.\\.)", 0..12)) {
            let input = parts.join("/");
            let j = jail();
            if let Ok(key) = j.key(Path::new(&input)) {
                prop_assert!(key.prefix_matches(j.root()));
            }
        }

        #[test]
        fn normalisation_is_idempotent(input in "[a-z./ ]{0,40}") {
            if let Ok(once) = normalize(&input) {
                let twice = normalize(&once.join("/")).unwrap();
                prop_assert_eq!(once, twice);
            }
        }
    }
}
