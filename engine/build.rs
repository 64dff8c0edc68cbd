//! Builds libunftp 0.24.0 with our patches.
//!
//! 1. Finds the pristine sources cargo downloaded for the pinned
//!    build-dependency (`$CARGO_HOME/registry/src/*/libunftp-0.24.0`, else
//!    wherever `cargo metadata` says, e.g. a vendor directory).
//! 2. Applies `patches/*.patch` in name order. A hunk may sit at other line
//!    numbers than the patch says (patches written side by side compose),
//!    but its context must match exactly; one that does not fails the build
//!    naming the patch, the file and the hunk.
//! 3. Writes the result to `$OUT_DIR/src`, each `mod x;` given the absolute
//!    `#[path]` of its file (`include!` would otherwise resolve modules
//!    relative to `engine/src/`) and the crate root's inner attributes and
//!    `//!` docs removed (not allowed inside `include!`).
//!
//! `BUCKETFTP_ENGINE_UNPATCHED=1` skips step 2: the pristine engine, to
//! measure the "before" column of docs/upstream.md.

use std::collections::BTreeMap;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The crate and version the patches are written against.
const UPSTREAM_NAME: &str = "libunftp";
const UPSTREAM_VERSION: &str = "0.24.0";

/// Set to `1` to build libunftp without our patches.
const UNPATCHED_ENV: &str = "BUCKETFTP_ENGINE_UNPATCHED";

fn main() {
    if let Err(message) = run() {
        eprintln!("error: libunftp-patched: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let patches_dir = manifest_dir.join("patches");
    println!("cargo::rerun-if-changed={}", patches_dir.display());
    println!("cargo::rerun-if-env-changed={UNPATCHED_ENV}");

    let upstream = locate_upstream(&manifest_dir)?;
    let mut files = read_sources(&upstream)?;

    if env::var(UNPATCHED_ENV).is_ok_and(|v| v == "1") {
        println!(
            "cargo::warning=building libunftp {UPSTREAM_VERSION} WITHOUT bucketftp's patches ({UNPATCHED_ENV}=1)"
        );
    } else {
        for patch in patch_files(&patches_dir)? {
            apply_patch(&patch, &mut files)?;
        }
    }

    let src_out = out_dir.join("src");
    if src_out.exists() {
        fs::remove_dir_all(&src_out)
            .map_err(|e| format!("cannot clear {}: {e}", src_out.display()))?;
    }
    for (rel, text) in &files {
        let mut text = rewrite_modules(rel, text, &files, &out_dir)?;
        if rel == "src/lib.rs" {
            text = strip_crate_root(&text);
        }
        let dest = out_dir.join(rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        fs::write(&dest, text).map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    }
    Ok(())
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("{name} is not set (run through cargo)"))
}

/// The root directory of the pristine crate (holding `Cargo.toml`, `src/`).
fn locate_upstream(manifest_dir: &Path) -> Result<PathBuf, String> {
    let dir_name = format!("{UPSTREAM_NAME}-{UPSTREAM_VERSION}");
    // Cargo itself uses $CARGO_HOME, else ~/.cargo.
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home {
        println!("cargo::rerun-if-env-changed=CARGO_HOME");
        if let Ok(registries) = fs::read_dir(home.join("registry").join("src")) {
            let mut candidates: Vec<PathBuf> = registries
                .filter_map(Result::ok)
                .map(|entry| entry.path().join(&dir_name))
                .filter(|dir| is_complete(dir))
                .collect();
            candidates.sort();
            if let Some(found) = candidates.into_iter().next() {
                return Ok(found);
            }
        }
    }
    // Vendored sources, another registry layout: ask cargo.
    from_cargo_metadata(manifest_dir)
}

/// Cargo writes `.cargo-ok` once a crate is fully unpacked.
fn is_complete(dir: &Path) -> bool {
    dir.join("src").join("lib.rs").is_file()
        && (dir.join(".cargo-ok").is_file() || dir.join(".cargo-checksum.json").is_file())
}

fn from_cargo_metadata(manifest_dir: &Path) -> Result<PathBuf, String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--manifest-path",
        ])
        .arg(manifest_dir.join("Cargo.toml"))
        .output()
        .map_err(|e| format!("cannot run `{cargo} metadata`: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "the sources of {UPSTREAM_NAME} {UPSTREAM_VERSION} are not in the cargo registry and `cargo metadata` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // The JSON holds one object per package; find ours without a JSON parser:
    // "name":"libunftp","version":"0.24.0",...,"manifest_path":"…/Cargo.toml"
    let json = String::from_utf8_lossy(&output.stdout);
    let needle = format!("\"name\":\"{UPSTREAM_NAME}\",\"version\":\"{UPSTREAM_VERSION}\"");
    let start = json.find(&needle).ok_or_else(|| {
        format!("`cargo metadata` does not list {UPSTREAM_NAME} {UPSTREAM_VERSION}")
    })?;
    let key = "\"manifest_path\":\"";
    let path_start = json[start..]
        .find(key)
        .map(|i| start + i + key.len())
        .ok_or_else(|| "`cargo metadata` gave no manifest_path".to_string())?;
    let path_end = json[path_start..]
        .find('"')
        .map(|i| path_start + i)
        .ok_or_else(|| "`cargo metadata` gave an unterminated manifest_path".to_string())?;
    let manifest = PathBuf::from(json[path_start..path_end].replace("\\\\", "\\"));
    manifest
        .parent()
        .filter(|dir| dir.join("src").join("lib.rs").is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("{} has no src/lib.rs", manifest.display()))
}

/// Every file under `src/`, keyed by its path relative to the crate root
/// with `/` separators (as patches name them).
fn read_sources(root: &Path) -> Result<BTreeMap<String, String>, String> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.join("src")];
    while let Some(dir) = pending.pop() {
        let entries =
            fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry
                .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
                .path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .map_err(|_| format!("{} is outside {}", path.display(), root.display()))?
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let text = fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            files.insert(rel, text);
        }
    }
    Ok(files)
}

