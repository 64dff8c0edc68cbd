//! The FTP engine's own behaviour (libunftp 0.24 plus engine/patches),
//! driven by real clients: Python's ftplib and curl; raw sockets only where
//! no client can express the case (a flood of lines without a newline, a
//! data port that never answers).
//!
//! Each test names the patch it pins and fails on pristine libunftp:
//! `BUCKETFTP_ENGINE_UNPATCHED=1 CARGO_TARGET_DIR=target/unpatched cargo
//! test --test it engine::` runs them against it (docs/upstream.md records the
//! result).

use crate::common;
use crate::common::line_client;
use crate::common::programs;

use common::{payload, Backend, Gateway, Options, Process, PASSWORD};
use line_client::LineClient;
use programs::{installed, run, self_signed_cert, tls_section};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::Command;

/// Runs a Python ftplib session against `addr`: `body` runs after `ftp`
/// has connected (and logged in as alice when `login`); returns what it
/// printed. `show(call)` prints a call's reply or its error, so a body
/// can go on after a refusal.
async fn ftplib(addr: SocketAddr, login: bool, body: &str) -> String {
    let script = format!(
        "import ftplib, io, socket, sys\n\
         def show(label, call):\n    \
             try:\n        print(label, call())\n    \
             except ftplib.all_errors as e:\n        print(label, 'error', type(e).__name__, e)\n\
         ftp = ftplib.FTP()\n\
         ftp.connect(sys.argv[1], int(sys.argv[2]), timeout=30)\n\
         if {login}:\n    ftp.login('alice', sys.argv[3])\n\
         {body}\n",
        login = if login { "True" } else { "False" },
    );
    let (stdout, _) = run(Command::new("python3").arg("-c").arg(script).args([
        addr.ip().to_string().as_str(),
        addr.port().to_string().as_str(),
        PASSWORD,
    ]))
    .await;
    stdout
}

/// A gateway on `file://` with default options.
async fn gateway() -> Gateway {
    Gateway::start(Backend::Local).await.expect("local gateway")
}

/// 0001-mkd-pwd-reply-quoted-path: ftplib's `mkd()` and `pwd()` parse the
/// quoted name of RFC 959's 257 reply, quotes inside it doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkd_and_pwd_quote_the_path() {
    if !installed("python3") {
        return;
    }
    let gw = gateway().await;
    let out = ftplib(
        gw.addr,
        true,
        "print('mkd', repr(ftp.mkd('say \"hi\" there')))\n\
         ftp.cwd('say \"hi\" there')\n\
         print('pwd', repr(ftp.pwd()))\n\
         print('raw', ftp.sendcmd('MKD plain'))",
    )
    .await;
    assert!(out.contains("mkd '/say \"hi\" there'"), "{out}");
    assert!(out.contains("pwd '/say \"hi\" there'"), "{out}");
    assert!(
        out.contains("raw 257 \"/say \"\"hi\"\" there/plain\" "),
        "{out}"
    );
}

/// 0002-control-line-length-bounded: a command line over 8 KiB gets `500`
/// and the connection is closed, before and after login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_command_line_is_refused_and_closed() {
    if !installed("python3") {
        return;
    }
    let gw = gateway().await;
    for login in [false, true] {
        let out = ftplib(
            gw.addr,
            login,
            "show('long', lambda: ftp.sendcmd('NOOP ' + 'A' * 9000))\n\
             show('after', lambda: ftp.sendcmd('NOOP'))",
        )
        .await;
        assert!(
            out.contains("long error error_perm 500 Command line too long"),
            "login {login}: {out}"
        );
        // Closed: ftplib reads EOF (or a reset) instead of a reply.
        assert!(
            out.contains("after error EOFError")
                || out.contains("after error ConnectionResetError"),
            "login {login}: {out}"
        );
    }
    // The gateway serves the next client as usual.
    let out = ftplib(gw.addr, true, "print('pwd', ftp.pwd())").await;
    assert!(out.contains("pwd /"), "{out}");
}

