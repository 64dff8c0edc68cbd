//! Fuzz target bodies, shared by the libFuzzer binaries in `fuzz_targets/`
//! (`cargo +nightly fuzz run …`) and by the stable smoke run in
//! `tests/it/fuzz_smoke.rs`, which includes this file as a module.
//!
//! Each body takes arbitrary bytes and panics only when an invariant
//! breaks; a panic inside `bucketftp` itself is a finding as well.

use bucketftp::config::{from_toml, Config, MIN_PART_SIZE};
use bucketftp::paths::{
    climbs_above_root, normalize, Jail, PathError, MAX_KEY_BYTES, MAX_SEGMENT_BYTES,
};
use object_store::path::Path as ObjectPath;
use std::os::unix::ffi::OsStrExt;

/// Homes the path target jails its keys in, chosen by the first input byte:
/// the empty root, a plain home, and one whose names need verbatim keys.
const HOMES: [&str; 4] = ["/", "/users/alice", "/ünï cödé/100%/[x]", "/a/../b/./c"];

/// Store prefixes under which the homes live (a bucket prefix or none).
const BASES: [&str; 2] = ["", "tenant/ftp"];

/// FTP path → object key.
///
/// The first byte picks a jail, the rest is the path exactly as a client
/// could send it (not necessarily UTF-8). Checks that
/// - every key lies inside the jail root, is at most [`MAX_KEY_BYTES`]
///   long and parses back to itself;
/// - normalisation is idempotent, never climbs above the root, and keeps
///   only segments the stores can hold;
/// - the key and [`Jail::ftp_path`] agree with [`normalize`];
/// - the rest, used as a home, gives a jail inside its base.
pub fn path_to_key(data: &[u8]) {
    let (selector, raw) = data.split_first().map_or((0, data), |(s, r)| (*s, r));
    let base = ObjectPath::from(BASES[usize::from(selector >> 7)]);
    let home = HOMES[usize::from(selector & 0b11)];
    let jail = Jail::with_home(&base, home).expect("the fixed homes are valid");
    assert!(jail.root().prefix_matches(&base));

    let os_path = std::path::Path::new(std::ffi::OsStr::from_bytes(raw));
    let key = jail.key(os_path);
    let Ok(text) = std::str::from_utf8(raw) else {
        assert_eq!(key, Err(PathError::NotUtf8));
        return;
    };

    let normalized = normalize(text);
    match (&normalized, &key) {
        (Ok(segments), Ok(key)) => {
            check_segments(segments);
            check_key_in_jail(&jail, key);
            let expected = format!("/{}", segments.join("/"));
            assert_eq!(jail.ftp_path(key).as_deref(), Some(expected.as_str()));
            // The canonical spelling of the path names the same key.
            assert_eq!(jail.key(std::path::Path::new(&expected)).as_ref(), Ok(key));
        }
        (Ok(segments), Err(e)) => {
            check_segments(segments);
            assert_eq!(*e, PathError::KeyTooLong, "{text:?} normalises but {e}");
        }
        (Err(n), Err(k)) => assert_eq!(n, k),
        (Err(e), Ok(key)) => panic!("{text:?}: normalize refused ({e}) but key gave {key}"),
    }

    if let Ok(segments) = normalized {
        let joined = segments.join("/");
        assert_eq!(normalize(&joined).as_ref(), Ok(&segments), "not idempotent");
        assert_eq!(normalize(&format!("/{joined}/")).as_ref(), Ok(&segments));
        assert!(!climbs_above_root(&joined));
        // A path that never climbs above its start resolves the same way
        // one directory down: `climbs_above_root` and `normalize` agree.
        if !climbs_above_root(text) {
            let below = normalize(&format!("/d/{text}")).expect("same segments plus one");
            assert_eq!(below.split_first(), Some((&"d".to_string(), &segments[..])));
        }
    }

    // The same bytes as a user's home (config accepts any normalisable one).
    if let Ok(home_jail) = Jail::with_home(&base, text) {
        assert!(home_jail.root().prefix_matches(&base));
        if let Ok(key) = home_jail.key(std::path::Path::new("../../x")) {
            check_key_in_jail(&home_jail, &key);
        }
    }
}

/// Segments the stores can hold verbatim.
fn check_segments(segments: &[String]) {
    for s in segments {
        assert!(!s.is_empty() && s != "." && s != "..", "segment {s:?}");
        assert!(s.len() <= MAX_SEGMENT_BYTES);
        assert!(!s.contains(['/', '\\']), "segment {s:?}");
        assert!(!s.chars().any(|c| c.is_ascii_control()), "segment {s:?}");
    }
}

/// `key` is the jail root or lies beneath it, whole segments only.
fn check_key_in_jail(jail: &Jail, key: &ObjectPath) {
    let root = jail.root().as_ref();
    let k = key.as_ref();
    assert!(key.prefix_matches(jail.root()), "{k:?} outside {root:?}");
    assert!(k.starts_with(root), "{k:?} outside {root:?}");
    let rest = &k[root.len()..];
    assert!(
        root.is_empty() || rest.is_empty() || rest.starts_with('/'),
        "{k:?} is beside {root:?}, not under it"
    );
    assert!(k.len() <= MAX_KEY_BYTES);
    assert!(
        ObjectPath::parse(k).is_ok_and(|p| &p == key),
        "{k:?} does not parse back"
    );
}

/// Configuration text → validated config.
///
/// Any bytes (invalid UTF-8 replaced) go through [`from_toml`], which must
/// return, never panic; whatever it accepts must satisfy the guarantees the
/// rest of the server relies on.
pub fn config_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(config) = from_toml(&text) else {
        return;
    };
    check_config(&config);
    // Validation is a pure function of the text.
    let again = from_toml(&text).expect("accepted once, accepted twice");
    assert_eq!(format!("{config:?}"), format!("{again:?}"));
}

/// What a validated configuration promises.
fn check_config(c: &Config) {
    let s = &c.server;
    assert!(*s.passive_ports.start() >= 1 && s.passive_ports.start() <= s.passive_ports.end());
    assert!(!s.greeting.contains(['\r', '\n']));
    assert!(s.max_sessions >= 1 && s.max_sessions_per_ip >= 1);
    assert!(s.max_uploads.is_none_or(|n| n >= 1));
    let st = &c.storage;
    assert!(st.part_size as u64 >= MIN_PART_SIZE && st.part_size <= 5 << 30);
    assert!(st.upload_concurrency >= 1 && st.rename_limit >= 1);
    if let Some(tls) = &c.tls {
        assert!(tls.cert.is_file() && tls.key.is_file());
    }
    let mut names = std::collections::HashSet::new();
    for u in &c.users {
        assert!(!u.name.is_empty() && !u.name.contains([':', ' ', '\r', '\n']));
        assert!(names.insert(u.name.as_str()), "duplicate user {}", u.name);
        assert!(
            u.password_hash.starts_with('$'),
            "user {} has no PHC hash",
            u.name
        );
        Jail::with_home(&ObjectPath::ROOT, &u.home).expect("home was validated");
    }
}
