//! `file://` uploads over plain TCP are spliced from the data socket into
//! their file (src/backend/spliced.rs, engine patch 0109): byte-exact
//! whatever the client's segments, with the digests every upload gets
//! (before the commit up to 1 MiB, after it above), and cut like every
//! other upload by a silent data connection. The ABOR, killed-client and
//! shutdown cases are the conformance suite's and the engine's, which run
//! on `file://` and so through this path; the metrics test checks that
//! plain-TCP uploads take it.

use crate::common;

use common::line_client::LineClient;
use common::{
    attributes, attributes_as_of, metadata, payload, Backend, Gateway, Options, PASSWORD,
};
use sha2::Digest;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn sha256(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

fn crc32(data: &[u8]) -> String {
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32IsoHdlc);
    digest.update(data);
    format!("{:08x}", digest.finalize() as u32)
}

/// `attributes` hold the SHA-256 and CRC-32 of `data`.
fn assert_digests(attributes: &object_store::Attributes, data: &[u8], name: &str) {
    let sha = sha256(data);
    assert_eq!(metadata(attributes, "sha256"), Some(sha.as_str()), "{name}");
    let crc = crc32(data);
    assert_eq!(metadata(attributes, "crc32"), Some(crc.as_str()), "{name}");
}

/// A session (`line_client`) with a passive data connection open and
/// `STOR path` answered 150: the test sends the file itself.
async fn stor(gw: &Gateway, path: &str) -> (LineClient, TcpStream) {
    let mut control = LineClient::connect(gw.addr).await;
    control.login("alice", PASSWORD).await;
    let data = control.data().await;
    let start = control.cmd(&format!("STOR {path}")).await;
    assert!(matches!(start.code, 125 | 150), "{}", start.text());
    (control, data)
}

/// A small upload is linked with its digests already set; a large one gets
/// them just after its 226. Both byte-exact; an empty file too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spliced_uploads_are_byte_exact_with_their_digests() {
    let gw = Gateway::start(Backend::Local).await.expect("local gateway");
    let mut ftp = gw.login("alice").await;
    for (name, size) in [
        ("empty.bin", 0),
        ("small.bin", 100_000),
        ("edge.bin", 1 << 20),
        ("large.bin", (24 << 20) + 1),
    ] {
        let data = payload(size, size as u64);
        ftp.put_file(name, &mut data.as_slice())
            .await
            .unwrap_or_else(|e| panic!("STOR {name}: {e}"));
        if size <= 1 << 20 {
            // Set before the link: visible with the file.
            let now = attributes_as_of(&gw, name, false).await;
            assert_digests(&now, &data, name);
        }
        assert_digests(&attributes(&gw, name).await, &data, name);
        assert_eq!(gw.object(name).await.as_deref(), Some(&data[..]), "{name}");
    }
    assert!(
        gw.local_leftovers().is_empty(),
        "{:?}",
        gw.local_leftovers()
    );
    ftp.quit().await.ok();
}

/// MFMT right after a large STOR (rclone and lftp mirror keep times so):
/// the time is set and the digests computed from the file still land (the
/// digest job stores nothing for a file written after its commit, so MFMT
/// waits for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfmt_right_after_a_large_stor_keeps_the_digests() {
    let gw = Gateway::start(Backend::Local).await.expect("local gateway");
    let mut ftp = gw.login("alice").await;
    let data = payload(6 << 20, 11);
    ftp.put_file("timed.bin", &mut data.as_slice())
        .await
        .expect("STOR");
    ftp.custom_command("MFMT 20200102030405 timed.bin", &[suppaftp::Status::File])
        .await
        .expect("MFMT");
    assert_digests(&attributes(&gw, "timed.bin").await, &data, "timed.bin");
    let modified = std::fs::metadata(gw.dir.path().join("root/timed.bin"))
        .and_then(|m| m.modified())
        .expect("mtime");
    assert_eq!(
        modified,
        std::time::UNIX_EPOCH + Duration::from_secs(1_577_934_245)
    );
    ftp.quit().await.ok();
}

/// A client that sends its file a few bytes per TCP segment (a pipe then
/// fills with tiny buffers long before it holds its size in bytes): still
/// byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_segments_arrive_whole() {
    let gw = Gateway::start(Backend::Local).await.expect("local gateway");
    let (mut control, mut data_conn) = stor(&gw, "trickle.bin").await;
    data_conn.set_nodelay(true).expect("TCP_NODELAY");
    let data = payload(4_000, 9);
    for (i, chunk) in data.chunks(3).enumerate() {
        data_conn.write_all(chunk).await.expect("send");
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    data_conn.shutdown().await.expect("FIN");
    drop(data_conn);
    assert_eq!(control.reply().await.code, 226);
    assert_eq!(gw.object("trickle.bin").await.as_deref(), Some(&data[..]));
}

/// A data connection that goes silent mid-file is cut after the idle
/// timeout: 4xx, no file, nothing left behind, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_spliced_upload_is_cut_and_leaves_nothing() {
    let gw = Gateway::start_with(
        Backend::Local,
        Options {
            idle_timeout: Some("2s".into()),
            ..Options::default()
        },
    )
    .await
    .expect("local gateway");
    let (mut control, mut data_conn) = stor(&gw, "silent.bin").await;
    data_conn
        .write_all(&payload(3 << 20, 4))
        .await
        .expect("send");
    // The data connection stays open, and silent.
    let cut = control.reply().await;
    assert!((400..500).contains(&cut.code), "{}", cut.text());
    drop(data_conn);
    gw.settle().await;
    assert_eq!(gw.object("silent.bin").await, None);
    assert!(gw.keys().await.is_empty(), "{:?}", gw.keys().await);
    assert!(
        gw.local_leftovers().is_empty(),
        "{:?}",
        gw.local_leftovers()
    );
    control.expect("NOOP", 200).await;
}