/// The peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// A connection from `source` (a loopback address) to the gateway, with
/// the greeting read; logged in when `login`.
async fn control_from(addr: SocketAddr, source: Ipv4Addr, login: bool) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .expect("bind source");
    let mut s = socket.connect(addr).await.expect("connect");
    let mut seen = Vec::new();
    let mut wanted = vec!["220 "];
    if login {
        s.write_all(format!("USER alice\r\nPASS {PASSWORD}\r\n").as_bytes())
            .await
            .expect("login");
        wanted.extend(["331 ", "230 "]);
    }
    let mut buf = [0u8; 4096];
    while wanted
        .iter()
        .any(|w| !String::from_utf8_lossy(&seen).contains(w))
    {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("reply in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before {wanted:?}: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    s
}

/// 0002-control-line-length-bounded: sixteen connections, half of them
/// logged in, each sending 8 MiB without a newline (128 MiB offered) leave
/// the gateway's peak memory within 16 MiB of what it was; every one of
/// them is closed by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_keep_memory_bounded_before_and_after_login() {
    const CONNECTIONS: usize = 16;
    const MIB_EACH: usize = 8;
    let gw = Process::start("file://{dir}/root", &[]).await;
    let pid = gw.child.id().expect("running");
    // The sessions first, one after the other (a login hashes a password),
    // so that the baseline holds them and the flood alone is measured.
    let mut sessions = Vec::new();
    for n in 0..CONNECTIONS {
        let login = n % 2 == 1;
        let source = Ipv4Addr::new(127, 0, 0, if login { 3 } else { 2 });
        sessions.push(control_from(gw.ftp, source, login).await);
    }
    let before = peak_rss_kib(pid);

    let mut flood = tokio::task::JoinSet::new();
    for mut s in sessions {
        flood.spawn(async move {
            let chunk = vec![b'A'; 1 << 20];
            for _ in 0..MIB_EACH {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            // Whatever was sent, the server must end the connection (a
            // pristine server would wait for the newline: give it an EOF
            // so the test ends either way).
            let _ = s.shutdown().await;
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut rest)).await;
            String::from_utf8_lossy(&rest).into_owned()
        });
    }
    let mut replies = Vec::new();
    while let Some(reply) = flood.join_next().await {
        replies.push(reply.expect("flood task"));
    }
    let grown = peak_rss_kib(pid).saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "{CONNECTIONS} connections sending {MIB_EACH} MiB without a newline grew the peak RSS by {grown} KiB"
    );
    assert!(
        replies
            .iter()
            .all(|r| !r.contains("Invalid") && !r.contains("200 ")),
        "{replies:?}"
    );
}

/// 0003-syntax-error-keeps-session: a 501 answers one command; the session
/// goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_syntax_error_is_answered_and_the_session_goes_on() {
    if !installed("python3") {
        return;
    }
    let gw = gateway().await;
    let out = ftplib(
        gw.addr,
        true,
        "show('rest', lambda: ftp.sendcmd('REST abc'))\n\
         show('noop', lambda: ftp.sendcmd('NOOP x'))\n\
         show('pwd', ftp.pwd)",
    )
    .await;
    assert!(out.contains("rest error error_perm 501"), "{out}");
    assert!(out.contains("noop error error_perm 501"), "{out}");
    assert!(out.contains("pwd /"), "{out}");
}

/// 0004-mode-stru-prot-case-insensitive: `MODE s`, `STRU f`, `TYPE i` are
/// the same as their upper-case forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_letters_are_case_insensitive() {
    if !installed("python3") {
        return;
    }
    let gw = gateway().await;
    let out = ftplib(
        gw.addr,
        true,
        "for cmd in ['MODE s', 'stru f', 'type i', 'Mode S']:\n    \
             show(cmd, lambda: ftp.sendcmd(cmd))\n\
         show('pwd', ftp.pwd)",
    )
    .await;
    for cmd in ["MODE s", "stru f", "type i", "Mode S"] {
        assert!(out.contains(&format!("{cmd} 200")), "{cmd}: {out}");
    }
    assert!(out.contains("pwd /"), "{out}");
}

