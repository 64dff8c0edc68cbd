//! Integrity and events (issue #17), against a real gateway with real
//! clients: the SHA-256 stored with every upload (REST+STOR and APPE
//! included), `Content-Type` from the name, `SITE MD5` from curl, lftp and
//! ftplib, and the CloudEvents webhook — one event per committed upload,
//! none for a killed client, delivery after a receiver outage, drops
//! counted when the queue is full.

use crate::common;
use crate::common::programs;

use common::{attributes, metadata, payload, Backend, Gateway, Options, PASSWORD};
use object_store::Attribute;
use programs::{installed, run};
use sha2::Digest;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::Command;

fn sha256(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

fn md5(data: &[u8]) -> String {
    hex::encode(<md5::Md5 as md5::Digest>::digest(data))
}

/// STOR, then REST+STOR and APPE onto the same object: the stored SHA-256
/// always covers the whole object, and a `.jpg` is `image/jpeg`.
async fn digest_stored_with_every_upload(backend: Backend) {
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    let mut ftp = gw.login("alice").await;
    let first = payload(300_000, 1);
    ftp.put_file("photo.jpg", &mut first.as_slice())
        .await
        .expect("STOR");
    let a = attributes(&gw, "photo.jpg").await;
    assert_eq!(metadata(&a, "sha256"), Some(sha256(&first).as_str()));
    assert_eq!(
        a.get(&Attribute::ContentType).map(|v| v.as_ref()),
        Some("image/jpeg"),
        "{backend:?}"
    );

    // REST 100000 + STOR: the head is kept and hashed with the new bytes.
    let tail = payload(50_000, 2);
    ftp.resume_transfer(100_000).await.expect("REST");
    ftp.put_file("photo.jpg", &mut tail.as_slice())
        .await
        .expect("REST+STOR");
    let mut expected = first[..100_000].to_vec();
    expected.extend_from_slice(&tail);
    assert_eq!(gw.object("photo.jpg").await.as_deref(), Some(&expected[..]));
    let a = attributes(&gw, "photo.jpg").await;
    assert_eq!(metadata(&a, "sha256"), Some(sha256(&expected).as_str()));

    // APPE.
    let more = payload(70_000, 3);
    ftp.append_file("photo.jpg", &mut more.as_slice())
        .await
        .expect("APPE");
    expected.extend_from_slice(&more);
    let a = attributes(&gw, "photo.jpg").await;
    assert_eq!(metadata(&a, "sha256"), Some(sha256(&expected).as_str()));
    let crc = format!("{:08x}", crc_of(&expected));
    assert_eq!(metadata(&a, "crc32"), Some(crc.as_str()));
    ftp.quit().await.ok();
}

/// CRC-32 (ISO-HDLC), bitwise: independent of the gateway's implementation.
fn crc_of(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_stored_on_local() {
    digest_stored_with_every_upload(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_stored_on_memory() {
    digest_stored_with_every_upload(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_stored_on_s3() {
    digest_stored_with_every_upload(Backend::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_stored_on_azure() {
    digest_stored_with_every_upload(Backend::Azure).await;
}

/// A multipart upload gets its digest at completion — xattrs on `file://`,
/// a metadata update on S3 and Azure — readable with a HEAD alone, and
/// keeps its Content-Type.
async fn multipart_digest(backend: Backend) {
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    let mut ftp = gw.login("alice").await;
    let data = payload(11 * 1024 * 1024 + 12345, 4);
    ftp.put_file("big-photo.jpg", &mut data.as_slice())
        .await
        .expect("STOR");
    let a = attributes(&gw, "big-photo.jpg").await;
    assert_eq!(
        metadata(&a, "sha256"),
        Some(sha256(&data).as_str()),
        "{backend:?}"
    );
    assert_eq!(
        a.get(&Attribute::ContentType).map(|v| v.as_ref()),
        Some("image/jpeg"),
        "{backend:?}"
    );
    assert_eq!(gw.object("big-photo.jpg").await.as_deref(), Some(&data[..]));
    if backend == Backend::Local {
        // The xattr is on the file itself, for other tools to read.
        let file = gw.dir.path().join("root/big-photo.jpg");
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import os,sys; print(os.getxattr(sys.argv[1], 'user.bucketftp.sha256').decode())",
            ])
            .arg(&file)
            .output()
            .expect("python3");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), sha256(&data));
    }
    ftp.quit().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_digest_on_local() {
    multipart_digest(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_digest_on_s3() {
    multipart_digest(Backend::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_digest_on_azure() {
    multipart_digest(Backend::Azure).await;
}

/// `storage.content_type = "none"` leaves Content-Type alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_can_be_switched_off() {
    let opts = Options {
        storage_extra: "part_size = \"5MiB\"\ncontent_type = \"none\"\n".into(),
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(Backend::Local, opts).await else {
        return;
    };
    let mut ftp = gw.login("alice").await;
    ftp.put_file("a.jpg", &mut &b"x"[..]).await.expect("STOR");
    let a = attributes(&gw, "a.jpg").await;
    assert_eq!(a.get(&Attribute::ContentType), None);
    assert!(metadata(&a, "sha256").is_some());
    ftp.quit().await.ok();
}

/// `SITE MD5` from three real clients, over a multipart object.
async fn site_md5_from_clients(backend: Backend) {
    if !installed("curl") || !installed("lftp") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    let mut ftp = gw.login("alice").await;
    let data = payload(6 * 1024 * 1024 + 7, 5);
    ftp.put_file("dir/file one.bin", &mut data.as_slice())
        .await
        .expect("STOR");
    ftp.quit().await.ok();
    let want = md5(&data);
    let port = gw.addr.port().to_string();

    // curl -Q sends the command before the (listing) transfer; -v shows the reply.
    let url = format!("ftp://alice:{PASSWORD}@127.0.0.1:{port}/dir/");
    let (_, stderr) =
        run(Command::new("curl").args(["-sS", "-v", "-Q", "SITE MD5 /dir/file one.bin", &url]))
            .await;
    assert!(stderr.contains(&format!("< 213 {want}")), "curl: {stderr}");

    let (stdout, _) = run(Command::new("lftp").args([
        "-u",
        &format!("alice,{PASSWORD}"),
        "-p",
        &port,
        "-e",
        "set ftp:ssl-allow no; quote SITE MD5 \"dir/file one.bin\"; bye",
        "127.0.0.1",
    ]))
    .await;
    assert!(stdout.contains(&want), "lftp: {stdout}");

    let script = format!(
        "import ftplib; f = ftplib.FTP(); f.connect('127.0.0.1', {port}); f.login('alice', '{PASSWORD}'); print(f.sendcmd('SITE MD5 dir/file one.bin')); f.quit()"
    );
    let (stdout, _) = run(Command::new("python3").args(["-c", &script])).await;
    assert!(
        stdout.starts_with(&format!("213 {want}")),
        "ftplib: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_md5_on_local() {
    site_md5_from_clients(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_md5_on_s3() {
    site_md5_from_clients(Backend::S3).await;
}

// ---------------------------------------------------------------------
// Webhook events
// ---------------------------------------------------------------------

/// An event as received, with its `Authorization` header.
type Received = (serde_json::Value, Option<String>);

/// A local HTTP receiver that records every event it is sent.
struct Receiver {
    events: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(listener: tokio::net::TcpListener) -> Receiver {
        use axum::routing::post;
        let events: Arc<Mutex<Vec<Received>>> = Arc::default();
        let seen = events.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let seen = seen.clone();
                    async move {
                        assert_eq!(
                            headers.get("content-type").and_then(|v| v.to_str().ok()),
                            Some("application/cloudevents+json")
                        );
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let json: serde_json::Value =
                            serde_json::from_slice(&body).expect("event is JSON");
                        seen.lock().unwrap().push((json, auth));
                        "ok"
                    }
                },
            ),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver");
        });
        Receiver { events, task }
    }

    /// Waits until `n` events arrived (a hang fails after 60 s).
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..1200 {
            {
                let events = self.events.lock().unwrap();
                if events.len() >= n {
                    return events.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} events, got {:?}", self.events.lock().unwrap());
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn events_options(port: u16, extra: &str) -> Options {
    Options {
        sections: format!(
            "[events]\nwebhook_url = \"http://127.0.0.1:{port}/hook\"\nauth_value = \"Bearer hook-token\"\n{extra}\n"
        ),
        http: true,
        ..Options::default()
    }
}

/// Exactly one event per committed upload (STOR, APPE, REST+STOR), each
/// with the key, size and SHA-256 of the object as committed; none for a
/// client killed mid-upload.
async fn one_event_per_commit(backend: Backend) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = Receiver::start(listener).await;
    let Some(gw) = Gateway::start_with(backend, events_options(port, "")).await else {
        return;
    };
    let mut ftp = gw.login("alice").await;
    let first = payload(20_000, 10);
    ftp.put_file("cam/a.jpg", &mut first.as_slice())
        .await
        .expect("STOR");
    let more = payload(5_000, 11);
    ftp.append_file("cam/a.jpg", &mut more.as_slice())
        .await
        .expect("APPE");
    let tail = payload(9_000, 12);
    ftp.resume_transfer(10_000).await.expect("REST");
    ftp.put_file("cam/a.jpg", &mut tail.as_slice())
        .await
        .expect("REST+STOR");
    let mut after_appe = first.clone();
    after_appe.extend_from_slice(&more);
    let mut after_rest = first[..10_000].to_vec();
    after_rest.extend_from_slice(&tail);
    // Larger than a part: multipart, and on file:// its SHA-256 is computed
    // after the 226, so its event comes once that is done (in any order
    // with the events of the uploads after it).
    let big = payload(11 * 1024 * 1024 + 7, 14);
    ftp.put_file("cam/big.bin", &mut big.as_slice())
        .await
        .expect("STOR");

    // A client killed mid-upload commits nothing, so no event.
    let killed = gw.login("alice").await;
    common::stor_then_kill(killed, "cam/killed.bin", &payload(100_000, 13)).await;
    gw.settle().await;
    assert_eq!(gw.object("cam/killed.bin").await, None);
    // Events arrive in commit order, so once this one is in, any event for
    // the killed upload would be too.
    ftp.put_file("cam/sentinel.txt", &mut &b"done"[..])
        .await
        .expect("STOR");
    ftp.quit().await.ok();

    let events = receiver.wait_for(5).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // extra events would show here
    let mut events = {
        let all = receiver.events.lock().unwrap().clone();
        assert_eq!(
            all.len(),
            5,
            "exactly one event per committed upload: {all:?}"
        );
        assert_eq!(all.len(), events.len());
        all
    };
    let at = events
        .iter()
        .position(|(e, _)| e["subject"] == gw.key("cam/big.bin").as_ref())
        .expect("an event for the multipart upload");
    let (big_event, _) = events.remove(at);
    assert_eq!(big_event["data"]["size"], big.len() as u64);
    assert_eq!(big_event["data"]["sha256"], sha256(&big), "{backend:?}");
    assert_eq!(big_event["data"]["command"], "STOR");
    let expected: [(&str, &[u8], &str); 4] = [
        ("cam/a.jpg", &first, "STOR"),
        ("cam/a.jpg", &after_appe, "APPE"),
        ("cam/a.jpg", &after_rest, "APPE"),
        ("cam/sentinel.txt", b"done", "STOR"),
    ];
    for ((event, auth), (path, bytes, command)) in events.iter().zip(expected) {
        assert_eq!(auth.as_deref(), Some("Bearer hook-token"));
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["type"], "dev.bucketftp.object.created");
        assert_eq!(event["subject"], gw.key(path).as_ref());
        assert_eq!(event["data"]["key"], gw.key(path).as_ref());
        assert_eq!(event["data"]["size"], bytes.len() as u64);
        assert_eq!(event["data"]["sha256"], sha256(bytes));
        assert_eq!(event["data"]["user"], "alice");
        assert_eq!(event["data"]["command"], command);
        assert!(!event["data"]["store_url"]
            .as_str()
            .unwrap()
            .contains("testing"));
    }
    let ids: std::collections::HashSet<_> = events
        .iter()
        .chain([&(big_event, None)])
        .map(|(e, _)| e["id"].clone())
        .collect();
    assert_eq!(ids.len(), 5, "event ids are unique");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_per_commit_on_local() {
    one_event_per_commit(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_per_commit_on_s3() {
    one_event_per_commit(Backend::S3).await;
}

/// The receiver is down while files are uploaded: the uploads succeed,
/// and the events arrive, in order, once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_for_the_receiver() {
    if common::alone(module_path!(), "events_wait_for_the_receiver").await {
        return;
    }
    // Take a free port and close it: connections are refused until the
    // receiver starts on it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let Some(gw) = Gateway::start_with(Backend::Local, events_options(port, "")).await else {
        return;
    };
    let mut ftp = gw.login("alice").await;
    for name in ["1.txt", "2.txt", "3.txt"] {
        ftp.put_file(name, &mut name.as_bytes())
            .await
            .expect("uploads are unaffected by a dead receiver");
    }
    ftp.quit().await.ok();
    // Failed attempts are being counted while the receiver is down.
    let http = gw.http.expect("http");
    let mut failed = false;
    for _ in 0..600 {
        let (_, body) = common::http_get(http, "/metrics").await.expect("metrics");
        if metric(&body, "bucketftp_events_delivery_failures_total") >= 1.0 {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failed, "no failed delivery attempt was counted");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind the receiver's port");
    let receiver = Receiver::start(listener).await;
    let events = receiver.wait_for(3).await;
    let subjects: Vec<_> = events
        .iter()
        .map(|(e, _)| e["subject"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        subjects,
        ["1.txt", "2.txt", "3.txt"].map(|p| gw.key(p).to_string())
    );
}

/// A receiver that accepts connections and never answers, with a queue of
/// one: uploads still succeed and the events that find the queue full are
/// dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_drops_are_counted() {
    if common::alone(module_path!(), "full_queue_drops_are_counted").await {
        return;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // The receiver accepts and never answers: the first event stays in
    // delivery. Each accepted connection is reported, so the test knows
    // when the sender has taken that event off the queue.
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let hang = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            let _ = accepted_tx.send(());
        }
    });
    let Some(gw) = Gateway::start_with(
        Backend::Local,
        events_options(port, "queue_size = 1\ntimeout = \"5m\""),
    )
    .await
    else {
        return;
    };
    let http = gw.http.expect("http");
    let (_, before) = common::http_get(http, "/metrics").await.expect("metrics");
    let dropped_before = metric(
        &before,
        "bucketftp_events_dropped_total{reason=\"queue_full\"}",
    );
    let mut ftp = gw.login("alice").await;
    for i in 0..6 {
        ftp.put_file(&format!("f{i}.txt"), &mut &b"x"[..])
            .await
            .expect("uploads never wait for the webhook");
        if i == 0 {
            // Without this wait a busy machine could run all six uploads
            // before the sender takes the first event: one queued, five
            // dropped, nothing in delivery.
            accepted.recv().await.expect("the sender connects");
        }
    }
    ftp.quit().await.ok();
    let (_, after) = common::http_get(http, "/metrics").await.expect("metrics");
    // One event in delivery, one in the queue, the other four dropped.
    let dropped = metric(
        &after,
        "bucketftp_events_dropped_total{reason=\"queue_full\"}",
    );
    assert!(dropped - dropped_before >= 4.0, "{before}\n---\n{after}");
    assert!(
        metric(&after, "bucketftp_events_queue_depth") >= 2.0,
        "{after}"
    );
    hang.abort();
}

// ---------------------------------------------------------------------
// HASH, X*, OPTS HASH, MFMT (engine patch 0201-extension-commands)
// ---------------------------------------------------------------------

/// GETs of object bodies the gateway made on `backend` (the instrumented
/// store's `get` operation; HEADs are counted apart).
async fn body_gets(gw: &Gateway, backend: &str) -> f64 {
    let (_, text) = common::http_get(gw.http.expect("http"), "/metrics")
        .await
        .expect("metrics");
    text.lines()
        .filter(|l| l.starts_with("bucketftp_storage_operation_duration_seconds_count{"))
        .filter(|l| {
            l.contains(&format!("backend=\"{backend}\"")) && l.contains("operation=\"get\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// HASH (lftp, curl, ftplib), XSHA256 and XCRC of a multipart upload are
/// answered from the stored digests without a GET of the body; OPTS HASH
/// changes the algorithm (FEAT shows it) and MD5 is then computed by
/// reading the object.
async fn hash_from_clients(backend: Backend, label: &str) {
    if !installed("curl") || !installed("lftp") {
        return;
    }
    let opts = Options {
        http: true,
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(backend, opts).await else {
        return;
    };
    let data = payload(11 * 1024 * 1024 + 99, 21);
    let mut ftp = gw.login("alice").await;
    ftp.put_file("dir/big.bin", &mut data.as_slice())
        .await
        .expect("STOR");
    ftp.quit().await.ok();
    let (sha, size) = (sha256(&data), data.len());
    let port = gw.addr.port().to_string();
    let before = body_gets(&gw, label).await;

    let url = format!("ftp://alice:{PASSWORD}@127.0.0.1:{port}/dir/");
    // curl sends -Q commands right after the login, before its CWD.
    let (_, stderr) =
        run(Command::new("curl").args(["-sS", "-v", "-Q", "HASH dir/big.bin", &url])).await;
    assert!(
        stderr.contains(&format!("< 213 SHA-256 0-{size} {sha} dir/big.bin")),
        "curl: {stderr}"
    );
    let (stdout, _) = run(Command::new("lftp").args([
        "-u",
        &format!("alice,{PASSWORD}"),
        "-p",
        &port,
        "-e",
        "set ftp:ssl-allow no; quote HASH dir/big.bin; bye",
        "127.0.0.1",
    ]))
    .await;
    assert!(stdout.contains(&sha), "lftp: {stdout}");
    let crc = format!("{:08x}", crc_of(&data));
    let script = format!(
        "import ftplib\n\
         f = ftplib.FTP(); f.connect('127.0.0.1', {port}); f.login('alice', '{PASSWORD}')\n\
         f.cwd('dir')\n\
         print(f.sendcmd('XSHA256 big.bin'))\n\
         print(f.sendcmd('XCRC big.bin'))\n\
         print(f.sendcmd('HASH big.bin'))\n\
         f.quit()"
    );
    let (stdout, _) = run(Command::new("python3").args(["-c", &script])).await;
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            format!("250 {sha}"),
            format!("250 {crc}"),
            format!("213 SHA-256 0-{size} {sha} big.bin")
        ],
        "ftplib"
    );
    assert_eq!(
        body_gets(&gw, label).await,
        before,
        "stored digests are answered without reading the object"
    );

    // OPTS HASH switches the session to MD5; FEAT marks it; it is computed.
    let script = format!(
        "import ftplib\n\
         f = ftplib.FTP(); f.connect('127.0.0.1', {port}); f.login('alice', '{PASSWORD}')\n\
         print(f.sendcmd('OPTS HASH MD5'))\n\
         print([l.strip() for l in f.sendcmd('FEAT').splitlines() if 'HASH' in l or 'MFMT' in l])\n\
         print(f.sendcmd('HASH dir/big.bin'))\n\
         try:\n    f.sendcmd('OPTS HASH SHA-512')\nexcept ftplib.error_perm as e:\n    print(e)\n\
         try:\n    f.sendcmd('XSHA256 dir/missing.bin')\nexcept ftplib.error_perm as e:\n    print(str(e)[:3])\n\
         f.quit()"
    );
    let (stdout, _) = run(Command::new("python3").args(["-c", &script])).await;
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines[0], "200 MD5", "{stdout}");
    assert!(
        lines[1].contains("HASH SHA-256;SHA-1;MD5*;CRC32"),
        "{stdout}"
    );
    assert_eq!(
        lines[2],
        format!("213 MD5 0-{size} {} dir/big.bin", md5(&data)),
        "{stdout}"
    );
    assert!(lines[3].starts_with("504"), "{stdout}");
    assert_eq!(lines[4], "550", "{stdout}");
    assert!(
        body_gets(&gw, label).await > before,
        "MD5 was computed by reading"
    );
}

/// `storage.upload_sha256 = false`: uploads store CRC-32 only, the event
/// says `"sha256": null`, and HASH still answers the right SHA-256 by
/// reading the object back (as for objects other tools wrote).
async fn sha256_switched_off(backend: Backend, label: &str) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = Receiver::start(listener).await;
    let opts = Options {
        storage_extra: "part_size = \"5MiB\"\nupload_sha256 = false\n".into(),
        ..events_options(port, "")
    };
    let Some(gw) = Gateway::start_with(backend, opts).await else {
        return;
    };
    let data = payload(11 * 1024 * 1024 + 7, 31);
    let mut ftp = gw.login("alice").await;
    ftp.put_file("big.bin", &mut data.as_slice())
        .await
        .expect("STOR");
    let a = attributes(&gw, "big.bin").await;
    assert_eq!(metadata(&a, "sha256"), None, "no SHA-256 stored");
    let crc = format!("{:08x}", crc_of(&data));
    assert_eq!(metadata(&a, "crc32"), Some(crc.as_str()));

    let events = receiver.wait_for(1).await;
    assert_eq!(events[0].0["data"]["size"], data.len() as u64);
    assert!(events[0].0["data"]["sha256"].is_null(), "{:?}", events[0].0);

    let before = body_gets(&gw, label).await;
    let reply = ftp
        .custom_command("XCRC big.bin", &[suppaftp::Status::RequestedFileActionOk])
        .await
        .expect("XCRC");
    assert_eq!(
        String::from_utf8_lossy(&reply.body).trim(),
        format!("250 {crc}")
    );
    assert_eq!(body_gets(&gw, label).await, before, "CRC-32 is stored");
    let reply = ftp
        .custom_command(
            "XSHA256 big.bin",
            &[suppaftp::Status::RequestedFileActionOk],
        )
        .await
        .expect("XSHA256");
    assert_eq!(
        String::from_utf8_lossy(&reply.body).trim(),
        format!("250 {}", sha256(&data))
    );
    assert!(
        body_gets(&gw, label).await > before,
        "SHA-256 was computed by reading"
    );
    ftp.quit().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_switched_off_on_local() {
    if common::alone(module_path!(), "sha256_switched_off_on_local").await {
        return;
    }
    sha256_switched_off(Backend::Local, "file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_switched_off_on_s3() {
    if common::alone(module_path!(), "sha256_switched_off_on_s3").await {
        return;
    }
    sha256_switched_off(Backend::S3, "s3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_local() {
    if common::alone(module_path!(), "hash_on_local").await {
        return;
    }
    hash_from_clients(Backend::Local, "file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_s3() {
    if common::alone(module_path!(), "hash_on_s3").await {
        return;
    }
    hash_from_clients(Backend::S3, "s3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_azure() {
    if common::alone(module_path!(), "hash_on_azure").await {
        return;
    }
    hash_from_clients(Backend::Azure, "az").await;
}

/// S3 over https (moto serving TLS with a self-signed certificate, trusted
/// through `allow_invalid_certificates`): uploads go with `UNSIGNED-PAYLOAD`
/// there (src/store_url, unit test `s3_bodies_are_signed_over_http_only`)
/// and land byte-exact, small and multipart; the digest of the multipart
/// upload is written by the metadata client, which follows the store's TLS
/// options (it refused the certificate before, so XSHA256 read the object
/// back), and XSHA256 answers it without a GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_over_https_uploads_and_keeps_digests() {
    if common::alone(module_path!(), "s3_over_https_uploads_and_keeps_digests").await {
        return;
    }
    if !installed("moto_server") || !installed("curl") {
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let Some((cert, key)) = programs::self_signed_cert(certs.path()).await else {
        return;
    };
    let port = common::free_port();
    let mut moto = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .arg("-c")
        .arg(&cert)
        .arg("-k")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("moto_server");
    let endpoint = format!("https://127.0.0.1:{port}");
    let bucket = std::env::var("BUCKETFTP_TEST_S3_BUCKET").unwrap_or_else(|_| "bucketftp".into());
    let mut created = false;
    // moto imports for a few seconds, longer on a busy machine.
    for _ in 0..600 {
        let out = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
            .arg(format!("{endpoint}/{bucket}"))
            .output()
            .await
            .expect("curl");
        if String::from_utf8_lossy(&out.stdout) == "200" {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created, "moto over TLS did not come up on {endpoint}");
    let opts = Options {
        http: true,
        storage_options: vec![
            ("aws_endpoint".into(), endpoint.clone()),
            ("allow_invalid_certificates".into(), "true".into()),
        ],
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(Backend::S3, opts).await else {
        return;
    };
    let big = payload(11 * 1024 * 1024 + 7, 31);
    let mut ftp = gw.login("alice").await;
    ftp.put_file("big.bin", &mut big.as_slice())
        .await
        .expect("STOR big");
    ftp.put_file("small.txt", &mut &b"over tls"[..])
        .await
        .expect("STOR small");
    ftp.quit().await.ok();
    assert_eq!(gw.object("big.bin").await.as_deref(), Some(big.as_slice()));
    assert_eq!(
        gw.object("small.txt").await.as_deref(),
        Some(&b"over tls"[..])
    );

    let before = body_gets(&gw, "s3").await;
    let script = format!(
        "import ftplib\n\
         f = ftplib.FTP(); f.connect('127.0.0.1', {}); f.login('alice', '{PASSWORD}')\n\
         print(f.sendcmd('XSHA256 big.bin'))\n\
         f.quit()",
        gw.addr.port()
    );
    let (stdout, _) = run(Command::new("python3").args(["-c", &script])).await;
    assert_eq!(stdout.trim(), format!("250 {}", sha256(&big)));
    assert_eq!(
        body_gets(&gw, "s3").await,
        before,
        "the multipart upload's digest was stored over TLS"
    );
    drop(gw);
    let _ = moto.kill().await;
}

/// MFMT and the two-argument MDTM set a file's time on `file://`, and MDTM
/// and LIST report it (object stores: tests/it/modification_times.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfmt_sets_the_time_on_local() {
    let Some(gw) = Gateway::start(Backend::Local).await else {
        return;
    };
    let mut ftp = gw.login("alice").await;
    ftp.put_file("a.txt", &mut &b"abc"[..]).await.expect("STOR");
    let port = gw.addr.port();
    let script = format!(
        "import ftplib\n\
         f = ftplib.FTP(); f.connect('127.0.0.1', {port}); f.login('alice', '{PASSWORD}')\n\
         print(f.sendcmd('MFMT 20200102030405 a.txt'))\n\
         print(f.sendcmd('MDTM a.txt'))\n\
         print(f.sendcmd('MDTM 20210304050607 a.txt'))\n\
         print(f.sendcmd('MDTM a.txt'))\n\
         f.quit()"
    );
    let (stdout, _) = run(Command::new("python3").args(["-c", &script])).await;
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines[0], "213 Modify=20200102030405; a.txt", "{stdout}");
    assert_eq!(lines[1], "213 20200102030405", "{stdout}");
    assert!(
        lines[2].starts_with("213 Modify=20210304050607"),
        "{stdout}"
    );
    assert_eq!(lines[3], "213 20210304050607", "{stdout}");
    ftp.quit().await.ok();
}

/// The value of a metric line `name value` (0 when absent).
fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}
