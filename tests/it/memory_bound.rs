//! Peak memory of a 1 GiB upload stays under part size × 4 + 50 MiB: the
//! gateway streams, it never holds a file. Measured on the real binary in
//! its own process (VmHWM from /proc), fed by a client that generates the
//! bytes on the fly.

use crate::common;

use std::process::Stdio;
use std::time::Duration;
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use tokio::io::AsyncWriteExt;

const PART_SIZE: u64 = 8 << 20;
const GIB: u64 = 1 << 30;

fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM value");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("probe port");
        l.local_addr().expect("addr").port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bucketftp"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--http",
            "off",
            "--storage",
            &format!("file://{}", root.display()),
            "--user",
            &format!("alice:{}", common::PASSWORD),
            "--passive-ports",
            "30000-30999",
        ])
        .env("BUCKETFTP__STORAGE__PART_SIZE", "8MiB")
        .env("BUCKETFTP__STORAGE__UPLOAD_CONCURRENCY", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start bucketftp");
    let pid = child.id().expect("pid");

    let mut ftp = None;
    for _ in 0..200 {
        if let Ok(c) = AsyncFtpStream::connect(("127.0.0.1", port)).await {
            ftp = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ftp = ftp.expect("gateway answers");
    ftp.login("alice", common::PASSWORD).await.expect("login");
    ftp.transfer_type(FileType::Binary).await.expect("TYPE I");
    let baseline = peak_rss_bytes(pid);

    let mut stream = ftp.put_with_stream("big/1GiB.bin").await.expect("STOR");
    let chunk = common::payload(1 << 20, 9);
    for _ in 0..(GIB >> 20) {
        stream.write_all(&chunk).await.expect("send");
    }
    stream.finish().await.expect("226 after a complete upload");
    let peak = peak_rss_bytes(pid);

    let size = std::fs::metadata(root.join("big/1GiB.bin"))
        .expect("object on disk")
        .len();
    assert_eq!(size, GIB);
    let bound = PART_SIZE * 4 + (50 << 20);
    eprintln!(
        "1 GiB STOR: peak RSS {} MiB (baseline {} MiB, bound {} MiB)",
        peak >> 20,
        baseline >> 20,
        bound >> 20
    );
    assert!(
        peak < bound,
        "peak RSS {peak} exceeds part size × 4 + 50 MiB = {bound}"
    );
    ftp.quit().await.ok();
    child.kill().await.ok();
}