/// 0005-opts-mlst-and-any-case: ftplib's `mlsd(facts=…)` sends
/// `OPTS MLST type;size;` first, as basic-ftp and others do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opts_mlst_is_accepted() {
    if !installed("python3") {
        return;
    }
    let gw = gateway().await;
    gw.put_object("listed.bin", b"12345").await;
    let out = ftplib(
        gw.addr,
        true,
        "show('opts', lambda: ftp.sendcmd('OPTS MLST type;size;nonsense;'))\n\
         show('mlsd', lambda: sorted((n, f['type'], f['size']) for n, f in ftp.mlsd(facts=['type', 'size'])))\n\
         show('utf8', lambda: ftp.sendcmd('OPTS utf8 on'))",
    )
    .await;
    assert!(out.contains("opts 200 MLST OPTS type;size;"), "{out}");
    assert!(out.contains("mlsd [('listed.bin', 'file', '5')]"), "{out}");
    assert!(out.contains("utf8 200"), "{out}");
}

/// 0006-rfc1123-x-aliases: XMKD, XCWD, XPWD, XCUP, XRMD do what MKD, CWD,
/// PWD, CDUP, RMD do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc1123_x_commands_work() {
    if !installed("python3") {
        return;
    }
    let gw = gateway().await;
    let out = ftplib(
        gw.addr,
        true,
        "for cmd in ['XMKD old', 'XCWD old', 'XPWD', 'XCUP', 'XPWD', 'XRMD old']:\n    \
             show(cmd, lambda: ftp.sendcmd(cmd))",
    )
    .await;
    for expected in [
        "XMKD old 257",
        "XCWD old 250",
        "XPWD 257 \"/old\"",
        "XCUP 250",
        "XPWD 257 \"/\"",
        "XRMD old 250",
    ] {
        assert!(out.contains(expected), "{expected}: {out}");
    }
    assert!(!gw.dir.path().join("root/old").exists(), "XRMD removed it");
}

/// 0007-rest-cleared-after-every-transfer: after a resume that fails (an
/// offset past the end; no data connection), the full download works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_is_cleared_after_a_failed_transfer() {
    if !installed("python3") {
        return;
    }
    let gw = gateway().await;
    gw.put_object("whole.bin", &payload(1000, 7)).await;
    let out = ftplib(
        gw.addr,
        true,
        "def get(rest=None):\n    \
             out = bytearray()\n    \
             ftp.retrbinary('RETR whole.bin', out.extend, rest=rest)\n    \
             return len(out)\n\
         show('past-end', lambda: get(rest=5000))\n\
         show('full', get)\n\
         ftp.sendcmd('REST 10')\n\
         show('no-data-connection', lambda: ftp.sendcmd('RETR whole.bin'))\n\
         show('full-again', get)",
    )
    .await;
    assert!(out.contains("past-end error"), "{out}");
    assert!(out.contains("full 1000"), "{out}");
    assert!(
        out.contains("no-data-connection error error_temp 425"),
        "{out}"
    );
    assert!(out.contains("full-again 1000"), "{out}");
}

/// 0008-stou-reply-names-file: STOU's 150 says `FILE: <name>`, and that
/// name holds the upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stou_names_the_file_it_stores() {
    if !installed("python3") {
        return;
    }
    let gw = gateway().await;
    let out = ftplib(
        gw.addr,
        true,
        "ftp.set_debuglevel(1)\n\
         ftp.storbinary('STOU', io.BytesIO(b'unique bytes'))",
    )
    .await;
    let name = out
        .split("*resp* '150 FILE: ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("no `150 FILE: name` reply: {out}"));
    gw.settle().await;
    assert_eq!(
        gw.object(name).await.as_deref(),
        Some(&b"unique bytes"[..]),
        "{out}"
    );
}

/// `curl` logged in as alice with a deadline, verbose (the trace shows the
/// commands).
fn curl() -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-v", "--max-time", "30", "--user"])
        .arg(format!("alice:{PASSWORD}"));
    cmd
}

