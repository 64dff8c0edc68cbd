//! Faults: the storage back-end vanishing mid-transfer and coming back,
//! clients cut at any point of an upload, a full disk and a read-only
//! directory. "Nothing lost" throughout: no partial object, no orphaned
//! multipart upload, no 226 for data that is not stored.

use crate::common;

use common::{
    code_of, payload, raw_stor, stor_then_kill, storage_for, Backend, Gateway, Options, PASSWORD,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy in front of the storage emulator that can be cut (every
/// connection dropped, new ones refused) and restored: the back-end dying
/// and coming back, as the gateway sees it.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    epoch: watch::Sender<u64>,
    /// Milliseconds to wait before forwarding each chunk towards the store.
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    /// Answer every request `503 Slow Down`, as S3 does when it throttles.
    throttle: Arc<AtomicBool>,
}

/// Reads one request head and answers S3's throttling reply.
async fn slow_down(mut client: TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body =
        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    let reply = format!(
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(reply.as_bytes()).await;
}

/// Copies `from` to `to`, waiting `delay_ms` before each chunk: a slow link.
async fn slow_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let (epoch, _) = watch::channel(0u64);
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let throttle = Arc::new(AtomicBool::new(false));
        let (up2, epoch2, delay2, throttle2) = (
            up.clone(),
            epoch.clone(),
            delay_ms.clone(),
            throttle.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                if throttle2.load(Ordering::SeqCst) {
                    tokio::spawn(slow_down(client));
                    continue;
                }
                let mut cut = epoch2.subscribe();
                let delay = delay2.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (cr, mut cw) = client.into_split();
                    let (mut sr, sw) = server.into_split();
                    tokio::select! {
                        _ = slow_copy(cr, sw, delay) => {}
                        _ = tokio::io::copy(&mut sr, &mut cw) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            up,
            epoch,
            delay_ms,
            throttle,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn emulator_list(args: &[&str]) -> String {
    common::emulator(args).1
}

/// A proxy in front of the S3 emulator, or `None` (skip) without one.
async fn s3_proxy() -> Option<Proxy> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, options) = storage_for(Backend::S3, dir.path(), "probe")?;
    let endpoint: SocketAddr = options["aws_endpoint"]
        .trim_start_matches("http://")
        .parse()
        .expect("emulator address");
    Some(Proxy::start(endpoint).await)
}

/// The S3 emulator behind a proxy we can cut; storage requests give up
/// after a few seconds of retrying.
async fn gateway_behind_proxy() -> Option<(Gateway, Proxy)> {
    let proxy = s3_proxy().await?;
    let gw = Gateway::start_with(
        Backend::S3,
        Options {
            // download_concurrency pinned: the outage test sizes its
            // download from it.
            storage_extra: "part_size = \"5MiB\"\nretry_max = 2\nretry_timeout = \"3s\"\ndownload_concurrency = 4\n".into(),
            storage_options: vec![("aws_endpoint".into(), format!("http://{}", proxy.addr))],
            ..Options::default()
        },
    )
    .await?;
    Some((gw, proxy))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_mid_transfer_then_recovery() {
    let Some((gw, proxy)) = gateway_behind_proxy().await else {
        return;
    };
    let prefix = gw.store.base.as_ref().to_string();
    // Larger than what parallel ranged GETs prefetch (4 parts of 5 MiB), so
    // the outage falls in the middle of the download.
    let big = payload(48 << 20, 31);
    let mut ftp = gw.login("alice").await;
    {
        let mut r = &big[..];
        ftp.put_file("existing.bin", &mut r)
            .await
            .expect("STOR before the outage");
    }
    let mut bystander = gw.login("alice").await;

    // Mid-STOR: 12 MiB in (a multipart upload is running), then the store goes.
    let mut upload = gw.login("alice").await;
    let mut stream = upload.put_with_stream("during.bin").await.expect("STOR");
    stream
        .write_all(&big[..12 << 20])
        .await
        .expect("first part");
    // Cut once the multipart upload exists at the store: a create whose
    // answer is lost in the cut leaves an upload the gateway never learned
    // about, which only the bucket's lifecycle rule can remove (see
    // docs/limitations.md); what is tested here is that every upload the
    // gateway knows of is aborted.
    for _ in 0..600 {
        if !emulator_list(&["uploads", "s3", &prefix]).trim().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.cut();
    let started = Instant::now();
    // The client keeps sending; the gateway must answer 4xx/5xx, not 226.
    let _ = stream.write_all(&big[12 << 20..]).await;
    let code = code_of(stream.finish().await);
    assert!(
        (400..600).contains(&code),
        "STOR during the outage answered {code}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "answer took {:?}",
        started.elapsed()
    );

    eprintln!(
        "STOR during outage answered {code} after {:?}",
        started.elapsed()
    );
    // Mid-RETR: the download stops with an error, not a silent short file.
    let mut dl = gw.login("alice").await;
    proxy.restore();
    let mut reader = dl.retr_as_stream("existing.bin").await.expect("RETR");
    let mut first = vec![0u8; 1 << 20];
    reader.read_exact(&mut first).await.expect("first MiB");
    proxy.cut();
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest).await;
    let received = first.len() + rest.len();
    if received < big.len() {
        // A short download must be reported as failed.
        let code = code_of(reader.finish().await);
        assert!((400..600).contains(&code), "RETR cut short answered {code}");
    } else {
        // Everything arrived before the cut: then it must be exact.
        reader.finish().await.expect("226 for a complete download");
        first.extend_from_slice(&rest);
        assert!(first == big, "a complete download with wrong bytes");
    }

    eprintln!("RETR cut handled");
    // LIST while the store is gone: a 4xx/5xx, within bounded time.
    let started = Instant::now();
    let list = bystander.list(None).await;
    assert!(list.is_err(), "LIST without a store succeeded: {list:?}");
    assert!(started.elapsed() < Duration::from_secs(60));
    eprintln!("LIST failed after {:?}", started.elapsed());
    // The control connection stays usable.
    bystander.noop().await.expect("NOOP during the outage");

    // The store comes back: the same gateway serves again, no restart.
    proxy.restore();
    let mut after = gw.login("alice").await;
    let mut r: &[u8] = b"after the outage";
    after
        .put_file("after.txt", &mut r)
        .await
        .expect("STOR after recovery");
    assert_eq!(
        gw.object("after.txt").await.as_deref(),
        Some(&b"after the outage"[..])
    );
    assert!(bystander.list(None).await.is_ok(), "LIST after recovery");

    // Nothing half-written: no object from the cut upload, and its
    // multipart upload is aborted once the store is reachable again.
    gw.settle().await;
    assert_eq!(gw.object("during.bin").await, None);
    let mut leftovers = String::new();
    // The failed abort is retried in the background (backoff up to 10 s).
    for _ in 0..300 {
        leftovers = emulator_list(&["uploads", "s3", &prefix]);
        if leftovers.trim().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        leftovers.trim().is_empty(),
        "multipart uploads left: {leftovers}"
    );
}

/// A client cut at 1 %, 50 % and 99 % of an upload leaves nothing, on the
/// local file system and on S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cut_at_any_point_leaves_nothing() {
    for backend in [Backend::Local, Backend::S3] {
        let Some(gw) = Gateway::start(backend).await else {
            continue;
        };
        let size = 12 << 20;
        let data = payload(size, 5);
        for percent in [1usize, 50, 99] {
            let name = format!("cut-{percent}.bin");
            stor_then_kill(
                gw.login("alice").await,
                &name,
                &data[..size * percent / 100],
            )
            .await;
            gw.settle().await;
            assert_eq!(
                gw.object(&name).await,
                None,
                "{backend:?} cut at {percent}%"
            );
        }
        assert!(
            gw.keys().await.is_empty(),
            "{backend:?}: {:?}",
            gw.keys().await
        );
        assert!(gw.local_leftovers().is_empty());
        if backend == Backend::S3 {
            let prefix = gw.store.base.as_ref().to_string();
            let uploads = emulator_list(&["uploads", "s3", &prefix]);
            assert!(
                uploads.trim().is_empty(),
                "multipart uploads left: {uploads}"
            );
        }
    }
}

/// A full disk and a directory the gateway may not write: clear 4xx/5xx
/// replies and nothing half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_and_read_only_directory() {
    let Some(gw) = Gateway::start(Backend::Local).await else {
        return;
    };
    let root = gw.dir.path().join("root");
    let mut ftp = gw.login("alice").await;

    // Read-only: an immutable directory refuses even root.
    ftp.mkdir("locked").await.expect("MKD");
    let locked = root.join("locked");
    let chattr = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&locked)
        .status();
    if matches!(chattr, Ok(s) if s.success()) {
        let mut r: &[u8] = b"denied";
        let code = code_of(ftp.put_file("locked/x.txt", &mut r).await);
        assert!(
            (400..600).contains(&code),
            "STOR into a read-only directory: {code}"
        );
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&locked)
            .status();
        assert!(!locked.join("x.txt").exists());
        assert!(
            gw.local_leftovers().is_empty(),
            "{:?}",
            gw.local_leftovers()
        );
    } else {
        eprintln!("\n*** SKIPPED read-only part: chattr +i not supported here ***\n");
    }

    // Disk full: a 4 MiB tmpfs under the root, and a 12 MiB upload into it.
    let small = root.join("small");
    std::fs::create_dir_all(&small).expect("mkdir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&small)
        .status();
    if !matches!(mounted, Ok(s) if s.success()) {
        eprintln!("\n*** SKIPPED disk-full part: cannot mount a tmpfs here ***\n");
        return;
    }
    let data = payload(12 << 20, 8);
    // Raw sockets: the gateway may close the data connection while data is
    // still in flight, which suppaftp reports instead of the reply.
    let code = raw_stor(gw.addr, "alice", PASSWORD, "small/big.bin", &data).await;
    let leftovers = gw.local_leftovers();
    let exists = small.join("big.bin").exists();
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert!(
        code == 452 || code == 552 || (400..600).contains(&code),
        "STOR on a full disk: {code}"
    );
    assert!(!exists, "a partial file was left on the full disk");
    assert!(leftovers.is_empty(), "staging files left: {leftovers:?}");
    // The gateway still serves.
    let mut ok: &[u8] = b"fine";
    ftp.put_file("fine.txt", &mut ok)
        .await
        .expect("STOR after disk full");
}

