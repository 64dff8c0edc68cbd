//! `rust-version` in Cargo.toml is a promise to people building with an
//! older toolchain: it must be at least the `rust-version` of every crate
//! Cargo.lock pins, or `cargo build` on that toolchain fails in a
//! dependency with an error that blames them, not us.

use std::path::PathBuf;

/// `1.89` / `1.89.0` → (1, 89, 0).
fn parse(version: &str) -> (u32, u32, u32) {
    let mut parts = version
        .trim()
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// The `rust-version` of a `[package]` section in a Cargo.toml.
fn rust_version_of(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if in_package {
            if let Some(rest) = line.strip_prefix("rust-version") {
                let value = rest.trim_start().strip_prefix('=')?.trim();
                return Some(value.trim_matches('"').to_string());
            }
        }
    }
    None
}

/// Where cargo unpacks registry crates (`$CARGO_HOME/registry/src/*/`).
fn registry_dirs() -> Vec<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    std::fs::read_dir(home.join("registry/src"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn rust_version_covers_every_locked_dependency() {
    let root = env!("CARGO_MANIFEST_DIR");
    let ours = rust_version_of(
        &std::fs::read_to_string(format!("{root}/Cargo.toml")).expect("Cargo.toml"),
    )
    .expect("Cargo.toml declares rust-version");
    let lock = std::fs::read_to_string(format!("{root}/Cargo.lock")).expect("Cargo.lock");
    let registries = registry_dirs();
    let (mut checked, mut newest) = (0, None::<((u32, u32, u32), String)>);
    for block in lock.split("[[package]]").skip(1) {
        let field = |name: &str| {
            block.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.trim_start().strip_prefix('='))
                    .map(|v| v.trim().trim_matches('"').to_string())
            })
        };
        let (Some(name), Some(version)) = (field("name"), field("version")) else {
            continue;
        };
        if !field("source").is_some_and(|s| s.starts_with("registry+")) {
            continue;
        }
        // Crates for other platforms are locked but never downloaded here.
        let Some(manifest) = registries
            .iter()
            .map(|r| r.join(format!("{name}-{version}/Cargo.toml")))
            .find(|p| p.is_file())
        else {
            continue;
        };
        checked += 1;
        let text = std::fs::read_to_string(&manifest).expect("read manifest");
        if let Some(theirs) = rust_version_of(&text) {
            let v = parse(&theirs);
            if newest.as_ref().is_none_or(|(n, _)| v > *n) {
                newest = Some((v, format!("{name} {version} (rust-version {theirs})")));
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} locked crates found unpacked under {registries:?}: build first"
    );
    let (needed, who) = newest.expect("some dependency declares rust-version");
    assert!(
        parse(&ours) >= needed,
        "Cargo.toml says rust-version = {ours:?}, but {who} needs newer"
    );
}