/// 0009-epsv-protocol-and-all: `EPSV 2` on IPv4 gets 522, `EPSV 1` a port;
/// after `EPSV ALL` curl's EPSV downloads work and PASV is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epsv_follows_rfc_2428() {
    if !installed("python3") || !installed("curl") {
        return;
    }
    let gw = gateway().await;
    gw.put_object("e.bin", b"extended").await;
    let out = ftplib(
        gw.addr,
        true,
        "show('v6', lambda: ftp.sendcmd('EPSV 2'))\n\
         show('v4', lambda: ftp.sendcmd('EPSV 1'))\n\
         show('all', lambda: ftp.sendcmd('EPSV ALL'))\n\
         show('pasv', lambda: ftp.sendcmd('PASV'))\n\
         show('port', lambda: ftp.sendcmd('PORT 127,0,0,1,4,1'))",
    )
    .await;
    assert!(
        out.contains("v6 error error_perm 522 Network protocol not supported, use (1)"),
        "{out}"
    );
    assert!(out.contains("v4 229 "), "{out}");
    assert!(out.contains("all 200"), "{out}");
    assert!(out.contains("pasv error error_perm 503"), "{out}");
    assert!(out.contains("port error error_perm 503"), "{out}");

    let url = format!("ftp://127.0.0.1:{}/e.bin", gw.addr.port());
    let (body, _) = run(curl().args(["-Q", "EPSV ALL", &url])).await;
    assert_eq!(body, "extended");
    let refused = programs::output(curl().args(["-Q", "EPSV ALL", "--disable-epsv", &url])).await;
    assert!(
        !refused.status.success(),
        "PASV after EPSV ALL: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// 0011-eprt: curl's active mode (`--ftp-port -`) sends EPRT, over IPv4 and
/// over IPv6, and needs no fallback to PORT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eprt_works_over_ipv4_and_ipv6() {
    if !installed("curl") {
        return;
    }
    for (bind, host, expected) in [
        ("127.0.0.1:0", "127.0.0.1", "EPRT |1|127.0.0.1|"),
        ("[::1]:0", "[::1]", "EPRT |2|::1|"),
    ] {
        let gw = Gateway::start_with(
            Backend::Local,
            Options {
                bind: Some(bind.into()),
                ..Options::default()
            },
        )
        .await
        .expect("local gateway");
        gw.put_object("active.bin", b"active bytes").await;
        let url = format!("ftp://{host}:{}/active.bin", gw.addr.port());
        let (body, trace) = run(curl().args(["-g", "--ftp-port", "-", &url])).await;
        assert_eq!(body, "active bytes", "{trace}");
        assert!(trace.contains(expected), "{trace}");
        assert!(!trace.contains("> PORT "), "no fallback to PORT: {trace}");
        // 0306: the reply names the command that was sent.
        assert!(trace.contains("< 200 EPRT command successful"), "{trace}");
        let file = gw.dir.path().join("up.bin");
        std::fs::write(&file, payload(200_000, 3)).expect("write upload");
        let upload = format!("ftp://{host}:{}/up.bin", gw.addr.port());
        let (_, trace) = run(curl()
            .args(["-g", "--ftp-port", "-", "-T"])
            .arg(&file)
            .arg(&upload))
        .await;
        assert!(trace.contains(expected), "{trace}");
        gw.settle().await;
        assert_eq!(gw.object("up.bin").await, Some(payload(200_000, 3)));
    }
}