/// `patches/*.patch`, in name order.
fn patch_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut patches: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "patch"))
        .collect();
    patches.sort();
    Ok(patches)
}

/// Applies one patch file (any number of files, `git diff` format: each
/// file's part starts at a `diff --git` line; text before the first one is
/// the patch's description).
fn apply_patch(patch: &Path, files: &mut BTreeMap<String, String>) -> Result<(), String> {
    let name = patch
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = fs::read_to_string(patch)
        .map_err(|e| format!("cannot read patch {}: {e}", patch.display()))?;
    let sections = split_sections(&text);
    if sections.is_empty() {
        return Err(format!("patch {name} holds no `diff --git` section"));
    }
    for section in sections {
        let (target, created) =
            section_target(section).map_err(|e| format!("patch {name}: {e}"))?;
        // diffy reads from the `--- ` line on; git's extended header lines
        // (index, new file mode) before it carry nothing it needs.
        let body = section
            .find("\n--- ")
            .map(|i| &section[i + 1..])
            .unwrap_or(section);
        let parsed = diffy::Patch::from_str(body)
            .map_err(|e| format!("patch {name}, file {target}: {e}"))?;
        let base = match (files.get(&target), created) {
            (Some(_), true) => {
                return Err(format!(
                    "patch {name} creates {target}, which exists already"
                ));
            }
            (Some(base), false) => base.as_str(),
            (None, true) => "",
            (None, false) => {
                return Err(format!(
                    "patch {name} changes {target}, which libunftp {UPSTREAM_VERSION} does not have"
                ));
            }
        };
        let patched = diffy::apply(base, &parsed).map_err(|e| {
            format!("patch {name} does not apply to {target}: {e} (its context no longer matches; see engine/README.md to refresh it)")
        })?;
        files.insert(target, patched);
    }
    Ok(())
}

/// The per-file parts of a `git diff`.
fn split_sections(text: &str) -> Vec<&str> {
    let mut starts: Vec<usize> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with("diff --git ") {
            starts.push(offset);
        }
        offset += line.len();
    }
    let mut sections = Vec::new();
    for (i, &start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        sections.push(trim_trailer(&text[start..end]));
    }
    sections
}

