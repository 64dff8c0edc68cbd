//! Operations: metrics that add up (checked by promtool and by a real
//! Prometheus server scraping the gateway), readiness that follows the
//! storage, graceful shutdown on SIGTERM, and logs without secrets.
//! Each test runs the real binary in its own process.

use crate::common;

use common::{free_port, http_get, payload, Process, PASSWORD};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The value of one sample line `name{labels} value` in an exposition.
fn sample(exposition: &str, name_and_labels: &str) -> f64 {
    exposition
        .lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name_and_labels} not in exposition"))
}

fn tool_available(name: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("BUCKETFTP_REQUIRE_EMULATORS").as_deref() == Ok("1") {
            panic!("{name} is not installed but .ci/test requires it");
        }
        eprintln!("\n*** SKIPPED: {name} not installed (bash .ci/install.sh installs it) ***\n");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_add_up_and_prometheus_scrapes_them() {
    let gw = Process::start("file://{dir}/root", &[]).await;
    let sizes = [0usize, 1, 1000, 6 << 20, 12 << 20];
    let mut ftp = gw.login().await;
    for (i, size) in sizes.iter().enumerate() {
        let data = payload(*size, i as u64);
        let mut reader = &data[..];
        ftp.put_file(format!("m/{i}.bin"), &mut reader)
            .await
            .expect("STOR");
    }
    ftp.quit().await.ok();
    let total: usize = sizes.iter().sum();
    let (status, text) = http_get(gw.http, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200);
    let ok = r#"{direction="upload",outcome="success"}"#;
    assert_eq!(
        sample(&text, &format!("bucketftp_transfers_total{ok}")),
        5.0
    );
    assert_eq!(
        sample(&text, &format!("bucketftp_transfer_size_bytes_count{ok}")),
        5.0
    );
    assert_eq!(
        sample(&text, &format!("bucketftp_transfer_size_bytes_sum{ok}")),
        total as f64
    );
    assert_eq!(
        sample(
            &text,
            &format!("bucketftp_transfer_duration_seconds_count{ok}")
        ),
        5.0
    );
    assert_eq!(
        sample(&text, "bucketftp_received_bytes_total"),
        total as f64
    );
    // On file:// over plain TCP every upload is spliced into its file and
    // committed with one put, whatever its size; none is multipart.
    assert_eq!(sample(&text, "bucketftp_spliced_uploads_total"), 5.0);
    assert_eq!(sample(&text, "bucketftp_multipart_uploads_total"), 0.0);
    assert_eq!(
        sample(
            &text,
            r#"bucketftp_storage_operation_duration_seconds_count{backend="file",operation="put",outcome="success"}"#
        ),
        5.0
    );
    assert!(
        text.contains("\nftp_command_total{") && text.contains("\nftp_received_bytes_total{"),
        "libunftp's metrics are served"
    );
    for (old, _) in bucketftp::LIBUNFTP_NAMES {
        assert!(
            !text.contains(&format!("\n{old} ")) && !text.contains(&format!("\n{old}{{")),
            "{old} is served under its libunftp name"
        );
    }
    assert_eq!(sample(&text, "bucketftp_ready"), 1.0);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains("m/"), "a path leaked into a label: {line}");
        assert!(
            !line.contains("alice"),
            "a user name leaked into a label: {line}"
        );
    }

    if !tool_available("promtool") {
        return;
    }
    let exposition = gw.dir.path().join("metrics.txt");
    std::fs::write(&exposition, &text).expect("write exposition");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", exposition.display()))
        .output()
        .expect("promtool");
    // The whole exposition, libunftp's families included (served under
    // Prometheus-conformant names, src/metrics.rs LIBUNFTP_NAMES): promtool
    // exits 1 on any lint finding.
    let findings =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics: {findings}"
    );

    // A real Prometheus server scrapes the gateway and answers a query.
    let prom_port = free_port();
    let prom_dir = gw.dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).expect("prometheus dir");
    let config = prom_dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: bucketftp\n    static_configs:\n      - targets: ['{}']\n",
            gw.http
        ),
    )
    .expect("write prometheus config");
    let mut prom = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.join("data").display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(prom_dir.join("log")).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("start prometheus");
    let query = "/api/v1/query?query=bucketftp_transfers_total%7Bdirection%3D%22upload%22%2Coutcome%3D%22success%22%7D";
    let prom_addr = format!("127.0.0.1:{prom_port}").parse().expect("addr");
    let mut answer = String::new();
    for _ in 0..600 {
        if let Ok((200, body)) = http_get(prom_addr, query).await {
            if body.contains(r#""value":["#) {
                answer = body;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    prom.kill().await.ok();
    assert!(
        answer.contains(r#""5"]"#),
        "Prometheus query result: {answer}\nprometheus log: {}",
        std::fs::read_to_string(prom_dir.join("log")).unwrap_or_default()
    );
}

/// Runs `bucketftp healthcheck` with `args` and environment `env` (no
/// configuration file): its exit status and its output.
fn healthcheck(args: &[&str], env: &[(&str, String)]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bucketftp"))
        .arg("healthcheck")
        .args(args)
        .env_remove("BUCKETFTP_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run bucketftp healthcheck");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_storage() {
    let gw = Process::start("file://{dir}/root", &[]).await;
    let root = gw.dir.path().join("root");
    let aside = gw.dir.path().join("root-away");
    let ready = |want: u16| async move {
        // The probe result is cached for a couple of seconds.
        for _ in 0..100 {
            if let Ok((status, _)) = http_get(gw.http, "/readyz").await {
                if status == want {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("/readyz never answered {want}");
    };
    ready(200).await;
    assert_eq!(http_get(gw.http, "/healthz").await.expect("healthz").0, 200);
    // `bucketftp healthcheck` (the image's HEALTHCHECK) agrees, asked at an
    // explicit address or at http.listen, a wildcard listen address being
    // asked on loopback.
    let address = gw.http.to_string();
    let wildcard = [(
        "BUCKETFTP__HTTP__LISTEN",
        format!("0.0.0.0:{}", gw.http.port()),
    )];
    assert_eq!(
        healthcheck(&["--address", &address], &[]),
        (true, "ready\n".to_string())
    );
    assert!(healthcheck(&[], &wildcard).0, "healthcheck via http.listen");
    std::fs::rename(&root, &aside).expect("take the storage away");
    ready(503).await;
    assert_eq!(
        http_get(gw.http, "/healthz").await.expect("healthz").0,
        200,
        "alive while the storage is not"
    );
    let (healthy, why) = healthcheck(&[], &wildcard);
    assert!(!healthy && why.contains("answered 503: not ready"), "{why}");
    std::fs::rename(&aside, &root).expect("give it back");
    ready(200).await;

    let nobody = format!("127.0.0.1:{}", free_port());
    let (healthy, why) = healthcheck(&["--address", &nobody], &[]);
    assert!(!healthy && why.contains("cannot reach"), "{why}");
    let off = [("BUCKETFTP__HTTP__LISTEN", "off".to_string())];
    let (healthy, why) = healthcheck(&[], &off);
    assert!(!healthy && why.contains("http endpoint is off"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_finishing_uploads_and_aborts_the_rest() {
    let mut gw = Process::start(
        "file://{dir}/root",
        &[("BUCKETFTP__SERVER__SHUTDOWN_GRACE", "3s")],
    )
    .await;
    let root = gw.dir.path().join("root");
    let chunk = payload(1 << 20, 7);
    let mut uploads = Vec::new();
    for i in 0..20 {
        let mut ftp = gw.login().await;
        let mut stream = ftp
            .put_with_stream(format!("u/{i}.bin"))
            .await
            .expect("STOR");
        stream.write_all(&chunk).await.expect("first MiB");
        stream.flush().await.expect("flush");
        uploads.push((ftp, stream));
    }
    gw.signal("TERM");
    // Readiness turns 503 at once; new sessions are not accepted.
    let mut saw_503 = false;
    for _ in 0..50 {
        if let Ok((503, _)) = http_get(gw.http, "/readyz").await {
            saw_503 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_503, "/readyz did not turn 503 on SIGTERM");
    // The first ten finish within the grace period.
    let mut stalled = Vec::new();
    for (i, (ftp, mut stream)) in uploads.into_iter().enumerate() {
        if i < 10 {
            stream.write_all(&chunk).await.expect("second MiB");
            stream
                .finish()
                .await
                .expect("226 for an upload finished in the grace period");
        } else {
            stalled.push((i, ftp, stream));
        }
    }
    // The other ten stall past the grace period (their data connections
    // stay open): the gateway cancels them and answers 4xx.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (i, _ftp, stream) in stalled {
        let code = common::code_of(stream.finish().await);
        assert!((400..500).contains(&code), "upload {i}: {code}");
    }
    let status = tokio::time::timeout(Duration::from_secs(30), gw.child.wait())
        .await
        .expect("exits after the grace period")
        .expect("wait");
    assert!(status.success(), "exit status {status}");
    for i in 0..20 {
        let path = root.join(format!("u/{i}.bin"));
        if i < 10 {
            assert_eq!(
                std::fs::metadata(&path).expect("complete object").len(),
                2 << 20
            );
        } else {
            assert!(!path.exists(), "upload {i} left an object");
        }
    }
    let leftovers: Vec<_> = std::fs::read_dir(root.join("u"))
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains('#'))
        .collect();
    assert!(leftovers.is_empty(), "staging files left: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_any_log_line() {
    for format in ["text", "json"] {
        let gw = Process::start(
            "file://{dir}/root",
            &[
                ("BUCKETFTP__LOG__LEVEL", "trace"),
                ("BUCKETFTP__LOG__FORMAT", format),
                ("AWS_SECRET_ACCESS_KEY", "aws-secret-in-env"),
            ],
        )
        .await;
        let mut ftp = gw.login().await;
        let mut data: &[u8] = b"logged transfer";
        ftp.put_file("a.txt", &mut data).await.expect("STOR");
        ftp.quit().await.ok();
        // A failed login with another secret-looking password.
        let mut bad = suppaftp::tokio::AsyncFtpStream::connect(gw.ftp)
            .await
            .expect("connect");
        assert!(bad.login("alice", "Wrong-Secret-42").await.is_err());
        let mut unknown = suppaftp::tokio::AsyncFtpStream::connect(gw.ftp)
            .await
            .expect("connect");
        assert!(unknown.login("mallory", "Other-Secret-43").await.is_err());
        gw.signal("TERM");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let log = gw.log_text();
        assert!(
            log.contains("a.txt"),
            "audit record written ({format}): {log}"
        );
        for secret in [
            PASSWORD,
            "Wrong-Secret-42",
            "Other-Secret-43",
            "aws-secret-in-env",
        ] {
            assert!(!log.contains(secret), "{secret} in the {format} log");
        }
        assert!(
            !log.contains("$argon2"),
            "a password hash in the {format} log"
        );
    }
}
