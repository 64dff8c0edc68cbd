//! The FTP engine's data-transfer behaviour, fixed by our libunftp patches
//! (engine/patches, docs/upstream.md): commands answered while a transfer
//! runs, ABOR and QUIT during transfers, the passive listener's life, and
//! FTPS on the data channel. Each test fails on unpatched libunftp 0.24.
//!
//! The sessions are Python's ftplib (`tests/it/engine/transfer_cases.py`), the
//! client scripts and devices use; raw sockets only where no client can
//! express the case (a stranger on a passive port, a busy port range, junk
//! instead of a TLS handshake, plaintext pipelined after `AUTH TLS`).

use crate::common;
use crate::common::line_client;
use crate::common::programs;

use common::{payload, Backend, Gateway, Options, PASSWORD};
use line_client::LineClient;
use programs::{installed, output, self_signed_cert, tls_section};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

/// Whether Python can import `module` (a client library installed by
/// `.ci/install.sh`); a missing one is skipped loudly, or fails under
/// `BUCKETFTP_REQUIRE_EMULATORS=1`.
fn python_module(module: &str) -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("BUCKETFTP_REQUIRE_EMULATORS").as_deref() == Ok("1") {
            panic!("Python module {module} is missing but BUCKETFTP_REQUIRE_EMULATORS=1: .ci/install.sh installs it");
        }
        eprintln!("\n*** SKIPPED: Python module {module} is not installed (.ci/install.sh) ***\n");
    }
    found
}

/// Runs one case of `tests/it/engine/transfer_cases.py`; returns its stdout,
/// failing the test with the whole transcript unless the case passed.
async fn case(gw: &Gateway, name: &str, args: &[&str]) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/engine/transfer_cases.py"
    );
    let out = output(
        Command::new("python3")
            .arg(script)
            .arg(name)
            .args(["127.0.0.1", &gw.addr.port().to_string(), "alice", PASSWORD])
            .args(args),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stdout.contains("case ok"),
        "case {name} {args:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    stdout
}

/// The object's bytes once the store has settled, or `None`.
async fn object(gw: &Gateway, path: &str) -> Option<Vec<u8>> {
    gw.settle().await;
    gw.object(path).await
}

/// A gateway with FTPS required for everyone and the CA file its clients
/// trust, or `None` (skipped without openssl).
async fn tls_gateway(dir: &Path, extra: &str) -> Option<(Gateway, PathBuf)> {
    let (cert, key) = self_signed_cert(dir).await?;
    let gw = Gateway::start_with(
        Backend::Local,
        Options {
            sections: format!("{}{extra}", tls_section(&cert, &key)),
            ..Options::default()
        },
    )
    .await?;
    Some((gw, cert))
}

// --- item 5: commands during transfers, ABOR, QUIT -------------------------

/// NOOP, PWD and STAT are answered while an upload's data connection is
/// still open (libunftp 0.24 held the session lock for the whole transfer).
async fn commands_during_an_upload(backend: Backend) {
    if !installed("python3") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    case(&gw, "during-upload", &["during.bin", "2000000"]).await;
    assert_eq!(
        object(&gw, "during.bin").await.map(|o| o.len()),
        Some(2_000_000)
    );
}

/// The same during a download the client reads slowly.
async fn commands_during_a_download(backend: Backend) {
    if !installed("python3") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    gw.put_object("big.bin", &payload(8 << 20, 5)).await;
    let out = case(&gw, "during-download", &["big.bin"]).await;
    assert!(out.contains(&format!("downloaded: {}", 8 << 20)), "{out}");
}

/// ABOR during an upload whose data connection stays open: `426` then
/// `226`, the session goes on, nothing is stored. In each wire form:
/// plain, ftplib's (the line as urgent data) and lftp's (Telnet IP + Synch).
async fn abor_stops_an_upload(backend: Backend) {
    if !installed("python3") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    for form in ["plain", "ftplib", "lftp"] {
        let name = format!("aborted-{form}.bin");
        case(&gw, "abort-upload", &[&name, form]).await;
        assert_eq!(
            object(&gw, &name).await,
            None,
            "ABOR ({form}) committed the upload"
        );
    }
}