/// A slow back-end: an upload whose parts crawl to the store for longer
/// than the idle timeout is not cut, because the session is busy, not idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_storage_does_not_trip_the_idle_timeout() {
    let Some(proxy) = s3_proxy().await else {
        return;
    };
    let gw = Gateway::start_with(
        Backend::S3,
        Options {
            idle_timeout: Some("2s".into()),
            storage_options: vec![("aws_endpoint".into(), format!("http://{}", proxy.addr))],
            ..Options::default()
        },
    )
    .await
    .expect("gateway");
    proxy.delay_ms.store(50, Ordering::SeqCst);
    let data = payload(12 << 20, 77);
    let mut ftp = gw.login("alice").await;
    let started = Instant::now();
    let mut r = &data[..];
    ftp.put_file("slow.bin", &mut r)
        .await
        .expect("slow STOR completes");
    let took = started.elapsed();
    proxy.delay_ms.store(0, Ordering::SeqCst);
    assert!(
        took > Duration::from_secs(3),
        "the store was not slow enough ({took:?}) to prove anything"
    );
    assert!(gw.object("slow.bin").await.expect("stored") == data);
}

/// Throttling (503 Slow Down) is retried by object_store, then surfaces as a
/// 4xx the client may retry; once the store relents, the same gateway works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_surfaces_as_4xx_then_recovers() {
    let Some((gw, proxy)) = gateway_behind_proxy().await else {
        return;
    };
    let mut ftp = gw.login("alice").await;
    // Pooled connections would bypass the throttling accept path.
    proxy.cut();
    proxy.restore();
    proxy.throttle.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let mut r: &[u8] = b"throttled";
    let code = code_of(ftp.put_file("t.txt", &mut r).await);
    assert!(
        (400..500).contains(&code),
        "STOR while throttled answered {code}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    let list = ftp.list(None).await;
    assert!(list.is_err(), "LIST while throttled: {list:?}");
    proxy.throttle.store(false, Ordering::SeqCst);
    let mut r: &[u8] = b"relented";
    ftp.put_file("t.txt", &mut r)
        .await
        .expect("STOR after throttling");
    assert_eq!(gw.object("t.txt").await.as_deref(), Some(&b"relented"[..]));
}