/// `git format-patch` ends with a `-- ` signature line; that is no hunk line.
fn trim_trailer(section: &str) -> &str {
    match section.find("\n-- \n") {
        Some(i) => &section[..i + 1],
        None => section,
    }
}

/// The file a section changes (relative to the crate root), and whether it
/// creates it.
fn section_target(section: &str) -> Result<(String, bool), String> {
    let mut old = None;
    let mut new = None;
    for line in section.lines() {
        if let Some(path) = line.strip_prefix("--- ") {
            old = Some(path.trim_end());
        } else if let Some(path) = line.strip_prefix("+++ ") {
            new = Some(path.trim_end());
            break;
        }
    }
    let (Some(old), Some(new)) = (old, new) else {
        return Err(
            "a section without `--- `/`+++ ` lines (renames and binary changes are not supported)"
                .into(),
        );
    };
    if new == "/dev/null" {
        return Err(format!("deleting {old} is not supported"));
    }
    let target = new.strip_prefix("b/").ok_or_else(|| {
        format!("`+++ {new}`: paths must start with b/ (git diff's default prefixes)")
    })?;
    if !target.starts_with("src/") {
        return Err(format!("{target} is not under src/"));
    }
    Ok((target.to_string(), old == "/dev/null"))
}

/// Gives every `mod x;` in `rel` the absolute path of its file in `out_dir`.
fn rewrite_modules(
    rel: &str,
    text: &str,
    files: &BTreeMap<String, String>,
    out_dir: &Path,
) -> Result<String, String> {
    // A module's children live next to it when it is a mod.rs/lib.rs, else
    // in a directory named after it (Rust 2018 layout).
    let (dir, file) = rel.rsplit_once('/').unwrap_or(("", rel));
    let children = match file {
        "lib.rs" | "mod.rs" => dir.to_string(),
        _ => format!("{dir}/{}", file.trim_end_matches(".rs")),
    };
    let mut out = String::with_capacity(text.len() + 1024);
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let Some(module) = declared_module(line) else {
            out.push_str(line);
            continue;
        };
        let candidates = [
            format!("{children}/{module}.rs"),
            format!("{children}/{module}/mod.rs"),
        ];
        let found = candidates
            .iter()
            .find(|c| files.contains_key(c.as_str()))
            .ok_or_else(|| {
                format!(
                    "{rel}:{}: no file for `mod {module};` (looked for {})",
                    number + 1,
                    candidates.join(", ")
                )
            })?;
        let path = out_dir.join(found);
        let path = path
            .to_str()
            .ok_or_else(|| format!("OUT_DIR {} is not UTF-8", out_dir.display()))?;
        let indent = &line[..line.len() - line.trim_start().len()];
        // `{:?}` of a str is a valid Rust string literal (quotes, backslashes escaped).
        let _ = write!(out, "{indent}#[path = {path:?}] {}", line.trim_start());
    }
    Ok(out)
}

/// `x` when the line is a file module declaration (`pub(crate) mod x;`).
fn declared_module(line: &str) -> Option<&str> {
    let mut rest = line.trim();
    // Attributes on the same line: `#[cfg(test)] mod tests;`.
    while rest.starts_with("#[") {
        rest = rest[rest.find(']')? + 1..].trim_start();
    }
    if let Some(after) = rest.strip_prefix("pub") {
        rest = after.trim_start();
        if rest.starts_with('(') {
            rest = rest[rest.find(')')? + 1..].trim_start();
        }
    }
    let name = rest.strip_prefix("mod ")?.trim().strip_suffix(';')?.trim();
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        .then_some(name)
}

/// The crate root without inner attributes and inner doc comments, which
/// `include!` does not allow (engine/src/lib.rs carries the crate's own).
fn strip_crate_root(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_attribute = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if in_attribute || trimmed.starts_with("#![") {
            in_attribute = !trimmed.trim_end().ends_with(']');
            continue;
        }
        if trimmed.starts_with("//!") {
            continue;
        }
        out.push_str(line);
    }
    out
}
