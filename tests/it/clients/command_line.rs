//! Command-line clients: curl, lftp, busybox ftpput/ftpget, rclone and
//! netkit ftp-ssl.

use super::*;

on_local_and_memory!(
    curl_transfers_and_listings,
    curl_create_dirs,
    curl_resume_upload,
    lftp_mirror_round_trip,
    busybox_ftpput_ftpget,
    rclone_copy_check_delete,
);

// ------------------------------------------------------------------ curl

/// Lines of a client's protocol trace that are commands it sent (curl's
/// `> CMD` lines in `-v` output).
fn sent(trace: &str) -> Vec<&str> {
    trace
        .lines()
        .filter_map(|l| l.strip_prefix("> "))
        .map(str::trim_end)
        .collect()
}

async fn curl_transfers_and_listings(backend: Backend) {
    if !installed("curl") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    let data = payload(200_000, 21);
    let up = scratch_file(&gw, "up.bin", &data);
    let notes = scratch_file(&gw, "notes.txt", b"plain text\n");
    run(curl().arg("-T").arg(&up).arg(url(&gw, "up.bin"))).await;
    run(curl().arg("-T").arg(&notes).arg(url(&gw, "notes.txt"))).await;
    assert!(stored(&gw, "up.bin").await == data);
    assert_eq!(stored(&gw, "notes.txt").await, b"plain text\n");

    let down = scratch(&gw, "down.bin");
    run(curl().arg("-o").arg(&down).arg(url(&gw, "up.bin"))).await;
    assert!(std::fs::read(&down).expect("downloaded") == data);

    let (nlst, _) = run(curl().arg("-l").arg(url(&gw, ""))).await;
    let mut names: Vec<&str> = nlst.lines().map(str::trim_end).collect();
    names.sort();
    assert_eq!(names, ["notes.txt", "up.bin"], "curl -l (NLST)");

    let (list, _) = run(curl().arg(url(&gw, ""))).await;
    let line = list
        .lines()
        .find(|l| l.trim_end().ends_with(" up.bin"))
        .unwrap_or_else(|| panic!("LIST has up.bin:\n{list}"));
    assert!(line.starts_with('-') && line.contains(" 200000 "), "{line}");
}

async fn curl_create_dirs(backend: Backend) {
    if !installed("curl") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    let image = payload(50_000, 22);
    let file = scratch_file(&gw, "img.jpg", &image);
    run(curl()
        .arg("--ftp-create-dirs")
        .arg("-T")
        .arg(&file)
        .arg(url(&gw, "cam/2024/06/01/img.jpg")))
    .await;
    assert!(stored(&gw, "cam/2024/06/01/img.jpg").await == image);
    for dir in ["cam", "cam/2024", "cam/2024/06", "cam/2024/06/01"] {
        assert!(is_dir_in_store(&gw, dir).await, "{dir} was created");
    }
    let (list, _) = run(curl().arg(url(&gw, "cam/2024/"))).await;
    assert!(
        list.lines()
            .any(|l| l.starts_with('d') && l.trim_end().ends_with(" 06")),
        "{list}"
    );
}