/// 0010-port-only-to-the-client: PORT naming another host is refused before
/// any connection attempt; a data port that never answers gets 425 after
/// the connect timeout instead of holding the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_is_refused_for_another_host_and_times_out() {
    let gw = gateway().await;
    let bystander = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind bystander");
    let port = bystander.local_addr().expect("addr").port();
    let mut ftp = LineClient::connect(gw.addr).await;
    ftp.login("alice", PASSWORD).await;
    let reply = ftp
        .cmd(&format!("PORT 127,0,0,2,{},{}", port >> 8, port & 0xff))
        .await;
    assert_eq!(reply.code, 501, "{}", reply.text());
    let reply = ftp.cmd(&format!("EPRT |1|127.0.0.2|{port}|")).await;
    assert_eq!(reply.code, 501, "{}", reply.text());
    // Refused before connecting: the bystander's queue is empty.
    let reached = tokio::time::timeout(Duration::from_millis(200), bystander.accept()).await;
    assert!(reached.is_err(), "the server connected to 127.0.0.2");

    // A data port whose accept queue is full drops the server's SYNs: fill
    // it until a connection attempt of our own hangs.
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let silent = socket.listen(0).expect("listen");
    let silent_addr = silent.local_addr().expect("addr");
    let mut fillers = Vec::new();
    loop {
        assert!(fillers.len() < 64, "the accept queue never filled up");
        let mut attempt = tokio::spawn(TcpStream::connect(silent_addr));
        match tokio::time::timeout(Duration::from_secs(2), &mut attempt).await {
            Ok(connected) => fillers.push(connected.expect("join").expect("connect")),
            Err(_) => {
                attempt.abort();
                break;
            }
        }
    }
    let p = silent_addr.port();
    let reply = ftp
        .cmd(&format!("PORT 127,0,0,1,{},{}", p >> 8, p & 0xff))
        .await;
    assert_eq!(reply.code, 425, "{}", reply.text());
    ftp.expect("NOOP", 200).await;
    drop((fillers, silent));
}

/// 0012-path-not-utf8-refused: a Latin-1 file name is refused with 553
/// instead of being stored under a name with U+FFFD in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_is_not_utf8_is_refused_with_553() {
    if !installed("python3") {
        return;
    }
    let gw = gateway().await;
    let out = ftplib(
        gw.addr,
        true,
        "ftp.encoding = 'latin-1'\n\
         show('stor', lambda: ftp.storbinary('STOR caf\\xe9.txt', io.BytesIO(b'latin')))\n\
         show('mkd', lambda: ftp.mkd('d\\xe9j\\xe0'))\n\
         ftp.encoding = 'utf-8'\n\
         show('pwd', ftp.pwd)\n\
         show('utf8', lambda: ftp.storbinary('STOR caf\\xe9.txt', io.BytesIO(b'utf8')))",
    )
    .await;
    assert!(out.contains("stor error error_perm 553"), "{out}");
    assert!(out.contains("mkd error error_perm 553"), "{out}");
    assert!(out.contains("pwd /"), "{out}");
    assert!(out.contains("utf8 226"), "{out}");
    gw.settle().await;
    assert_eq!(gw.keys().await, vec!["café.txt".to_string()]);
}