/// ABOR during a download the client has stopped reading: `426` then
/// `226`, and the session goes on.
async fn abor_stops_a_download(backend: Backend) {
    if !installed("python3") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    gw.put_object("big.bin", &payload(32 << 20, 6)).await;
    for form in ["plain", "ftplib", "lftp"] {
        case(&gw, "abort-download", &["big.bin", form]).await;
    }
}

/// A client that closes the data connection and sends QUIT at once gets
/// `226` then `221`, and its upload is committed, every time.
async fn quit_right_after_an_upload(backend: Backend) {
    if !installed("python3") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    for i in 0..20 {
        let name = format!("quit-{i}.bin");
        case(&gw, "quit-after-upload", &[&name, "300000"]).await;
        assert_eq!(
            object(&gw, &name).await.map(|o| o.len()),
            Some(300_000),
            "upload {i} followed by QUIT was not committed"
        );
    }
}

/// QUIT sent while the data connection is still open: the upload goes on,
/// `226` then `221`, the object is complete.
async fn quit_during_an_upload(backend: Backend) {
    if !installed("python3") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    case(&gw, "quit-during-upload", &["quit-during.bin", "1000000"]).await;
    assert_eq!(
        object(&gw, "quit-during.bin").await.map(|o| o.len()),
        Some(1_000_000)
    );
}

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
        }
    )*};
}

on_local_and_memory!(
    commands_during_an_upload,
    commands_during_a_download,
    abor_stops_an_upload,
    abor_stops_a_download,
    quit_right_after_an_upload,
    quit_during_an_upload,
);

/// Against S3 (moto): an aborted multipart upload leaves nothing, a QUIT
/// right after an upload commits it.
mod on_s3 {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abor_stops_an_upload() {
        super::abor_stops_an_upload(Backend::S3).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quit_right_after_an_upload() {
        super::quit_right_after_an_upload(Backend::S3).await;
    }
}

// --- item 6: passive listeners ---------------------------------------------

/// A gateway whose passive range is `ports` wide, starting at a free port.
async fn gateway_with_passive_range(first: u16, ports: u16) -> Gateway {
    Gateway::start_with(
        Backend::Memory,
        Options {
            passive_ports: Some(format!("{first}-{}", first + ports - 1)),
            ..Options::default()
        },
    )
    .await
    .expect("memory gateway")
}

/// `count` consecutive free loopback ports (bound and released again),
/// between `from` (30000 or more) and the kernel's ephemeral range (32768 and up on Linux):
/// outgoing connections of tests running alongside take their local ports
/// from the ephemeral range, and the other gateways' passive ports are
/// 20000-29999, so nothing else lands in the range while the test owns it.
/// Each test searches from its own `from`, so two tests never pick the same run.
fn free_port_run(from: u16, count: u16) -> u16 {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut first = from;
    while first + count <= ephemeral {
        let busy = (first..first + count)
            .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        match busy {
            Some(port) => first = port + 1,
            None => return first,
        }
    }
    panic!("no run of {count} free ports between {from} and {ephemeral}");
}

/// PASV in a loop on a range of three ports: each PASV releases the
/// previous listener, so the session never runs the range dry and a second
/// session still gets a port; QUIT releases the last one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasv_in_a_loop_releases_earlier_listeners() {
    let first = free_port_run(30000, 3);
    let gw = gateway_with_passive_range(first, 3).await;
    let mut hoarder = LineClient::connect(gw.addr).await;
    hoarder.login("alice", PASSWORD).await;
    let mut last = None;
    for _ in 0..30 {
        let addr = hoarder.pasv().await;
        if let Some(earlier) = last.filter(|a| *a != addr) {
            assert!(
                TcpStream::connect(earlier).await.is_err(),
                "earlier passive listener {earlier} still accepts"
            );
        }
        last = Some(addr);
    }
    let mut other = LineClient::connect(gw.addr).await;
    other.login("alice", PASSWORD).await;
    other.upload("STOR other.bin", b"still room").await;
    hoarder.expect("QUIT", 221).await;
    let last = last.expect("a passive address");
    let released = async {
        while TcpStream::connect(last).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), released)
        .await
        .expect("the listener of a session that ended still accepts");
}

