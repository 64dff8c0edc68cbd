//! Sessions scripted over a raw control connection ([`LineClient`]): the
//! command order of FileZilla and WinSCP, and the quirks of old embedded
//! clients (ALLO, `LIST -la`, bare `\n`, UTF-8 names, slow uploads with
//! NOOP, MKD of an existing directory).

use super::*;

on_local_and_memory!(
    filezilla_like_session,
    winscp_like_filepart_upload,
    names_with_spaces_and_utf8,
    mkd_of_an_existing_directory,
);

// ------------------------------------------------- scripted GUI sessions

/// FileZilla's order: FEAT, OPTS UTF8 ON, PWD, TYPE I, PASV + MLSD, then
/// a resumed download (PASV, REST, RETR).
async fn filezilla_like_session(backend: Backend) {
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    let clip = payload(50_000, 61);
    gw.put_object("video/clip.mp4", &clip).await;

    let mut ftp = LineClient::connect(gw.addr).await;
    ftp.expect("USER alice", 331).await;
    ftp.expect(&format!("PASS {PASSWORD}"), 230).await;
    let feat = ftp.expect("FEAT", 211).await;
    for feature in ["UTF8", "MLSD", "EPSV", "SIZE", "MDTM", "REST STREAM"] {
        assert!(
            feat.lines.iter().any(|l| l.trim() == feature),
            "FEAT lists {feature}: {}",
            feat.text()
        );
    }
    ftp.expect("OPTS UTF8 ON", 200).await;
    let pwd = ftp.expect("PWD", 257).await;
    assert!(pwd.text().starts_with("257 \"/\""), "{}", pwd.text());
    ftp.expect("TYPE I", 200).await;

    let root = String::from_utf8(ftp.download("MLSD").await).expect("UTF-8 MLSD");
    let video = mlsd_entry(&root, "video");
    assert_eq!(video.get("type").map(String::as_str), Some("dir"), "{root}");

    ftp.expect("CWD /video", 250).await;
    let listing = String::from_utf8(ftp.download("MLSD").await).expect("UTF-8 MLSD");
    let entry = mlsd_entry(&listing, "clip.mp4");
    assert_eq!(entry.get("type").map(String::as_str), Some("file"));
    assert_eq!(entry.get("size").map(String::as_str), Some("50000"));
    let size = ftp.expect("SIZE clip.mp4", 213).await;
    assert_eq!(size.text(), "213 50000");

    // Resume a download: PASV, REST, RETR.
    let data = ftp.data().await;
    ftp.expect("REST 20000", 350).await;
    let rest = ftp.receive(data, "RETR clip.mp4").await;
    assert!(rest == clip[20_000..], "REST+RETR returns the tail");
    assert!(stored(&gw, "video/clip.mp4").await == clip, "untouched");
    ftp.expect("QUIT", 221).await;
}

/// One MLSD line's facts (lower-cased names), found by file name.
fn mlsd_entry(listing: &str, name: &str) -> std::collections::BTreeMap<String, String> {
    let line = listing
        .lines()
        .find(|l| l.split_once(' ').is_some_and(|(_, n)| n == name))
        .unwrap_or_else(|| panic!("MLSD has {name}:\n{listing}"));
    let (facts, _) = line.split_once(' ').expect("facts and name");
    facts
        .split(';')
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect()
}

/// WinSCP's safe upload: STOR `name.filepart`, then RNFR/RNTO over the
/// existing `name`.
async fn winscp_like_filepart_upload(backend: Backend) {
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    gw.put_object("docs/report.pdf", b"last week's report")
        .await;
    let report = payload(180_000, 71);
    let mut ftp = LineClient::connect(gw.addr).await;
    ftp.login("alice", PASSWORD).await;
    ftp.expect("CWD /docs", 250).await;
    ftp.upload("STOR report.pdf.filepart", &report).await;
    assert!(stored(&gw, "docs/report.pdf.filepart").await == report);
    ftp.expect("RNFR report.pdf.filepart", 350).await;
    ftp.expect("RNTO /docs/report.pdf", 250).await;
    assert!(stored(&gw, "docs/report.pdf").await == report);
    let keys = file_keys(&gw).await;
    assert_eq!(keys, ["docs/report.pdf"], "no .filepart left");
    ftp.expect("QUIT", 221).await;
}