/// A Python ftplib client that connects (with TLS when `cafile` is given:
/// `FTP_TLS`, AUTH TLS first), logs in unless `login` is false, prints
/// `ready`, then waits for an unsolicited reply and prints it (or the
/// error ftplib raises for it). Returned running, its stdout piped.
fn waiting_client(
    addr: SocketAddr,
    cafile: Option<&std::path::Path>,
    login: bool,
) -> tokio::process::Child {
    let script = "import ftplib, ssl, sys\n\
         host, port, password, cafile, login = sys.argv[1:6]\n\
         if cafile:\n    ftp = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=cafile), timeout=30)\n\
         else:\n    ftp = ftplib.FTP(timeout=30)\n\
         ftp.connect(host, int(port))\n\
         if login == 'yes':\n    ftp.login('alice', password)\n\
         elif cafile:\n    ftp.auth()\n\
         print('ready', flush=True)\n\
         try:\n    print('reply', ftp.getresp())\n\
         except ftplib.all_errors as e:\n    print('reply', type(e).__name__, e)\n";
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args([
            addr.ip().to_string(),
            addr.port().to_string(),
            PASSWORD.to_string(),
            cafile.map(|c| c.display().to_string()).unwrap_or_default(),
            if login { "yes" } else { "no" }.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3")
}

/// Waits for a [`waiting_client`] to print `ready`; returns a reader of
/// the rest of its output.
async fn when_ready(
    child: &mut tokio::process::Child,
) -> tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("client ready in time")
        .expect("read");
    assert_eq!(first.as_deref(), Some("ready"));
    lines
}

/// The line a [`waiting_client`] printed for the reply it waited for.
async fn heard(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> String {
    tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a reply in time")
        .expect("read")
        .unwrap_or_default()
}

/// A gateway on `file://` that offers FTPS without requiring it, with
/// `server_extra` in its `[server]` section; with its certificate and the
/// directory holding it (kept alive), or `None` without openssl.
async fn optional_tls_gateway(
    server_extra: &str,
) -> Option<(Gateway, std::path::PathBuf, tempfile::TempDir)> {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed_cert(certs.path()).await?;
    let gw = Gateway::start_with(
        Backend::Local,
        Options {
            sections: tls_section(&cert, &key).replace("required = \"all\"", "required = \"none\""),
            server_extra: server_extra.into(),
            ..Options::default()
        },
    )
    .await
    .expect("local gateway");
    Some((gw, cert, certs))
}

/// 0312-served-connection-farewell: a client that did AUTH TLS and then
/// did not log in in time hears `421` in TLS (the gateway wrote it in
/// plaintext beside the TLS stream, which ftplib took for a broken TLS
/// record); a plaintext client hears the same 421 in plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_deadline_says_421_in_tls_after_auth_tls() {
    if !installed("python3") {
        return;
    }
    let Some((gw, cert, _certs)) = optional_tls_gateway("login_timeout = \"1s\"\n").await else {
        return;
    };
    for cafile in [Some(cert.as_path()), None] {
        let mut client = waiting_client(gw.addr, cafile, false);
        let mut lines = when_ready(&mut client).await;
        let reply = heard(&mut lines).await;
        assert_eq!(
            reply,
            "reply error_temp 421 Login timeout, closing control connection",
            "tls: {}",
            cafile.is_some()
        );
    }
}

/// 0312-served-connection-farewell: at shutdown, once transfers have
/// drained, sessions still open hear `421` (in TLS after AUTH TLS) instead
/// of a bare close, so a client knows to come back (RFC 959 §4.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_421_to_idle_sessions() {
    if !installed("python3") {
        return;
    }
    let Some((gw, cert, _certs)) = optional_tls_gateway("").await else {
        return;
    };
    let mut plain = waiting_client(gw.addr, None, true);
    let mut tls = waiting_client(gw.addr, Some(&cert), true);
    let mut plain_lines = when_ready(&mut plain).await;
    let mut tls_lines = when_ready(&mut tls).await;
    let stopping = tokio::spawn(gw.stop());
    for (label, lines) in [("plain", &mut plain_lines), ("tls", &mut tls_lines)] {
        assert_eq!(
            heard(lines).await,
            "reply error_temp 421 Server shutting down, closing control connection",
            "{label}"
        );
    }
    stopping.await.expect("join").expect("clean stop");
}

/// 0013-control-tls-handshake-timeout: a client that sends `AUTH TLS` and
/// then nothing is disconnected after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_control_tls_handshake_is_closed() {
    if !installed("python3") {
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let Some((cert, key)) = self_signed_cert(certs.path()).await else {
        return;
    };
    let gw = Gateway::start_with(
        Backend::Local,
        Options {
            sections: tls_section(&cert, &key),
            idle_timeout: Some("2s".into()),
            ..Options::default()
        },
    )
    .await
    .expect("local gateway");
    let out = ftplib(
        gw.addr,
        false,
        "print('auth', ftp.sendcmd('AUTH TLS'))\n\
         ftp.sock.settimeout(40)\n\
         try:\n    print('closed', ftp.sock.recv(1) == b'')\n\
         except socket.timeout:\n    print('still open after 40 s')\n\
         except ConnectionResetError:\n    print('closed True')",
    )
    .await;
    assert!(out.contains("auth 234"), "{out}");
    assert!(out.contains("closed True"), "{out}");
}