/// A stranger (another loopback address) connecting to a freshly announced
/// passive port neither takes the client's place nor ends its transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stranger_on_the_passive_port_is_ignored() {
    let gw = Gateway::start(Backend::Memory)
        .await
        .expect("memory gateway");
    let mut ftp = LineClient::connect(gw.addr).await;
    ftp.login("alice", PASSWORD).await;
    let addr = ftp.pasv().await;
    let stranger = tokio::net::TcpSocket::new_v4().expect("socket");
    stranger
        .bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind 127.0.0.2 (loopback alias)");
    let mut stranger = stranger.connect(addr).await.expect("stranger connects");
    // The stranger's connection is closed without a byte.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stranger.read(&mut buf))
        .await
        .expect("stranger's connection closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let mut data = TcpStream::connect(addr).await.expect("client connects");
    let start = ftp.cmd("STOR mine.bin").await;
    assert_eq!(start.code, 150, "{}", ftp.transcript.join("\n"));
    data.write_all(b"the client's data").await.expect("write");
    data.shutdown().await.expect("close");
    drop(data);
    let done = ftp.reply().await;
    assert_eq!(done.code, 226, "{}", ftp.transcript.join("\n"));
    assert_eq!(
        object(&gw, "mine.bin").await.as_deref(),
        Some(&b"the client's data"[..])
    );
}

/// Occupies every port of `first..first+count` except `spare` with a
/// listener (bound with SO_REUSEADDR, as the gateway binds its own).
fn occupy(first: u16, count: u16, spare: Option<u16>) -> Vec<socket2::Socket> {
    (first..first + count)
        .filter(|p| Some(*p) != spare)
        .map(|port| {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            socket.set_reuse_address(true).expect("SO_REUSEADDR");
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            socket.bind(&addr.into()).expect("bind");
            socket.listen(1).expect("listen");
            socket
        })
        .collect()
}

/// A busy range is scanned, not sampled: with all ports but one taken,
/// every PASV finds that one; with none free, PASV answers 425 and the
/// session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_passive_range_is_scanned() {
    let first = free_port_run(30100, 40);
    let gw = gateway_with_passive_range(first, 40).await;
    let spare = first + 23;
    let taken = occupy(first, 40, Some(spare));
    let mut ftp = LineClient::connect(gw.addr).await;
    ftp.login("alice", PASSWORD).await;
    for _ in 0..5 {
        let addr = ftp.pasv().await;
        assert_eq!(addr.port(), spare, "{}", ftp.transcript.join("\n"));
    }
    ftp.expect("QUIT", 221).await;
    drop(taken);

    let all = occupy(first, 40, None);
    let mut ftp = LineClient::connect(gw.addr).await;
    ftp.login("alice", PASSWORD).await;
    ftp.expect("PASV", 425).await;
    ftp.expect("EPSV", 425).await;
    ftp.expect("NOOP", 200).await;
    drop(all);
    ftp.upload("STOR after.bin", b"a port is free again").await;
    ftp.expect("QUIT", 221).await;
}

// --- item 8: FTPS ------------------------------------------------------------

/// Python's stock `FTP_TLS.storbinary` (it waits for the server's
/// close_notify) works unchanged, over TLS 1.3 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_ftplib_storbinary_over_tls() {
    if !installed("python3") {
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let Some((gw, cert)) = tls_gateway(certs.path(), "").await else {
        return;
    };
    let ca = cert.display().to_string();
    case(
        &gw,
        "tls-storbinary",
        &["--tls", &ca, "stock.bin", "300000"],
    )
    .await;
    let out = case(
        &gw,
        "tls-storbinary",
        &["--tls", &ca, "--tls13", "stock13.bin", "300000"],
    )
    .await;
    assert!(out.contains("control channel: TLSv1.3"), "{out}");
    assert_eq!(
        object(&gw, "stock13.bin").await.map(|o| o.len()),
        Some(299_776)
    );
}

