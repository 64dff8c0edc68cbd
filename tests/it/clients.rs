//! The clients people and devices really use, driven against a real gateway:
//! Python's ftplib (FTPS, active mode), curl, lftp, busybox ftpput/ftpget,
//! rclone, wget, ftputil, tnftp, and scripted FileZilla- and WinSCP-like sessions, plus the
//! quirks of old embedded clients (bare `\n`, ALLO, `LIST -la`, slow
//! uploads, MKD of an existing directory).
//!
//! Every test checks the bytes that landed in the store itself, not only
//! the client's exit code. A missing client program is skipped loudly, or
//! fails under `BUCKETFTP_REQUIRE_EMULATORS=1` (CI, after `.ci/install.sh`).
//! `docs/clients.md` is the compatibility matrix these tests prove.
//!
//! Layout (under `tests/it/clients/`): `python_ftplib.rs`, `command_line.rs`
//! (curl, lftp, busybox, rclone), `listing_clients.rs` (wget -m, ftputil,
//! tnftp's mget) and `scripted.rs` (FileZilla/WinSCP-like
//! sessions and legacy quirks) hold the tests; `line_client.rs` is the raw
//! control-channel client, `programs.rs` finds and runs client programs;
//! the `.py` files are the Python sessions.

use crate::common;
use crate::common::line_client;
use crate::common::programs;

use common::{payload, Backend, Gateway, Options, Process, PASSWORD};
use line_client::LineClient;
use object_store::ObjectStoreExt;
use programs::{busybox_applet, installed, output, run, self_signed_cert, tls_section, tree};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Runs a test once per cheap back-end (`file://` and `memory://`), as
/// `test::on_local` and `test::on_memory`.
macro_rules! on_local_and_memory {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_local() {
                super::$test(super::Backend::Local).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_memory() {
                super::$test(super::Backend::Memory).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_s3() {
                super::$test(super::Backend::S3).await;
            }
        }
    )*};
}

mod command_line;
mod listing_clients;
mod python_ftplib;
mod scripted;

/// The object's bytes once every transfer has settled; panics with the
/// store's keys when it is missing.
async fn stored(gw: &Gateway, path: &str) -> Vec<u8> {
    gw.settle().await;
    match gw.object(path).await {
        Some(bytes) => bytes,
        None => panic!("no object {path:?}; keys: {:?}", gw.keys().await),
    }
}

/// A directory in the store: a real directory on `file://`, a `dir/`
/// marker object elsewhere.
async fn is_dir_in_store(gw: &Gateway, path: &str) -> bool {
    match gw.backend {
        Backend::Local => gw.dir.path().join("root").join(path).is_dir(),
        _ => gw.store.store.head(&gw.key(path).join("")).await.is_ok(),
    }
}

/// Keys that are files (not `dir/` markers).
async fn file_keys(gw: &Gateway) -> Vec<String> {
    use object_store::ObjectStoreExt;
    let mut files = Vec::new();
    for k in gw.keys().await {
        if k.ends_with('/') {
            continue;
        }
        // Cloud listings strip a folder marker's slash: `d/` lists as `d`.
        // (The file system has no markers, and resolves `d/` to `d`.)
        let marker = gw.key(&k).join("");
        if gw.backend != Backend::Local && gw.store.store.head(&marker).await.is_ok() {
            continue;
        }
        files.push(k);
    }
    files
}

/// A scratch path outside the store's root.
fn scratch(gw: &Gateway, name: &str) -> PathBuf {
    let dir = gw.dir.path().join("client");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

/// Writes `bytes` to a scratch file and returns its path.
fn scratch_file(gw: &Gateway, name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch(gw, name);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, bytes).expect("write scratch file");
    path
}

/// A gateway with FTPS required for everyone, or `None` (skipped).
async fn tls_gateway(backend: Backend, dir: &Path) -> Option<(Gateway, PathBuf)> {
    let (cert, key) = self_signed_cert(dir).await?;
    let gw = Gateway::start_with(
        backend,
        Options {
            sections: tls_section(&cert, &key),
            ..Options::default()
        },
    )
    .await?;
    Some((gw, cert))
}

/// `curl` logged in as alice, quiet but showing errors, with a deadline.
fn curl() -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "--user"])
        .arg(format!("alice:{PASSWORD}"));
    cmd
}

/// `ftp://127.0.0.1:PORT/path` (`path` already percent-encoded).
fn url(gw: &Gateway, path: &str) -> String {
    format!("ftp://127.0.0.1:{}/{path}", gw.addr.port())
}
