//! Who gets in and what they may do: disabled users, IP allow lists
//! (IPv4 and IPv6 CIDRs), anonymous access (off by default, read-only
//! unless configured), and per-user "TLS required".

use crate::common;

use common::{code_of, Backend, Gateway, Options, TestUser, PASSWORD};

fn user(name: &str, extra: &str) -> TestUser {
    TestUser {
        extra: extra.into(),
        ..TestUser::full(name, &format!("/{name}"))
    }
}

async fn login_code(gw: &Gateway, name: &str, password: &str) -> Option<u32> {
    let mut ftp = gw.connect().await;
    match ftp.login(name, password).await {
        Ok(()) => None,
        Err(suppaftp::FtpError::UnexpectedResponse(r)) => Some(r.status.code()),
        Err(e) => panic!("{name}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_users_and_allow_lists() {
    let opts = Options {
        users: vec![
            user("alice", ""),
            user("gone", "enabled = false"),
            user(
                "office",
                "allowed_ips = [\"10.0.0.0/8\", \"2001:db8::/32\"]",
            ),
            user("local4", "allowed_ips = [\"127.0.0.0/8\"]"),
            user("local6only", "allowed_ips = [\"::1/128\"]"),
        ],
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(Backend::Memory, opts).await else {
        return;
    };
    assert_eq!(login_code(&gw, "alice", PASSWORD).await, None);
    assert_eq!(
        login_code(&gw, "gone", PASSWORD).await,
        Some(530),
        "disabled user"
    );
    assert_eq!(
        login_code(&gw, "office", PASSWORD).await,
        Some(530),
        "not from 10/8"
    );
    assert_eq!(
        login_code(&gw, "local4", PASSWORD).await,
        None,
        "127.0.0.1 allowed"
    );
    assert_eq!(
        login_code(&gw, "local6only", PASSWORD).await,
        Some(530),
        "IPv4 client against an IPv6-only list"
    );
    assert_eq!(
        login_code(&gw, "nobody", PASSWORD).await,
        Some(530),
        "unknown user"
    );
    assert_eq!(
        login_code(&gw, "alice", "wrong").await,
        Some(530),
        "wrong password"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_is_off_by_default() {
    let Some(gw) = Gateway::start(Backend::Memory).await else {
        return;
    };
    assert_eq!(
        login_code(&gw, "anonymous", "guest@example.com").await,
        Some(530)
    );
    assert_eq!(login_code(&gw, "ftp", "").await, Some(530));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_is_read_only_and_jailed_when_enabled() {
    let opts = Options {
        sections: "[auth]\nanonymous = true\nanonymous_home = \"/pub\"\n".into(),
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(Backend::Local, opts).await else {
        return;
    };
    gw.put_object("pub/readme.txt", b"public").await;
    gw.put_object("private.txt", b"secret").await;
    let mut ftp = gw.connect().await;
    ftp.login("anonymous", "guest@example.com")
        .await
        .expect("anonymous login");
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .await
        .expect("TYPE I");
    let names = ftp.nlst(None).await.expect("NLST");
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with("readme.txt"));
    let mut data = Vec::new();
    {
        use tokio::io::AsyncReadExt;
        let mut s = ftp.retr_as_stream("readme.txt").await.expect("RETR");
        s.read_to_end(&mut data).await.expect("read");
        s.finish().await.expect("226");
    }
    assert_eq!(data, b"public");
    assert_eq!(
        transfer_code!(ftp.retr_as_stream("../private.txt").await),
        550
    );
    assert_eq!(transfer_code!(ftp.put_with_stream("upload.txt").await), 550);
    assert_eq!(code_of(ftp.mkdir("d").await), 550);
    assert_eq!(code_of(ftp.rm("readme.txt").await), 550);
    assert_eq!(code_of(ftp.rename("readme.txt", "x.txt").await), 550);
    assert_eq!(
        gw.object("pub/readme.txt").await.as_deref(),
        Some(&b"public"[..])
    );
    assert_eq!(gw.object("pub/upload.txt").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_user_is_refused_in_plain_text() {
    let opts = Options {
        users: vec![user("alice", ""), user("careful", "tls_required = true")],
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(Backend::Memory, opts).await else {
        return;
    };
    assert_eq!(login_code(&gw, "careful", PASSWORD).await, Some(530));
    assert_eq!(login_code(&gw, "alice", PASSWORD).await, None);
}

/// A user with their own storage URL lives there; the others share the
/// default store. One gateway, several buckets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_storage_urls() {
    let opts = Options {
        users: vec![user("alice", ""), user("bob", "storage = \"memory://\"")],
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(Backend::Local, opts).await else {
        return;
    };
    let mut bob = gw.login("bob").await;
    let mut data: &[u8] = b"bob's own bucket";
    bob.put_file("b.txt", &mut data).await.expect("STOR");
    assert_eq!(bob.size("b.txt").await.expect("SIZE"), 16);
    let mut alice = gw.login("alice").await;
    let mut data: &[u8] = b"shared store";
    alice.put_file("a.txt", &mut data).await.expect("STOR");
    // alice's file is on disk under her home; bob's is not on disk at all.
    assert_eq!(
        gw.object("alice/a.txt").await.as_deref(),
        Some(&b"shared store"[..])
    );
    assert_eq!(gw.object("bob/b.txt").await, None);
    assert!(!gw.dir.path().join("root/bob").exists());
    assert_eq!(code_of(bob.size("../alice/a.txt").await), 550);
}

/// The code of the reply to one raw command.
async fn reply_code(ftp: &mut suppaftp::tokio::AsyncFtpStream, command: &str) -> u32 {
    match ftp.custom_command(command, &[]).await {
        Ok(r) => r.status.code(),
        Err(suppaftp::FtpError::UnexpectedResponse(r)) => r.status.code(),
        Err(e) => panic!("{command}: {e}"),
    }
}

/// A drop box: a user who may only create files learns nothing about what
/// is already there (SIZE, MDTM, MLST, STAT, LIST, RNFR are refused; CWD
/// answers alike for directories that exist and those that do not), can
/// still upload, and cannot replace or extend a file. A `write` user can.
async fn drop_box_sees_nothing(backend: Backend) {
    let opts = Options {
        users: vec![
            TestUser {
                permissions: vec!["create".into()],
                ..TestUser::full("camera", "/")
            },
            TestUser {
                permissions: vec!["write".into()],
                ..TestUser::full("writer", "/")
            },
        ],
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(backend, opts).await else {
        return;
    };
    gw.put_object("dir/existing.jpg", b"original").await;
    let mut cam = gw.login("camera").await;
    for command in [
        "SIZE dir/existing.jpg",
        "MDTM dir/existing.jpg",
        "MLST dir/existing.jpg",
        "MLST dir",
        "RNFR dir/existing.jpg",
    ] {
        assert_eq!(reply_code(&mut cam, command).await, 550, "{command}");
    }
    // STAT PATH (550 rather than libunftp's 451 with engine patch 0301).
    for command in ["STAT dir/existing.jpg", "STAT dir"] {
        assert_eq!(reply_code(&mut cam, command).await, 550, "{command}");
    }
    for command in [
        "SIZE dir/missing.jpg",
        "MDTM dir/missing.jpg",
        "MLST dir/missing.jpg",
    ] {
        assert_eq!(reply_code(&mut cam, command).await, 550, "{command}");
    }
    assert_eq!(code_of(cam.list(Some("dir")).await), 550);
    // CWD says the same whether the directory exists or not.
    assert_eq!(reply_code(&mut cam, "CWD /nowhere").await, 250);
    assert_eq!(reply_code(&mut cam, "CWD /dir").await, 250);
    // Uploads of new files work; existing ones are neither replaced nor
    // extended.
    let mut data: &[u8] = b"new picture";
    cam.put_file("new.jpg", &mut data)
        .await
        .expect("STOR new file");
    let mut data: &[u8] = b"replacement";
    assert_eq!(code_of(cam.put_file("existing.jpg", &mut data).await), 550);
    let mut data: &[u8] = b"more";
    assert_eq!(
        code_of(cam.append_file("existing.jpg", &mut data).await),
        550
    );
    assert_eq!(
        gw.object("dir/existing.jpg").await.as_deref(),
        Some(&b"original"[..])
    );
    assert_eq!(
        gw.object("dir/new.jpg").await.as_deref(),
        Some(&b"new picture"[..])
    );
    // `write` includes overwriting.
    let mut writer = gw.login("writer").await;
    let mut data: &[u8] = b"replaced";
    writer
        .put_file("dir/existing.jpg", &mut data)
        .await
        .expect("writer overwrites");
    assert_eq!(
        gw.object("dir/existing.jpg").await.as_deref(),
        Some(&b"replaced"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_box_sees_nothing_local() {
    drop_box_sees_nothing(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_box_sees_nothing_s3() {
    drop_box_sees_nothing(Backend::S3).await;
}

/// Symbolic links planted inside a file:// root never lead outside it:
/// reads, writes, listings and CWD through them answer 550 and touch
/// nothing outside; a link that stays inside the root works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_out_of_the_root_are_refused() {
    let Some(gw) = Gateway::start(Backend::Local).await else {
        return;
    };
    let root = gw.dir.path().join("root");
    let outside = gw.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), b"outside the root").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("secret-link.txt")).unwrap();
    std::fs::create_dir_all(root.join("real")).unwrap();
    std::os::unix::fs::symlink(root.join("real"), root.join("inside")).unwrap();

    let mut ftp = gw.login("alice").await;
    assert_eq!(
        transfer_code!(ftp.retr_as_stream("escape/secret.txt").await),
        550
    );
    assert_eq!(
        transfer_code!(ftp.retr_as_stream("secret-link.txt").await),
        550
    );
    assert_eq!(reply_code(&mut ftp, "SIZE escape/secret.txt").await, 550);
    assert_eq!(reply_code(&mut ftp, "CWD escape").await, 550);
    assert_eq!(code_of(ftp.list(Some("escape")).await), 550);
    let mut data: &[u8] = b"planted";
    assert_eq!(
        code_of(ftp.put_file("escape/planted.txt", &mut data).await),
        550
    );
    let mut data: &[u8] = b"overwritten";
    assert_eq!(
        code_of(ftp.put_file("secret-link.txt", &mut data).await),
        550
    );
    assert_eq!(reply_code(&mut ftp, "DELE escape/secret.txt").await, 550);
    assert_eq!(reply_code(&mut ftp, "MKD escape/newdir").await, 550);
    assert_eq!(
        std::fs::read(outside.join("secret.txt")).unwrap(),
        b"outside the root"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "nothing written outside"
    );
    // A link inside the root is an ordinary path.
    let mut data: &[u8] = b"fine";
    ftp.put_file("inside/ok.txt", &mut data)
        .await
        .expect("STOR via inner link");
    assert_eq!(std::fs::read(root.join("real/ok.txt")).unwrap(), b"fine");
}

/// Replies that tell a client to give up rather than retry: a name file://
/// cannot hold is 553 (not 451), DELE of the home directory is 550, and the
/// documented name limit (250 bytes on file://) holds exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_a_store_cannot_hold_are_553() {
    let Some(gw) = Gateway::start(Backend::Local).await else {
        return;
    };
    let mut ftp = gw.login("alice").await;
    let mut data: &[u8] = b"x";
    assert_eq!(
        code_of(ftp.put_file("name#1", &mut data).await),
        553,
        "STOR name#1"
    );
    for len in [251, 254, 255] {
        let mut data: &[u8] = b"x";
        assert_eq!(
            code_of(ftp.put_file("n".repeat(len), &mut data).await),
            553,
            "{len}-byte name"
        );
    }
    let mut data: &[u8] = b"x";
    ftp.put_file("n".repeat(250), &mut data)
        .await
        .expect("250-byte name");
    let mut data: &[u8] = b"x";
    ftp.put_file("name#tag", &mut data)
        .await
        .expect("'#' not followed by digits");
    assert_eq!(reply_code(&mut ftp, "DELE /").await, 550);
    assert_eq!(reply_code(&mut ftp, "DELE missing.txt").await, 550);
}

/// Names up to 255 bytes work on S3 (the 250-byte limit is file:// only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_names_on_s3() {
    let Some(gw) = Gateway::start(Backend::S3).await else {
        return;
    };
    let mut ftp = gw.login("alice").await;
    let mut data: &[u8] = b"x";
    ftp.put_file("n".repeat(255), &mut data)
        .await
        .expect("255-byte name");
    let mut data: &[u8] = b"x";
    ftp.put_file("name#1", &mut data)
        .await
        .expect("name#1 on S3");
    assert_eq!(reply_code(&mut ftp, "DELE /").await, 550);
}

/// A self-signed certificate and key for 127.0.0.1 (openssl), written to
/// `cert` and `key`.
fn make_cert(cert: &std::path::Path, key: &std::path::Path) {
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .args(["-days", "2", "-keyout"])
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl req");
}

/// Whether an FTPS listing succeeds when only `ca` is trusted, i.e. the
/// gateway presents that certificate.
fn ftps_works_with(addr: std::net::SocketAddr, ca: &std::path::Path) -> bool {
    std::process::Command::new("curl")
        .args(["-sS", "--ssl-reqd", "--max-time", "20", "--cacert"])
        .arg(ca)
        .arg(format!("ftp://alice:{PASSWORD}@{addr}/"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("curl")
        .success()
}

async fn readyz(gw: &Gateway) -> u16 {
    common::http_get(gw.http.expect("http"), "/readyz")
        .await
        .expect("GET /readyz")
        .0
}

/// Polls `check` every 200 ms for up to 30 s.
async fn within_30s(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..150 {
        if check() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    false
}

/// The TLS certificate is parsed once and reloaded when its files change:
/// a broken file keeps the last good certificate in service (and ready), a
/// new valid one is served to the next connections, and a gateway that has
/// never had a valid certificate is not ready and refuses sessions with 421
/// until one appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificate_reloads_and_readiness_follows() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let (cert_a, key_a) = (certs.path().join("a.pem"), certs.path().join("a.key"));
    let (cert_b, key_b) = (certs.path().join("b.pem"), certs.path().join("b.key"));
    make_cert(&cert_a, &key_a);
    make_cert(&cert_b, &key_b);
    let tls = |c: &std::path::Path, k: &std::path::Path| {
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nrequired = \"all\"\n",
            c.display().to_string(),
            k.display().to_string()
        )
    };
    std::fs::copy(&cert_a, &cert).unwrap();
    std::fs::copy(&key_a, &key).unwrap();
    let opts = Options {
        sections: tls(&cert, &key),
        http: true,
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(Backend::Local, opts).await else {
        return;
    };
    let _ = gw.connect().await;
    assert_eq!(readyz(&gw).await, 200);
    assert!(ftps_works_with(gw.addr, &cert_a));

    // A broken renewal: the last good certificate stays in service.
    std::fs::write(&cert, b"-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    std::fs::write(&key, b"not a key").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(readyz(&gw).await, 200, "last good certificate kept");
    assert!(
        ftps_works_with(gw.addr, &cert_a),
        "old certificate still served"
    );

    // A good renewal is picked up by the next connections.
    std::fs::copy(&key_b, &key).unwrap();
    std::fs::copy(&cert_b, &cert).unwrap();
    assert!(
        within_30s(|| ftps_works_with(gw.addr, &cert_b)).await,
        "new certificate never served"
    );
    assert!(
        !ftps_works_with(gw.addr, &cert_a),
        "old certificate still served"
    );

    // Never a valid certificate: not ready, sessions refused.
    let (bad_cert, bad_key) = (certs.path().join("bad.pem"), certs.path().join("bad.key"));
    std::fs::write(&bad_cert, b"nothing").unwrap();
    std::fs::write(&bad_key, b"nothing").unwrap();
    let opts = Options {
        sections: tls(&bad_cert, &bad_key),
        http: true,
        ..Options::default()
    };
    let Some(bad) = Gateway::start_with(Backend::Local, opts).await else {
        return;
    };
    let mut greeting = String::new();
    {
        use tokio::io::AsyncReadExt;
        let mut s = tokio::net::TcpStream::connect(bad.addr)
            .await
            .expect("connect");
        let _ = s.read_to_string(&mut greeting).await;
    }
    assert!(greeting.starts_with("421"), "{greeting:?}");
    assert_eq!(readyz(&bad).await, 503);
    std::fs::copy(&key_a, &bad_key).unwrap();
    std::fs::copy(&cert_a, &bad_cert).unwrap();
    let mut ready = false;
    for _ in 0..150 {
        if readyz(&bad).await == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(ready, "never ready after a valid certificate appeared");
    assert!(ftps_works_with(bad.addr, &cert_a));
}

/// The binary listening on `[::]` (dual stack), with a config file; its
/// log goes to `log`.
async fn start_dual_stack(
    dir: &std::path::Path,
    config: &str,
    env: &[(&str, &str)],
) -> (tokio::process::Child, u16, std::path::PathBuf) {
    // A port free on every address (common::free_port only checks
    // 127.0.0.1).
    let port = std::net::TcpListener::bind("[::]:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config).expect("config");
    let log = dir.join("log");
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_bucketftp"));
    cmd.args(["--listen", &format!("[::]:{port}"), "--http", "off"])
        .args(["--storage", &format!("file://{}/root", dir.display())])
        .args(["--passive-ports", "40000-49999", "--config"])
        .arg(&config_path)
        .env_remove("BUCKETFTP_CONFIG")
        .env_remove("BUCKETFTP_USER")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start bucketftp");
    for _ in 0..200 {
        // A child that exited (e.g. the port was taken) must not be
        // mistaken for whatever else answers on that port.
        if child.try_wait().expect("child status").is_some() {
            break;
        }
        if let Ok(mut probe) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            // Take the greeting and QUIT: a probe that vanishes while the
            // greeting is on its way makes libunftp log a connection reset
            // (with its own `::ffff:` form of the address).
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 512];
            let _ = probe.read(&mut buf).await;
            let _ = probe.write_all(b"QUIT\r\n").await;
            let _ = probe.read(&mut buf).await;
            return (child, port, log);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "not listening: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// On a dual-stack `[::]` listener IPv4 clients are IPv4: an allow list of
/// IPv4 CIDRs admits them, PASV works (engine patch 0300) and logs show
/// `127.0.0.1`, not `::ffff:127.0.0.1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_clients_on_a_dual_stack_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "[[users]]\nname = \"office\"\npassword_hash = {:?}\nallowed_ips = [\"127.0.0.0/8\"]\n",
        common::cheap_hash(PASSWORD)
    );
    let (_child, port, log) = start_dual_stack(dir.path(), &config, &[]).await;
    let mut ftp = suppaftp::tokio::AsyncFtpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect over IPv4");
    ftp.login("office", PASSWORD)
        .await
        .expect("IPv4 CIDR admits an IPv4 client");
    assert_eq!(reply_code(&mut ftp, "PWD").await, 257);
    // PASV works for an IPv4 client of a `[::]` listener (engine patch
    // 0300), and data flows.
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .await
        .expect("TYPE I");
    let mut data: &[u8] = b"over a dual-stack listener";
    ftp.put_file("dual.txt", &mut data)
        .await
        .expect("STOR over PASV");
    assert_eq!(
        common::retr(&mut ftp, "dual.txt").await,
        b"over a dual-stack listener"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(
        !text.contains("::ffff:"),
        "mapped address in the log:\n{text}"
    );
}

/// Users and storage secrets from the environment: nothing secret on the
/// command line (/proc/PID/cmdline is world-readable), and it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_come_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_password = "env-only-Passw0rd";
    let port = common::free_port();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_bucketftp"));
    let mut env: Vec<(String, String)> = vec![(
        "BUCKETFTP_USER".into(),
        format!("scanner:{secret_password}"),
    )];
    let storage = match common::storage_for(Backend::S3, dir.path(), "secrets") {
        Some((url, options)) => {
            // The documented way: AWS_* for credentials, BUCKETFTP__… for
            // the rest; none of it as a flag.
            for (k, v) in options {
                let name = if k.starts_with("aws_access_key_id")
                    || k.starts_with("aws_secret_access_key")
                {
                    k.to_ascii_uppercase()
                } else {
                    format!("BUCKETFTP__STORAGE__OPTIONS__{}", k.to_ascii_uppercase())
                };
                env.push((name, v));
            }
            url
        }
        None => format!("file://{}/root", dir.path().display()),
    };
    cmd.args(["--listen", &format!("127.0.0.1:{port}"), "--http", "off"])
        .args(["--storage", &storage, "--passive-ports", "40000-49999"])
        .env_remove("BUCKETFTP_CONFIG")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("start");
    let pid = child.id().expect("pid");
    let mut ftp = None;
    for _ in 0..200 {
        if let Ok(c) = suppaftp::tokio::AsyncFtpStream::connect(("127.0.0.1", port)).await {
            ftp = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut ftp = ftp.expect("gateway answers");
    ftp.login("scanner", secret_password)
        .await
        .expect("user from BUCKETFTP_USER");
    let mut data: &[u8] = b"scan";
    ftp.put_file("scan.pdf", &mut data).await.expect("STOR");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(!cmdline.contains(secret_password), "{cmdline}");
    assert!(
        !cmdline.contains("testing"),
        "storage secret on the command line: {cmdline}"
    );
}

/// Reply codes libunftp chooses, fixed by our engine patches (0300–0304):
/// STAT of a missing path is 550 (not 451), RNTO without RNFR is 503 (not
/// 450), SIZE of a directory is 550 (not `213 0`), and MKD names the
/// directory it made, normalised (not the path as typed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_reply_codes_stop_retries() {
    let Some(gw) = Gateway::start(Backend::Local).await else {
        return;
    };
    let mut ftp = gw.login("alice").await;
    assert_eq!(reply_code(&mut ftp, "STAT missing.txt").await, 550);
    assert_eq!(reply_code(&mut ftp, "RNTO b.txt").await, 503);
    let made = ftp
        .custom_command("MKD ../../x/./y/../d", &[])
        .await
        .map(|r| {
            (
                r.status.code(),
                String::from_utf8_lossy(&r.body).into_owned(),
            )
        })
        .or_else(|e| match e {
            suppaftp::FtpError::UnexpectedResponse(r) => Ok((
                r.status.code(),
                String::from_utf8_lossy(&r.body).into_owned(),
            )),
            e => Err(e),
        })
        .expect("MKD");
    assert_eq!(made.0, 257, "{made:?}");
    assert!(made.1.contains("\"/x/d\""), "{made:?}");
    assert_eq!(reply_code(&mut ftp, "SIZE x/d").await, 550);
    let mut data: &[u8] = b"12345";
    ftp.put_file("x/f.txt", &mut data).await.expect("STOR");
    assert_eq!(ftp.size("x/f.txt").await.expect("SIZE of a file"), 5);
}

/// APPE by a user who may not see the file (`write` without `list` or
/// `read`) is refused instead of replacing the file with the appended bytes
/// (engine patch 0305); a user who may see it appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appe_never_replaces_a_file_it_cannot_see() {
    let opts = Options {
        users: vec![
            TestUser::full("alice", "/"),
            TestUser {
                permissions: vec!["write".into()],
                ..TestUser::full("writer", "/")
            },
        ],
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(Backend::Local, opts).await else {
        return;
    };
    gw.put_object("log.txt", b"abc").await;
    let mut writer = gw.login("writer").await;
    let mut data: &[u8] = b"def";
    assert_eq!(code_of(writer.append_file("log.txt", &mut data).await), 550);
    assert_eq!(gw.object("log.txt").await.as_deref(), Some(&b"abc"[..]));
    let mut alice = gw.login("alice").await;
    let mut data: &[u8] = b"def";
    alice.append_file("log.txt", &mut data).await.expect("APPE");
    assert_eq!(gw.object("log.txt").await.as_deref(), Some(&b"abcdef"[..]));
}