/// TLS 1.3 data connections carry no session tickets (the control
/// connection does). An uploading client that closed its data connection with
/// a ticket unread made its kernel answer with a reset, and the gateway lost
/// the part of the upload it had not read yet: curl's `ftps://` uploads got
/// 426 now and then on a busy machine (13 of 240 in 4 parallel loops).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_data_connections_carry_no_session_tickets() {
    if !installed("python3") {
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let Some((gw, cert)) = tls_gateway(certs.path(), "").await else {
        return;
    };
    let ca = cert.display().to_string();
    let out = case(
        &gw,
        "tls-data-tickets",
        &["--tls", &ca, "--tls13", "tickets.bin"],
    )
    .await;
    assert!(out.contains("data ticket: False"), "{out}");
    assert!(out.contains("control ticket: True"), "{out}");
}

/// A data connection that never starts its TLS handshake is given up after
/// the handshake deadline (30 s): the data command is answered 425 and the
/// session goes on (libunftp 0.24 waited for ever, holding the session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_data_tls_handshake_is_a_425() {
    if !installed("python3") {
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let Some((gw, cert)) = tls_gateway(certs.path(), "").await else {
        return;
    };
    let ca = cert.display().to_string();
    case(&gw, "data-tls-stall", &["--tls", &ca, "stalled.bin"]).await;
    assert_eq!(object(&gw, "stalled.bin").await, None);
}

/// aioftp completes a data connection's TLS handshake before it sends the
/// data command (explicit FTPS after AUTH TLS, and implicit FTPS); libunftp
/// 0.24 started the handshake only after the command, and the transfer hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioftp_handshakes_before_the_data_command() {
    if !installed("python3") || !python_module("aioftp") {
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let Some((cert, key)) = self_signed_cert(certs.path()).await else {
        return;
    };
    let gw = Gateway::start_with(
        Backend::Local,
        Options {
            sections: format!(
                "{}implicit_listen = \"127.0.0.1:0\"\n",
                tls_section(&cert, &key)
            ),
            ..Options::default()
        },
    )
    .await
    .expect("local gateway");
    let implicit = gw.ftps_implicit.expect("implicit FTPS listener");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/engine/aioftp_session.py"
    );
    for (mode, port, name) in [
        ("explicit", gw.addr.port(), "aio-explicit.bin"),
        ("implicit", implicit.port(), "aio-implicit.bin"),
    ] {
        let out = output(
            Command::new("python3")
                .arg(script)
                .args([mode, "127.0.0.1", &port.to_string(), "alice", PASSWORD])
                .args([cert.display().to_string().as_str(), name]),
        )
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("case ok"),
            "aioftp {mode}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            object(&gw, name).await.map(|o| o.len()),
            Some(512_000),
            "aioftp {mode} upload stored"
        );
    }
}

/// 1,000 fresh FTPS logins from 16 concurrent ftplib clients all succeed:
/// the switch to TLS after `AUTH TLS` is race-free (libunftp 0.24 could
/// read the ClientHello as a command; 6-10 % of logins failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_fresh_ftps_logins_all_succeed() {
    if !installed("python3") {
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let Some((gw, cert)) = tls_gateway(certs.path(), "").await else {
        return;
    };
    let ca = cert.display().to_string();
    let out = case(&gw, "tls-logins", &[&ca, "1000", "16"]).await;
    assert!(out.contains("logins: 1000 of 1000 succeeded"), "{out}");
}