// ------------------------------------------------- legacy client quirks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allo_is_accepted() {
    let Some(gw) = Gateway::start(Backend::Local).await else {
        return;
    };
    let mut ftp = LineClient::connect(gw.addr).await;
    ftp.login("alice", PASSWORD).await;
    let allo = ftp.cmd("ALLO 4096").await;
    assert!(matches!(allo.code, 200 | 202), "{}", allo.text());
    let data = payload(4096, 81);
    ftp.upload("STOR allocated.bin", &data).await;
    assert!(stored(&gw, "allocated.bin").await == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_with_ls_flags() {
    let Some(gw) = Gateway::start(Backend::Local).await else {
        return;
    };
    gw.put_object("listed.txt", &payload(1234, 82)).await;
    gw.put_object("sub/inner.txt", b"inner").await;
    let mut ftp = LineClient::connect(gw.addr).await;
    ftp.login("alice", PASSWORD).await;
    for command in ["LIST -la", "LIST -al", "LIST -a", "LIST -l"] {
        let listing = String::from_utf8(ftp.download(command).await).expect("UTF-8 LIST");
        let lines: Vec<&str> = listing.lines().collect();
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with('-') && l.contains(" 1234 ") && l.ends_with(" listed.txt")),
            "{command} lists the file:\n{listing}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with('d') && l.ends_with(" sub")),
            "{command} lists the directory:\n{listing}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_line_endings() {
    let Some(gw) = Gateway::start(Backend::Local).await else {
        return;
    };
    let mut ftp = LineClient::connect(gw.addr).await.bare_lf();
    ftp.login("alice", PASSWORD).await;
    ftp.expect("MKD lf dir", 257).await;
    let data = payload(64_000, 83);
    ftp.upload("STOR lf dir/data.bin", &data).await;
    assert!(stored(&gw, "lf dir/data.bin").await == data);
    assert!(ftp.download("RETR lf dir/data.bin").await == data);
    let names = String::from_utf8(ftp.download("NLST lf dir").await).expect("NLST");
    assert!(names.lines().any(|l| l.ends_with("data.bin")), "{names}");
    ftp.expect("QUIT", 221).await;
}

async fn names_with_spaces_and_utf8(backend: Backend) {
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    let dir = "Été 2024 photos";
    let name = "Grüße — 日本語 résumé.txt";
    let path = format!("{dir}/{name}");
    let mut ftp = LineClient::connect(gw.addr).await;
    ftp.login("alice", PASSWORD).await;
    ftp.expect("OPTS UTF8 ON", 200).await;
    ftp.expect(&format!("MKD {dir}"), 257).await;
    ftp.upload(&format!("STOR {path}"), name.as_bytes()).await;
    assert_eq!(stored(&gw, &path).await, name.as_bytes(), "key verbatim");
    if backend == Backend::Local {
        let on_disk = gw.dir.path().join("root").join(dir).join(name);
        assert_eq!(
            std::fs::read(on_disk).expect("file on disk"),
            name.as_bytes()
        );
    }
    ftp.expect(&format!("CWD {dir}"), 250).await;
    let names = String::from_utf8(ftp.download("NLST").await).expect("UTF-8 NLST");
    assert_eq!(names.lines().collect::<Vec<_>>(), [name], "NLST");
    let list = String::from_utf8(ftp.download("LIST").await).expect("UTF-8 LIST");
    assert!(
        list.lines().any(|l| l.ends_with(&format!(" {name}"))),
        "{list}"
    );
    assert_eq!(ftp.download(&format!("RETR {name}")).await, name.as_bytes());
    ftp.expect("QUIT", 221).await;

    // The same object through curl's percent-encoded URL.
    if installed("curl") {
        let encoded: String = path
            .split('/')
            .map(|seg| {
                seg.bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("/");
        let (body, _) = run(curl().arg(url(&gw, &encoded))).await;
        assert_eq!(body, name);
    }
}

/// Uploads 12 chunks 250 ms apart (3 s) to a gateway whose idle timeout is
/// 2 s, so the control channel is silent for longer than the timeout while
/// data flows; with `noop`, a NOOP is sent after 2.5 s and its answer
/// awaited before the rest is sent (a strictly sequential client).
///
/// The idle timeout is set through the environment on the real binary: the
/// in-process harness already writes `idle_timeout` into `[server]`, so
/// `Options::server_extra` cannot override it (duplicate TOML key).
async fn slow_upload_with_short_idle_timeout(noop: bool) {
    let gw = Process::start(
        "file://{dir}/root",
        &[("BUCKETFTP__SERVER__IDLE_TIMEOUT", "2s")],
    )
    .await;
    let mut ftp = LineClient::connect(gw.ftp).await;
    ftp.login("alice", PASSWORD).await;
    let mut data = ftp.data().await;
    let start = ftp.cmd("STOR slow.bin").await;
    assert_eq!(start.code, 150, "{}", start.text());
    let chunks: Vec<Vec<u8>> = (0..12).map(|i| payload(4096, 90 + i)).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        data.write_all(chunk).await.expect("write chunk");
        data.flush().await.expect("flush chunk");
        if noop && i == 10 {
            ftp.send("NOOP").await;
            let reply = ftp.reply().await;
            assert_eq!(
                reply.code,
                200,
                "NOOP mid-transfer\n{}\n--- gateway log\n{}",
                ftp.transcript.join("\n"),
                gw.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    data.shutdown().await.expect("close data");
    drop(data);
    let done = ftp.reply().await;
    assert_eq!(
        done.code,
        226,
        "{}\n--- gateway log\n{}",
        ftp.transcript.join("\n"),
        gw.log_text()
    );
    let on_disk = gw.dir.path().join("root").join("slow.bin");
    assert!(std::fs::read(on_disk).expect("uploaded file") == chunks.concat());

    // The short timeout was in force: the now idle session is closed
    // (libunftp says "221 Session timed out"), while the transfer above was
    // not cut.
    match ftp.try_reply().await {
        None => {}
        Some(reply) => assert!(matches!(reply.code, 221 | 421), "{}", reply.text()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upload_outlives_idle_timeout() {
    slow_upload_with_short_idle_timeout(false).await;
}

/// NOOP is answered while an upload runs (our libunftp patch
/// `datachan-release-session-lock`; docs/upstream.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noop_during_slow_upload_is_answered() {
    slow_upload_with_short_idle_timeout(true).await;
}

async fn mkd_of_an_existing_directory(backend: Backend) {
    for (extra, existing_ok) in [("", false), ("mkd_existing_ok = true\n", true)] {
        let Some(gw) = Gateway::start_with(
            backend,
            Options {
                server_extra: extra.into(),
                ..Options::default()
            },
        )
        .await
        else {
            return;
        };
        gw.put_object("inbox/file.txt", b"a file").await;
        let mut ftp = LineClient::connect(gw.addr).await;
        ftp.login("alice", PASSWORD).await;
        ftp.expect("MKD upload", 257).await;
        let again = ftp.cmd("MKD upload").await;
        if existing_ok {
            assert_eq!(again.code, 257, "{}", again.text());
        } else {
            assert_eq!(again.code, 550, "{}", again.text());
        }
        let prefix_only = ftp.cmd("MKD inbox").await;
        assert_eq!(
            prefix_only.code == 550,
            !existing_ok,
            "directory made by another tool: {}",
            prefix_only.text()
        );
        // A file of that name is never a directory.
        ftp.expect("MKD inbox/file.txt", 550).await;
        assert!(is_dir_in_store(&gw, "upload").await);
        assert_eq!(stored(&gw, "inbox/file.txt").await, b"a file");
        ftp.expect("QUIT", 221).await;
    }
}
