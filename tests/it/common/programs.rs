//! Running the real client programs: finding them (or skipping loudly),
//! running them with a deadline, a throw-away certificate for FTPS, and
//! comparing directory trees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use tokio::process::Command;

/// Longest one client run may take before the test fails (a hang, not a
/// timing assertion).
const RUN_WAIT: Duration = Duration::from_secs(60);

/// Whether `program` is on `PATH`. When it is not, the test is skipped with
/// a loud message, or fails when `BUCKETFTP_REQUIRE_EMULATORS=1` (CI, where
/// `.ci/install.sh` installs every client).
pub fn installed(program: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(program)))
    });
    if !found {
        missing(program);
    }
    found
}

/// Like [`installed`] for a busybox applet (Debian's busybox has the FTP
/// applets; some minimal builds do not).
pub fn busybox_applet(applet: &str) -> bool {
    if !installed("busybox") {
        return false;
    }
    let listed = std::process::Command::new("busybox")
        .arg("--list")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == applet)
        })
        .unwrap_or(false);
    if !listed {
        missing(&format!("busybox {applet}"));
    }
    listed
}

fn missing(program: &str) {
    if std::env::var("BUCKETFTP_REQUIRE_EMULATORS").as_deref() == Ok("1") {
        panic!("{program} is not installed but BUCKETFTP_REQUIRE_EMULATORS=1: .ci/install.sh installs it");
    }
    eprintln!("\n*** SKIPPED: {program} is not installed (.ci/install.sh installs the test clients) ***\n");
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs a client to completion within [`RUN_WAIT`] and returns its output
/// whatever its exit status.
pub async fn output(cmd: &mut Command) -> Output {
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    let shown = format!("{:?}", cmd.as_std());
    let child = cmd.output();
    match tokio::time::timeout(RUN_WAIT, child).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot run {shown}: {e}"),
        Err(_) => panic!("{shown} did not finish within {RUN_WAIT:?}"),
    }
}

/// Runs a client that must succeed; returns its stdout and stderr.
pub async fn run(cmd: &mut Command) -> (String, String) {
    let shown = format!("{:?}", cmd.as_std());
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// A self-signed certificate and key for `127.0.0.1`, made with openssl
/// in `dir`; `None` (skipped) without openssl.
pub async fn self_signed_cert(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    if !installed("openssl") {
        return None;
    }
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-days", "2", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert))
    .await;
    Some((cert, key))
}

/// The TOML `[tls]` section for a test certificate, FTPS required for
/// everyone: a transfer that succeeds was encrypted.
pub fn tls_section(cert: &Path, key: &Path) -> String {
    format!(
        "[tls]\ncert = {:?}\nkey = {:?}\nrequired = \"all\"\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}

/// A directory tree as relative path → file bytes (`None` for a
/// directory), for byte-for-byte comparisons.
pub fn tree(root: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            if path.is_dir() {
                out.insert(rel, None);
                stack.push(path);
            } else {
                out.insert(rel, Some(std::fs::read(&path).expect("read file")));
            }
        }
    }
    out
}

/// Writes files (and empty directories, for paths ending in `/`) under
/// `root`.
pub fn write_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (rel, bytes) in files {
        let path = root.join(rel.trim_end_matches('/'));
        if rel.ends_with('/') {
            std::fs::create_dir_all(&path).expect("mkdir");
        } else {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, bytes).expect("write file");
        }
    }
}
