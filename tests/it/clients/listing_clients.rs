//! Clients that parse listings: wget's recursive mirror and ftputil read
//! the date of every `LIST` line (directories included), and the classic
//! command-line clients' `mget PATTERN` needs the server to expand
//! `NLST PATTERN`.

use super::*;
use std::process::Stdio;

on_local_and_memory!(
    wget_mirror,
    ftputil_walk_stat_upload_if_newer,
    tnftp_mget_pattern
);

/// Files another tool wrote: on S3 the directories are bare prefixes with
/// no marker, so they have no date of their own.
async fn seed(gw: &Gateway) {
    gw.put_object("a.txt", b"top\n").await;
    gw.put_object("sub/b.txt", b"in sub\n").await;
    gw.put_object("sub/deeper/c.bin", &payload(70_000, 5)).await;
}

async fn wget_mirror(backend: Backend) {
    if !installed("wget") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    seed(&gw).await;
    let mirror = scratch(&gw, "mirror");
    std::fs::create_dir_all(&mirror).expect("mirror dir");
    let out = output(
        Command::new("wget")
            .args(["-m", "-nH", "--no-verbose", "-P"])
            .arg(&mirror)
            .arg(format!(
                "ftp://alice:{PASSWORD}@127.0.0.1:{}/",
                gw.addr.port()
            )),
    )
    .await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "wget -m failed:\n{log}");
    assert!(!log.contains("Skipping"), "wget skipped something:\n{log}");
    let mut got = tree(&mirror);
    // wget -m keeps each directory's raw listing.
    got.retain(|path, _| !path.ends_with(".listing"));
    let want: std::collections::BTreeMap<String, Option<Vec<u8>>> = [
        ("a.txt", Some(b"top\n".to_vec())),
        ("sub", None),
        ("sub/b.txt", Some(b"in sub\n".to_vec())),
        ("sub/deeper", None),
        ("sub/deeper/c.bin", Some(payload(70_000, 5))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert!(
        got == want,
        "mirror differs: {:?}\n{log}",
        got.keys().collect::<Vec<_>>()
    );
}

async fn ftputil_walk_stat_upload_if_newer(backend: Backend) {
    let have = std::process::Command::new("python3")
        .args(["-W", "ignore", "-c", "import ftputil"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        if std::env::var("BUCKETFTP_REQUIRE_EMULATORS").as_deref() == Ok("1") {
            panic!("ftputil is not installed: .ci/install.sh installs it");
        }
        eprintln!("\n*** SKIPPED: python ftputil is not installed ***\n");
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    seed(&gw).await;
    let local = scratch(&gw, "ftputil");
    std::fs::create_dir_all(&local).expect("local dir");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/clients/ftputil_session.py"
    );
    let (stdout, _) = run(Command::new("python3")
        .arg(script)
        .args(["127.0.0.1", &gw.addr.port().to_string(), "alice", PASSWORD])
        .arg(&local))
    .await;
    let seen: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("ftputil output {stdout:?}: {e}"));
    assert_eq!(
        seen["walk"],
        serde_json::json!([
            ["/", ["sub"], ["a.txt"]],
            ["/sub", ["deeper"], ["b.txt"]],
            ["/sub/deeper", [], ["c.bin"]],
        ]),
        "{seen}"
    );
    assert_eq!(seen["isdir_sub"], true, "{seen}");
    assert_eq!(seen["isfile_sub"], false, "{seen}");
    assert!(
        seen["sub_mtime"].as_f64().is_some_and(|t| t > 0.0),
        "{seen}"
    );
    assert_eq!(seen["b_size"], 7, "{seen}");
    assert_eq!(
        seen["upload_missing"], true,
        "uploads a missing file: {seen}"
    );
    assert_eq!(seen["upload_older"], false, "skips an older file: {seen}");
    assert_eq!(seen["upload_newer"], true, "uploads a newer file: {seen}");
    assert_eq!(stored(&gw, "sub/new.txt").await, b"second version\n");
}

/// tnftp's `mget` sends `NLST pattern` and fetches each name returned, in
/// the current directory and after a `cd`.
async fn tnftp_mget_pattern(backend: Backend) {
    if !installed("tnftp") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    gw.put_object("m1.txt", b"one\n").await;
    gw.put_object("m2.txt", b"two\n").await;
    gw.put_object("other.txt", b"other\n").await;
    gw.put_object("logs/day-1.log", b"d1\n").await;
    gw.put_object("logs/day-2.log", b"d2\n").await;
    gw.put_object("logs/keep.txt", b"k\n").await;
    let local = scratch(&gw, "tnftp");
    std::fs::create_dir_all(&local).expect("local dir");
    let script = format!(
        "open 127.0.0.1 {port}\nuser alice {PASSWORD}\nbinary\nmget m*.txt\ncd logs\nmget day-?.log\nbye\n",
        port = gw.addr.port()
    );
    let mut child = Command::new("tnftp")
        // -n: log in by the script's `user`; -i: no per-file prompts in mget.
        .args(["-n", "-i", "-p"])
        .current_dir(&local)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tnftp");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(script.as_bytes()).await.expect("script");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("tnftp finished")
        .expect("tnftp ran");
    let transcript = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got = tree(&local);
    let names: Vec<&String> = got.keys().collect();
    assert_eq!(
        names,
        ["day-1.log", "day-2.log", "m1.txt", "m2.txt"],
        "{transcript}"
    );
    assert_eq!(got["m2.txt"].as_deref(), Some(&b"two\n"[..]));
    assert_eq!(got["day-1.log"].as_deref(), Some(&b"d1\n"[..]));
}