/// Plaintext sent in the same packet as `AUTH TLS` is discarded, not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_after_auth_tls_is_discarded() {
    if !installed("python3") {
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let Some((gw, cert)) = tls_gateway(certs.path(), "").await else {
        return;
    };
    let ca = cert.display().to_string();
    case(&gw, "auth-piggyback", &[&ca]).await;
}

/// Junk instead of a TLS handshake on a `PROT P` data connection: `425`,
/// no panic, and the session goes on to upload over a proper one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_data_tls_handshake_is_a_425() {
    if !installed("python3") {
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let Some((gw, cert)) = tls_gateway(certs.path(), "").await else {
        return;
    };
    let ca = cert.display().to_string();
    case(&gw, "data-tls-junk", &["--tls", &ca, "junk.bin"]).await;
    assert_eq!(
        object(&gw, "junk.bin").await.as_deref(),
        Some(&b"after the junk"[..])
    );
}

// --- item 9: implicit FTPS ------------------------------------------------------

/// `tls.implicit_listen` serves TLS from the first byte, on control and data
/// connections: curl's `ftps://` and ftplib over a TLS-wrapped socket upload,
/// list and download; the plain listener works beside it, and the session
/// limits count both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_ftps_serves_tls_from_the_first_byte() {
    if !installed("python3") || !installed("curl") {
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let Some((cert, key)) = self_signed_cert(certs.path()).await else {
        return;
    };
    let gw = Gateway::start_with(
        Backend::Local,
        Options {
            server_extra: "max_sessions_per_ip = 2\n".into(),
            sections: format!(
                "{}implicit_listen = \"127.0.0.1:0\"\n",
                tls_section(&cert, &key)
            ),
            ..Options::default()
        },
    )
    .await
    .expect("local gateway");
    let implicit = gw.ftps_implicit.expect("implicit FTPS listener");
    let ca = cert.display().to_string();

    let file = gw.dir.path().join("curl-upload.bin");
    let data = payload(200_000, 9);
    std::fs::write(&file, &data).expect("scratch file");
    let curl = |args: &[&str]| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "30", "--cacert", &ca, "--user"])
            .arg(format!("alice:{PASSWORD}"))
            .args(args);
        cmd
    };
    let url = |path: &str| format!("ftps://127.0.0.1:{}/{path}", implicit.port());
    let out = output(&mut curl(&[
        "-T",
        &file.display().to_string(),
        &url("curl.bin"),
    ]))
    .await;
    assert!(
        out.status.success(),
        "curl ftps:// upload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(object(&gw, "curl.bin").await, Some(data.clone()));
    let out = output(&mut curl(&["--list-only", &url("")])).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("curl.bin"),
        "{out:?}"
    );
    let out = output(&mut curl(&[&url("curl.bin")])).await;
    assert!(out.stdout == data, "curl ftps:// download differs");

    // ftplib over a TLS-wrapped socket, port numbers from the implicit listener.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/engine/transfer_cases.py"
    );
    let out = output(
        Command::new("python3")
            .arg(script)
            .arg("implicit")
            .args(["127.0.0.1", &implicit.port().to_string(), "alice", PASSWORD])
            .args([ca.as_str(), "ftplib.bin"]),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("case ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("control channel: TLSv1.3"), "{stdout}");

    // One plain session and one implicit session fill the per-address
    // limit of 2; of two implicit connections, whichever the gateway admits
    // second is closed without a byte (the other waits for its handshake).
    let mut plain = LineClient::connect(gw.addr).await;
    let mut one = TcpStream::connect(implicit)
        .await
        .expect("implicit connect");
    let mut two = TcpStream::connect(implicit)
        .await
        .expect("implicit connect");
    let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        tokio::select! {
            n = one.read(&mut a) => n.unwrap_or(0),
            n = two.read(&mut b) => n.unwrap_or(0),
        }
    })
    .await
    .expect("an over-limit implicit connection is closed");
    assert_eq!(read, 0, "over-limit implicit connection got bytes");
    drop((one, two));
    plain.expect("QUIT", 221).await;
}
