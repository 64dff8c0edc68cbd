//! Python's ftplib runs the README's session (STOR, RETR, LIST, QUIT)
//! against the gateway on `memory://` and `file://`; the bytes are then
//! checked in the store itself.

use crate::common;

use common::{payload, Backend, Gateway, PASSWORD};

async fn seed_example(backend: Backend) {
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    let data = payload(1 << 20, 42);
    let file = gw.dir.path().join("upload-source.txt");
    std::fs::write(&file, &data).expect("write source");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/clients/seed.py");
    let port = gw.addr.port().to_string();
    let out = tokio::process::Command::new("python3")
        .args([script, "127.0.0.1", &port, "alice", PASSWORD])
        .arg(&file)
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ftplib failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("seed example ok"), "{stdout}");
    assert!(
        stdout.contains("upload.txt"),
        "LIST shows the file: {stdout}"
    );
    assert!(gw.object("upload.txt").await.expect("object in the store") == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_example_on_memory() {
    seed_example(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_example_on_local_directory() {
    seed_example(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_example_on_s3() {
    seed_example(Backend::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_example_on_azure() {
    seed_example(Backend::Azure).await;
}