async fn curl_resume_upload(backend: Backend) {
    if !installed("curl") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    let full = payload(300_000, 23);
    let partial = scratch_file(&gw, "partial.bin", &full[..123_457]);
    let complete = scratch_file(&gw, "complete.bin", &full);
    run(curl().arg("-T").arg(&partial).arg(url(&gw, "resume.bin"))).await;
    assert!(stored(&gw, "resume.bin").await == full[..123_457]);

    let (_, trace) = run(curl()
        .args(["-v", "-C", "-", "-T"])
        .arg(&complete)
        .arg(url(&gw, "resume.bin")))
    .await;
    let commands = sent(&trace);
    assert!(commands.contains(&"SIZE resume.bin"), "{trace}");
    assert!(commands.contains(&"APPE resume.bin"), "{trace}");
    assert!(stored(&gw, "resume.bin").await == full, "resumed object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_active_mode() {
    if !installed("curl") {
        return;
    }
    let Some(gw) = Gateway::start(Backend::Local).await else {
        return;
    };
    let data = payload(150_000, 24);
    let file = scratch_file(&gw, "active.bin", &data);
    let (_, trace) = run(curl()
        .args(["-v", "--ftp-port", "127.0.0.1", "-T"])
        .arg(&file)
        .arg(url(&gw, "active.bin")))
    .await;
    // curl tries EPRT first, and the engine answers it (no PORT fallback).
    let commands = sent(&trace);
    assert!(
        commands.iter().any(|c| c.starts_with("EPRT |1|127.0.0.1|")),
        "curl used EPRT: {trace}"
    );
    assert!(!commands.iter().any(|c| c.starts_with("PORT ")), "{trace}");
    assert!(stored(&gw, "active.bin").await == data);

    let down = scratch(&gw, "active-down.bin");
    run(curl()
        .args(["--ftp-port", "127.0.0.1", "-o"])
        .arg(&down)
        .arg(url(&gw, "active.bin")))
    .await;
    assert!(std::fs::read(&down).expect("downloaded") == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_explicit_ftps() {
    if !installed("curl") {
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let Some((gw, cert)) = tls_gateway(Backend::Local, certs.path()).await else {
        return;
    };
    let tls = |cmd: &mut Command| {
        cmd.arg("--ssl-reqd").arg("--cacert").arg(&cert);
    };
    let data = payload(250_000, 25);
    let file = scratch_file(&gw, "tls.bin", &data);
    let mut upload = curl();
    tls(&mut upload);
    let (_, trace) = run(upload
        .arg("-v")
        .arg("-T")
        .arg(&file)
        .arg(url(&gw, "tls.bin")))
    .await;
    let commands = sent(&trace);
    assert!(commands.contains(&"AUTH TLS"), "{trace}");
    assert!(commands.contains(&"PROT P"), "{trace}");
    assert!(stored(&gw, "tls.bin").await == data);

    let down = scratch(&gw, "tls-down.bin");
    let mut download = curl();
    tls(&mut download);
    run(download.arg("-o").arg(&down).arg(url(&gw, "tls.bin"))).await;
    assert!(std::fs::read(&down).expect("downloaded") == data);

    let mut listing = curl();
    tls(&mut listing);
    let (names, _) = run(listing.arg("-l").arg(url(&gw, ""))).await;
    assert_eq!(names.trim_end(), "tls.bin");

    // The gateway requires TLS: the same listing in clear text is refused,
    // so the transfers above were encrypted.
    let plain = output(curl().arg("-l").arg(url(&gw, ""))).await;
    assert!(!plain.status.success(), "plain FTP must be refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_passive_epsv_and_pasv() {
    if !installed("curl") {
        return;
    }
    let Some(gw) = Gateway::start(Backend::Local).await else {
        return;
    };
    for (name, disable_epsv) in [("epsv.bin", false), ("pasv.bin", true)] {
        let data = payload(100_000, 26 + disable_epsv as u64);
        let file = scratch_file(&gw, name, &data);
        let mut upload = curl();
        upload.args(["-v", "--ftp-pasv"]);
        if disable_epsv {
            upload.arg("--disable-epsv");
        }
        let (_, trace) = run(upload.arg("-T").arg(&file).arg(url(&gw, name))).await;
        let commands = sent(&trace);
        let (used, unused) = if disable_epsv {
            ("PASV", "EPSV")
        } else {
            ("EPSV", "PASV")
        };
        assert!(commands.contains(&used), "{used} expected: {trace}");
        assert!(!commands.contains(&unused), "{unused} unexpected: {trace}");
        assert!(stored(&gw, name).await == data, "{name}");

        let down = scratch(&gw, &format!("{name}.down"));
        let mut download = curl();
        download.arg("--ftp-pasv");
        if disable_epsv {
            download.arg("--disable-epsv");
        }
        run(download.arg("-o").arg(&down).arg(url(&gw, name))).await;
        assert!(std::fs::read(&down).expect("downloaded") == data, "{name}");
    }
}

// ------------------------------------------------------------------ lftp

/// `lftp -c` logged in as alice, failing fast (lftp retries forever by
/// default), with `settings` (e.g. the TLS ones) before `open`.
fn lftp(gw: &Gateway, settings: &str, commands: &str) -> Command {
    let script = format!(
        "set cmd:fail-exit yes; set net:max-retries 2; set net:reconnect-interval-base 1; \
         set net:timeout 20; {settings}; \
         open -u alice,{PASSWORD} -p {} 127.0.0.1; {commands}",
        gw.addr.port()
    );
    let mut cmd = Command::new("lftp");
    cmd.arg("-c").arg(script);
    cmd
}

const LFTP_PLAIN: &str = "set ftp:ssl-allow no";

fn lftp_tls(cert: &Path) -> String {
    format!(
        "set ftp:ssl-force true; set ftp:ssl-protect-data true; \
         set ssl:verify-certificate yes; set ssl:ca-file {}",
        cert.display()
    )
}

/// A local tree with nested, empty and space-named directories.
fn sample_tree(root: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("readme.txt", b"top level\n".to_vec()),
        ("photos/2024/a.jpg", payload(70_000, 31)),
        ("photos/2024/b.jpg", payload(1, 32)),
        ("photos/empty/", Vec::new()),
        ("docs/deep/er/still/notes.md", b"# deep\n".to_vec()),
        ("docs/with space.txt", b"spaced\n".to_vec()),
        ("docs/zero.bin", Vec::new()),
    ];
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (*p, &b[..])).collect();
    programs::write_tree(root, &refs);
    files
}

async fn lftp_mirror(backend: Backend, tls: bool) {
    if !installed("lftp") {
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let (gw, settings) = if tls {
        let Some((gw, cert)) = tls_gateway(backend, certs.path()).await else {
            return;
        };
        (gw, lftp_tls(&cert))
    } else {
        let Some(gw) = Gateway::start(backend).await else {
            return;
        };
        (gw, LFTP_PLAIN.to_string())
    };
    let src = scratch(&gw, "src");
    let files = sample_tree(&src);
    let back = scratch(&gw, "back");
    run(&mut lftp(
        &gw,
        &settings,
        &format!("mirror -R {} /site", src.display()),
    ))
    .await;
    for (rel, bytes) in &files {
        let remote = format!("site/{}", rel.trim_end_matches('/'));
        if rel.ends_with('/') {
            assert!(is_dir_in_store(&gw, &remote).await, "{remote}");
        } else {
            assert!(stored(&gw, &remote).await == *bytes, "{remote}");
        }
    }
    run(&mut lftp(
        &gw,
        &settings,
        &format!("mirror /site {}", back.display()),
    ))
    .await;
    assert!(
        tree(&src) == tree(&back),
        "mirror back differs:\n{:?}\n{:?}",
        tree(&src).keys(),
        tree(&back).keys()
    );
}

async fn lftp_mirror_round_trip(backend: Backend) {
    lftp_mirror(backend, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lftp_mirror_round_trip_over_ftps() {
    lftp_mirror(Backend::Local, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lftp_mput_mget_cls() {
    if !installed("lftp") {
        return;
    }
    let Some(gw) = Gateway::start(Backend::Local).await else {
        return;
    };
    let batch = [
        ("one.csv", payload(12_345, 41)),
        ("two.csv", payload(6_789, 42)),
        ("three.log", b"log line\n".to_vec()),
    ];
    for (name, bytes) in &batch {
        scratch_file(&gw, &format!("batch/{name}"), bytes);
    }
    let local = scratch(&gw, "batch");
    let got = scratch(&gw, "got");
    std::fs::create_dir_all(&got).expect("mkdir got");
    let (stdout, _) = run(&mut lftp(
        &gw,
        LFTP_PLAIN,
        &format!(
            "mkdir in; mput -O in {l}/*.csv {l}/three.log; cls -l in; \
             mget -O {g} in/*.csv in/three.log",
            l = local.display(),
            g = got.display()
        ),
    ))
    .await;
    for (name, bytes) in &batch {
        assert!(stored(&gw, &format!("in/{name}")).await == *bytes, "{name}");
        assert!(
            std::fs::read(got.join(name)).expect("mget file") == *bytes,
            "{name}"
        );
        let size = format!(" {} ", bytes.len());
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(name) && l.contains(&size) && l.starts_with('-')),
            "cls -l shows {name} with its size:\n{stdout}"
        );
    }
}

// --------------------------------------------------------------- busybox

async fn busybox_ftpput_ftpget(backend: Backend) {
    if !busybox_applet("ftpput") || !busybox_applet("ftpget") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    // Devices upload into directories that already exist.
    let mut ftp = LineClient::connect(gw.addr).await;
    ftp.login("alice", PASSWORD).await;
    ftp.expect("MKD cam", 257).await;
    ftp.expect("MKD cam/front", 257).await;
    ftp.expect("QUIT", 221).await;

    let snap = payload(90_000, 51);
    let file = scratch_file(&gw, "snap.jpg", &snap);
    let port = gw.addr.port().to_string();
    let login = ["-u", "alice", "-p", PASSWORD, "-P", &port, "127.0.0.1"];
    run(Command::new("busybox")
        .arg("ftpput")
        .args(login)
        .arg("cam/front/snap.jpg")
        .arg(&file))
    .await;
    assert!(stored(&gw, "cam/front/snap.jpg").await == snap);

    let down = scratch(&gw, "snap-down.jpg");
    run(Command::new("busybox")
        .arg("ftpget")
        .args(login)
        .arg(&down)
        .arg("cam/front/snap.jpg"))
    .await;
    assert!(std::fs::read(&down).expect("ftpget file") == snap);
}

// ---------------------------------------------------------------- rclone

/// `rclone` with one FTP remote `gw:` configured through the environment
/// only (no config file is read or written).
async fn rclone(gw: &Gateway) -> impl Fn() -> Command {
    let (obscured, _) = run(Command::new("rclone").args(["obscure", PASSWORD])).await;
    let obscured = obscured.trim().to_string();
    let port = gw.addr.port().to_string();
    let home = scratch(gw, "rclone-home");
    move || {
        let mut cmd = Command::new("rclone");
        cmd.env("RCLONE_CONFIG", home.join("rclone.conf"))
            .env("XDG_CACHE_HOME", &home)
            .env("RCLONE_CONFIG_GW_TYPE", "ftp")
            .env("RCLONE_CONFIG_GW_HOST", "127.0.0.1")
            .env("RCLONE_CONFIG_GW_PORT", &port)
            .env("RCLONE_CONFIG_GW_USER", "alice")
            .env("RCLONE_CONFIG_GW_PASS", &obscured)
            .args(["--retries", "1", "--low-level-retries", "2"]);
        cmd
    }
}

async fn rclone_copy_check_delete(backend: Backend) {
    if !installed("rclone") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    let rclone = rclone(&gw).await;
    let src = scratch(&gw, "src");
    let files = sample_tree(&src);
    run(rclone().arg("copy").arg(&src).arg("gw:backup")).await;
    let expected_files: Vec<&(&str, Vec<u8>)> =
        files.iter().filter(|(p, _)| !p.ends_with('/')).collect();
    for (rel, bytes) in &expected_files {
        assert!(
            stored(&gw, &format!("backup/{rel}")).await == *bytes,
            "{rel}"
        );
    }

    // A second copy finds everything up to date (rclone set each file's
    // time with MFMT) and sends nothing again.
    let (_, again) = run(rclone().arg("-v").arg("copy").arg(&src).arg("gw:backup")).await;
    assert!(
        !again.contains("Copied"),
        "second copy re-sent files:\n{again}"
    );

    let (lsf, _) = run(rclone().args(["lsf", "-R", "--files-only", "gw:backup"])).await;
    let mut listed: Vec<&str> = lsf.lines().collect();
    listed.sort();
    let mut want: Vec<&str> = expected_files.iter().map(|(p, _)| *p).collect();
    want.sort();
    assert_eq!(listed, want, "rclone lsf -R");

    run(rclone()
        .args(["check", "--size-only"])
        .arg(&src)
        .arg("gw:backup"))
    .await;
    // check really compares: one changed size is reported.
    std::fs::write(src.join("readme.txt"), b"changed length\n").expect("rewrite");
    let differs = output(
        rclone()
            .args(["check", "--size-only"])
            .arg(&src)
            .arg("gw:backup"),
    )
    .await;
    assert!(!differs.status.success(), "rclone check found the change");

    run(rclone().args(["delete", "gw:backup"])).await;
    gw.settle().await;
    assert_eq!(file_keys(&gw).await, Vec::<String>::new(), "rclone delete");
}

// --------------------------------------------------------------- ftp-ssl

/// netkit's `ftp-ssl` (Debian's FTPS command-line client, an old OpenSSL
/// stack) ends an upload's TLS data connection without close_notify: by
/// default the upload is refused and nothing is stored; with
/// `tls.require_close_notify = false` the same upload is stored whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netkit_ftp_ssl_upload_needs_require_close_notify_off() {
    if !installed("ftp-ssl") {
        return;
    }
    let certs = tempfile::tempdir().expect("tempdir");
    let Some((cert, key)) = self_signed_cert(certs.path()).await else {
        return;
    };
    for strict in [true, false] {
        let Some(gw) = Gateway::start_with(
            Backend::Local,
            Options {
                sections: format!(
                    "{}require_close_notify = {strict}\n",
                    tls_section(&cert, &key)
                ),
                ..Options::default()
            },
        )
        .await
        else {
            return;
        };
        let data = payload(150_000, 7);
        let local = scratch_file(&gw, "netkit.bin", &data);
        let script = format!(
            "user alice {PASSWORD}\nbinary\nput {} netkit.bin\nbye\n",
            local.display()
        );
        let mut child = Command::new("ftp-ssl")
            // -p passive, -n log in by the script's `user`; -z secure: fail
            // rather than fall back to plain FTP.
            .args(["-p", "-n", "-v", "-z", "secure", "-z"])
            .arg(format!("cacert={}", cert.display()))
            .args(["-z", "verify=1", "127.0.0.1", &gw.addr.port().to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start ftp-ssl");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(script.as_bytes()).await.expect("script");
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("ftp-ssl finished")
            .expect("ftp-ssl ran");
        let transcript = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        gw.settle().await;
        if strict {
            assert!(transcript.contains("426"), "refused: {transcript}");
            assert_eq!(gw.object("netkit.bin").await, None, "{transcript}");
            assert_eq!(gw.local_leftovers(), Vec::<String>::new());
        } else {
            assert!(transcript.contains("226"), "accepted: {transcript}");
            assert!(gw.object("netkit.bin").await == Some(data), "{transcript}");
        }
    }
}
