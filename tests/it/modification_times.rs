//! Modification times (issue #17): `MFMT` and `MDTM <time> <path>` on every
//! store, reported by MDTM, MLSD and LIST, kept as rclone's `mtime`
//! metadata on object stores, with real clients — ftplib, curl, rclone
//! (`copy`, `sync`, `lsl`; and rclone's own uploads straight to the bucket),
//! lftp `mirror`.

use crate::common;
use crate::common::programs;

use common::{attributes, metadata, payload, Backend, Gateway, Options, PASSWORD};
use object_store::{Attribute, Attributes};
use programs::{installed, run};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};
use tokio::process::Command;

/// Runs a Python ftplib script logged in as alice; `{port}` and
/// `{password}` are filled in. Returns its stdout lines.
async fn ftplib(gw: &Gateway, body: &str) -> Vec<String> {
    let script = format!(
        "import ftplib\n\
         f = ftplib.FTP(); f.connect('127.0.0.1', {}); f.login('alice', '{PASSWORD}')\n\
         def reply(cmd):\n    try:\n        return f.sendcmd(cmd)\n    except ftplib.Error as e:\n        return str(e)\n\
         {body}\n\
         f.quit()",
        gw.addr.port()
    );
    let (stdout, _) = run(Command::new("python3").args(["-c", &script])).await;
    stdout.lines().map(str::to_string).collect()
}

fn scratch(gw: &Gateway, name: &str) -> PathBuf {
    let dir = gw.dir.path().join("client").join(name);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `YYYY-MM-DD HH:MM:SS` of a time, UTC (what `rclone lsl` prints before
/// its fraction).
fn shown(secs: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from(UNIX_EPOCH + Duration::from_secs(secs))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Writes a file with the given modification time (whole seconds).
fn write_with_time(path: &Path, bytes: &[u8], secs: u64) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
    std::fs::File::options()
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(UNIX_EPOCH + Duration::from_secs(secs)))
        .expect("set mtime");
}

/// The time a local file was last modified, in whole seconds.
fn mtime_of(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .expect("mtime")
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

// 2020-01-02T03:04:05Z, 2021-03-04T05:06:07Z, 2022-05-06T07:08:09Z
const T2020: u64 = 1_577_934_245;
const T2021: u64 = 1_614_834_367;
const T2022: u64 = 1_651_820_889;

/// MFMT (ftplib, curl) and the two-argument MDTM set the time; MDTM, MLSD
/// and LIST report it; FEAT lists MFMT; the object's bytes, its stored
/// SHA-256 (of a multipart upload, written after the commit) and its
/// Content-Type survive; on object stores the time is rclone's `mtime`
/// metadata in that cloud's form. Missing files and directories are 550.
async fn mfmt_from_clients(backend: Backend) {
    if !installed("curl") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    let data = payload(6 * 1024 * 1024 + 5, 7);
    let mut ftp = gw.login("alice").await;
    ftp.mkdir("dir").await.expect("MKD");
    ftp.put_file("dir/photo.jpg", &mut data.as_slice())
        .await
        .expect("STOR");
    ftp.quit().await.ok();
    let before = attributes(&gw, "dir/photo.jpg").await;
    let sha = metadata(&before, "sha256").map(str::to_string);
    // (memory:// keeps no digest of multipart uploads: nothing to lose.)
    assert!(
        sha.is_some() || backend == Backend::Memory,
        "the multipart upload's digest was stored"
    );

    let lines = ftplib(
        &gw,
        "print([l.strip() for l in f.sendcmd('FEAT').splitlines() if 'MFMT' in l])\n\
         print(reply('MFMT 20200102030405 dir/photo.jpg'))\n\
         print(reply('MDTM dir/photo.jpg'))\n\
         print(reply('MDTM 20210304050607 dir/photo.jpg'))\n\
         print(reply('MDTM dir/photo.jpg'))\n\
         print([l for l in f.mlsd('dir', ['modify']) if l[0] == 'photo.jpg'][0][1]['modify'])\n\
         out = []; f.retrlines('LIST dir', out.append); print([l for l in out if 'photo.jpg' in l][0])\n\
         print(reply('MFMT 20200102030405 dir/missing.jpg')[:3])\n\
         print(reply('MFMT 20200102030405 dir')[:3])\n\
         print(reply('MFMT yesterday dir/photo.jpg')[:3])",
    )
    .await;
    assert_eq!(lines[0], "['MFMT']", "{lines:?}");
    assert_eq!(
        lines[1], "213 Modify=20200102030405; dir/photo.jpg",
        "{lines:?}"
    );
    assert_eq!(lines[2], "213 20200102030405", "{lines:?}");
    assert!(
        lines[3].starts_with("213 Modify=20210304050607"),
        "{lines:?}"
    );
    assert_eq!(lines[4], "213 20210304050607", "{lines:?}");
    assert_eq!(lines[5], "20210304050607", "MLSD modify: {lines:?}");
    assert!(lines[6].contains("Mar 04 2021"), "LIST: {lines:?}");
    assert_eq!(&lines[7..], ["550", "550", "501"], "{lines:?}");

    let port = gw.addr.port();
    let url = format!("ftp://alice:{PASSWORD}@127.0.0.1:{port}/");
    let (_, trace) = run(Command::new("curl").args([
        "-sS",
        "-v",
        "-Q",
        "MFMT 20220506070809 dir/photo.jpg",
        "-Q",
        "MDTM dir/photo.jpg",
        &url,
    ]))
    .await;
    assert!(
        trace.contains("< 213 Modify=20220506070809; dir/photo.jpg"),
        "curl: {trace}"
    );
    assert!(trace.contains("< 213 20220506070809"), "curl: {trace}");

    let after = attributes(&gw, "dir/photo.jpg").await;
    assert_eq!(metadata(&after, "sha256").map(str::to_string), sha);
    assert_eq!(
        after.get(&Attribute::ContentType),
        before.get(&Attribute::ContentType),
        "Content-Type kept"
    );
    let expected = match backend {
        Backend::S3 | Backend::Memory => Some(T2022.to_string()),
        Backend::Azure => Some("2022-05-06T07:08:09.000000000Z".to_string()),
        _ => None,
    };
    assert_eq!(
        metadata(&after, "mtime").map(str::to_string),
        expected,
        "rclone's mtime form"
    );
    assert!(gw.object("dir/photo.jpg").await.expect("object") == data);
    if backend == Backend::Local {
        let file = gw.dir.path().join("root/dir/photo.jpg");
        assert_eq!(mtime_of(&file), T2022, "the file's own time on file://");
    }
    // A new upload is a new file: its time is the upload's again.
    let mut ftp = gw.login("alice").await;
    ftp.put_file("dir/photo.jpg", &mut &b"new"[..])
        .await
        .expect("STOR");
    let mdtm = ftp.mdtm("dir/photo.jpg").await.expect("MDTM");
    assert!(
        mdtm.and_utc().timestamp() as u64 > T2022,
        "upload time: {mdtm}"
    );
    ftp.quit().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfmt_on_local() {
    mfmt_from_clients(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfmt_on_memory() {
    mfmt_from_clients(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfmt_on_s3() {
    mfmt_from_clients(Backend::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfmt_on_azure() {
    mfmt_from_clients(Backend::Azure).await;
}

// -------------------------------------------------------------- listings

/// HEADs the gateway made on `backend` (the instrumented store's `head`
/// operation).
async fn heads(gw: &Gateway, backend: &str) -> f64 {
    operations(gw, backend, "head").await
}

/// Requests of one operation the gateway made on `backend`, from /metrics.
async fn operations(gw: &Gateway, backend: &str, operation: &str) -> f64 {
    let (_, text) = common::http_get(gw.http.expect("http"), "/metrics")
        .await
        .expect("metrics");
    text.lines()
        .filter(|l| l.starts_with("bucketftp_storage_operation_duration_seconds_count{"))
        .filter(|l| {
            l.contains(&format!("backend=\"{backend}\""))
                && l.contains(&format!("operation=\"{operation}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// MLSD and LIST show stored times by reading each file's metadata (one
/// HEAD per file) when the listing holds at most
/// `storage.listing_mtime_limit` files, after a `*` pattern filtered it;
/// larger listings show upload times and make no HEAD; NLST never does.
async fn listing_times(backend: Backend, label: &str) {
    let opts = Options {
        http: true,
        storage_extra: "part_size = \"5MiB\"\nlisting_mtime_limit = 3\n".into(),
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(backend, opts).await else {
        return;
    };
    let mut ftp = gw.login("alice").await;
    let mut names = Vec::new();
    for i in 0..3 {
        names.push(format!("small/s{i}.txt"));
    }
    for i in 0..4 {
        names.push(format!("big/b{i}.txt"));
    }
    for name in &names {
        ftp.put_file(name, &mut &b"x"[..]).await.expect("STOR");
    }
    ftp.quit().await.ok();
    let mfmt: String = names
        .iter()
        .map(|n| format!("reply('MFMT 20200102030405 {n}')\n"))
        .collect();
    let writes = operations(&gw, label, "set_metadata").await;
    ftplib(&gw, &mfmt).await;
    if backend != Backend::Memory {
        assert_eq!(
            operations(&gw, label, "set_metadata").await - writes,
            7.0,
            "each MFMT is one timed metadata write"
        );
    }

    let h0 = heads(&gw, label).await;
    let nlst = ftplib(&gw, "print(sorted(f.nlst('small')))").await;
    assert_eq!(nlst, ["['s0.txt', 's1.txt', 's2.txt']"]);
    let h1 = heads(&gw, label).await;
    assert_eq!(h1, h0, "NLST reads no metadata");

    let small = ftplib(
        &gw,
        "print(sorted(set(fact['modify'] for name, fact in f.mlsd('small', ['modify']))))",
    )
    .await;
    assert_eq!(small, ["['20200102030405']"], "stored times");
    let h2 = heads(&gw, label).await;
    assert_eq!(h2 - h1, 3.0, "one HEAD per file");

    let big = ftplib(
        &gw,
        "print([fact['modify'][:4] for name, fact in f.mlsd('big', ['modify'])])",
    )
    .await;
    assert!(
        !big[0].contains("2020"),
        "above the limit: upload times {big:?}"
    );
    let h3 = heads(&gw, label).await;
    assert_eq!(h3, h2, "no HEAD above the limit");

    let pattern = ftplib(
        &gw,
        "out = []; f.retrlines('LIST big/*1.txt', out.append); print(out)",
    )
    .await;
    assert!(pattern[0].contains("Jan 02 2020"), "{pattern:?}");
    let h4 = heads(&gw, label).await;
    assert_eq!(h4 - h3, 1.0, "only the file the pattern kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_times_on_memory() {
    if common::alone(module_path!(), "listing_times_on_memory").await {
        return;
    }
    listing_times(Backend::Memory, "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_times_on_s3() {
    if common::alone(module_path!(), "listing_times_on_s3").await {
        return;
    }
    listing_times(Backend::S3, "s3").await;
}

/// S3 resets what a metadata REPLACE does not repeat: an object stored as
/// STANDARD_IA keeps its class (read by a signed HEAD, since object_store's
/// HEAD does not return it), its Content-Type and its other metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfmt_keeps_the_storage_class_on_s3() {
    let opts = Options {
        storage_extra: "part_size = \"5MiB\"\nstorage_class = \"STANDARD_IA\"\n".into(),
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(Backend::S3, opts).await else {
        return;
    };
    let mut ftp = gw.login("alice").await;
    ftp.put_file("cold.txt", &mut &b"cold"[..])
        .await
        .expect("STOR");
    ftp.quit().await.ok();
    let lines = ftplib(&gw, "print(reply('MFMT 20200102030405 cold.txt'))").await;
    assert_eq!(lines, ["213 Modify=20200102030405; cold.txt"]);
    let script = format!(
        "import boto3, os\n\
         s3 = boto3.client('s3', endpoint_url=os.environ['BUCKETFTP_TEST_S3_ENDPOINT'], \
         aws_access_key_id='testing', aws_secret_access_key='testing', region_name='us-east-1')\n\
         h = s3.head_object(Bucket=os.environ.get('BUCKETFTP_TEST_S3_BUCKET', 'bucketftp'), Key='{}')\n\
         print(h.get('StorageClass'), h['ContentType'], h['Metadata'].get('mtime'), 'sha256' in h['Metadata'])",
        gw.key("cold.txt").as_ref()
    );
    let (stdout, _) = run(Command::new("python3").args(["-c", &script])).await;
    assert_eq!(
        stdout.trim(),
        format!("STANDARD_IA text/plain {T2020} True"),
        "after MFMT"
    );
}

// ---------------------------------------------------------------- rclone

/// `rclone` with an FTP remote `gw:` for the gateway, configured through
/// the environment only.
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

/// `rclone lsl` output as (path, "YYYY-MM-DD HH:MM:SS"), sorted.
fn lsl(stdout: &str) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let _size = words.next()?;
            let date = words.next()?;
            let time = words.next()?.split('.').next()?;
            let path = words.collect::<Vec<_>>().join(" ");
            Some((path, format!("{date} {time}")))
        })
        .collect();
    rows.sort();
    rows
}

/// `rclone copy` keeps the source's times (`rclone lsl` through the gateway
/// shows them); `rclone sync` re-copies a file whose content changed but
/// not its size, and only that file; a further sync copies nothing.
async fn rclone_keeps_times(backend: Backend) {
    if !installed("rclone") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    let rclone = rclone(&gw).await;
    let src = scratch(&gw, "src");
    write_with_time(&src.join("a.txt"), b"aaaa", T2020);
    write_with_time(&src.join("sub/b.bin"), &payload(100_000, 3), T2021);
    run(rclone().arg("copy").arg(&src).arg("gw:backup")).await;
    let (out, _) = run(rclone().args(["lsl", "gw:backup"])).await;
    assert_eq!(
        lsl(&out),
        [
            ("a.txt".to_string(), shown(T2020)),
            ("sub/b.bin".to_string(), shown(T2021))
        ],
        "rclone lsl:\n{out}"
    );

    // Same size, new content and time: only a.txt goes again.
    write_with_time(&src.join("a.txt"), b"bbbb", T2022);
    let (_, log) = run(rclone().args(["-v", "sync"]).arg(&src).arg("gw:backup")).await;
    assert!(log.contains("a.txt: Copied"), "sync log:\n{log}");
    assert!(!log.contains("b.bin: Copied"), "sync log:\n{log}");
    assert_eq!(
        gw.object("backup/a.txt").await.as_deref(),
        Some(&b"bbbb"[..])
    );
    let (out, _) = run(rclone().args(["lsl", "gw:backup"])).await;
    assert!(
        lsl(&out).contains(&("a.txt".to_string(), shown(T2022))),
        "rclone lsl:\n{out}"
    );
    let (_, log) = run(rclone().args(["-v", "sync"]).arg(&src).arg("gw:backup")).await;
    assert!(!log.contains("Copied"), "nothing left to copy:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_keeps_times_on_local() {
    rclone_keeps_times(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_keeps_times_on_memory() {
    rclone_keeps_times(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_keeps_times_on_s3() {
    rclone_keeps_times(Backend::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_keeps_times_on_azure() {
    rclone_keeps_times(Backend::Azure).await;
}

/// Files rclone uploads straight to the bucket (its s3 / azureblob
/// back-ends, which write `mtime` themselves) show rclone's times through
/// the gateway: MDTM, and `rclone lsl` over FTP.
async fn rclone_uploads_show_their_times(backend: Backend) {
    if !installed("rclone") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    let rclone = rclone(&gw).await;
    let (remote, container) = match backend {
        Backend::S3 => {
            let endpoint = std::env::var("BUCKETFTP_TEST_S3_ENDPOINT").expect("s3 endpoint");
            let bucket =
                std::env::var("BUCKETFTP_TEST_S3_BUCKET").unwrap_or_else(|_| "bucketftp".into());
            (
                vec![
                    ("RCLONE_CONFIG_CLOUD_TYPE", "s3".to_string()),
                    ("RCLONE_CONFIG_CLOUD_PROVIDER", "Other".to_string()),
                    ("RCLONE_CONFIG_CLOUD_ENDPOINT", endpoint),
                    ("RCLONE_CONFIG_CLOUD_ACCESS_KEY_ID", "testing".to_string()),
                    (
                        "RCLONE_CONFIG_CLOUD_SECRET_ACCESS_KEY",
                        "testing".to_string(),
                    ),
                    ("RCLONE_CONFIG_CLOUD_REGION", "us-east-1".to_string()),
                    ("RCLONE_CONFIG_CLOUD_FORCE_PATH_STYLE", "true".to_string()),
                ],
                bucket,
            )
        }
        _ => {
            let endpoint = std::env::var("BUCKETFTP_TEST_AZURE_ENDPOINT").expect("azure endpoint");
            let container = std::env::var("BUCKETFTP_TEST_AZURE_CONTAINER")
                .unwrap_or_else(|_| "bucketftp".into());
            (
                vec![
                    ("RCLONE_CONFIG_CLOUD_TYPE", "azureblob".to_string()),
                    ("RCLONE_CONFIG_CLOUD_ACCOUNT", "devstoreaccount1".to_string()),
                    (
                        "RCLONE_CONFIG_CLOUD_KEY",
                        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
                            .to_string(),
                    ),
                    ("RCLONE_CONFIG_CLOUD_ENDPOINT", endpoint),
                ],
                container,
            )
        }
    };
    let src = scratch(&gw, "direct");
    write_with_time(&src.join("cam/frame.jpg"), &payload(3000, 9), T2021);
    let target = format!("cloud:{container}/{}/inbox", gw.store.base.as_ref());
    let mut direct = rclone();
    for (name, value) in &remote {
        direct.env(name, value);
    }
    run(direct.arg("copy").arg(&src).arg(&target)).await;
    let stored = attributes(&gw, "inbox/cam/frame.jpg").await;
    assert!(metadata(&stored, "mtime").is_some(), "rclone wrote mtime");

    let mut ftp = gw.login("alice").await;
    let mdtm = ftp.mdtm("inbox/cam/frame.jpg").await.expect("MDTM");
    assert_eq!(mdtm.and_utc().timestamp() as u64, T2021, "MDTM");
    ftp.quit().await.ok();
    let (out, _) = run(rclone().args(["lsl", "gw:inbox"])).await;
    assert_eq!(
        lsl(&out),
        [("cam/frame.jpg".to_string(), shown(T2021))],
        "{out}"
    );
    // And rclone over FTP finds nothing to copy.
    let (_, log) = run(rclone().args(["-v", "copy"]).arg(&src).arg("gw:inbox")).await;
    assert!(!log.contains("Copied"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_s3_uploads_show_their_times() {
    rclone_uploads_show_their_times(Backend::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_azure_uploads_show_their_times() {
    rclone_uploads_show_their_times(Backend::Azure).await;
}

// ------------------------------------------------------------------ lftp

/// `lftp mirror -R` keeps the local times on the gateway (it sends MFMT
/// after each upload) and `lftp mirror` back keeps them locally.
async fn lftp_mirror_keeps_times(backend: Backend) {
    if !installed("lftp") {
        return;
    }
    let Some(gw) = Gateway::start(backend).await else {
        return;
    };
    let src = scratch(&gw, "up");
    write_with_time(&src.join("one.txt"), b"one\n", T2020);
    write_with_time(&src.join("deep/two.bin"), &payload(50_000, 4), T2021);
    let port = gw.addr.port().to_string();
    let down = scratch(&gw, "down");
    let script = format!(
        "set ftp:ssl-allow no; mirror -R {} /tree; mirror /tree {}; bye",
        src.display(),
        down.display()
    );
    run(Command::new("lftp").args([
        "-u",
        &format!("alice,{PASSWORD}"),
        "-p",
        &port,
        "-e",
        &script,
        "127.0.0.1",
    ]))
    .await;
    let mut ftp = gw.login("alice").await;
    for (path, secs) in [("tree/one.txt", T2020), ("tree/deep/two.bin", T2021)] {
        let mdtm = ftp.mdtm(path).await.expect("MDTM");
        assert_eq!(
            mdtm.and_utc().timestamp() as u64,
            secs,
            "{path} on the gateway"
        );
    }
    ftp.quit().await.ok();
    assert_eq!(mtime_of(&down.join("one.txt")), T2020);
    assert_eq!(mtime_of(&down.join("deep/two.bin")), T2021);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lftp_mirror_keeps_times_on_local() {
    lftp_mirror_keeps_times(Backend::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lftp_mirror_keeps_times_on_memory() {
    lftp_mirror_keeps_times(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lftp_mirror_keeps_times_on_s3() {
    lftp_mirror_keeps_times(Backend::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lftp_mirror_keeps_times_on_azure() {
    lftp_mirror_keeps_times(Backend::Azure).await;
}

// ------------------------------------------------------------------- GCS

/// GCS through object_store: MFMT PATCHes the object's metadata (JSON API,
/// fake-gcs-server) with rclone's `mtime` and gsutil's
/// `goog-reserved-file-mtime`, keeping the other keys; MDTM and MLSD report
/// it. The same writer stores a multipart upload's digests (its PATCH is
/// exercised here directly: fake-gcs-server cannot take object_store's XML
/// multipart uploads). The unftp-sbe-gcs engine neither lists nor does it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfmt_on_gcs() {
    let Some(gw) = Gateway::start(Backend::Gcs).await else {
        return;
    };
    let name = "dir/ünï code.txt";
    gw.put_object(name, b"hello gcs").await;
    let writer = gw.store.metadata_writer.clone().expect("gcs writer");
    // Not the digest of the bytes: XSHA256 answering it proves the answer
    // came from the PATCHed metadata, not from reading the object.
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"a stored value"));
    let mut digest = Attributes::new();
    digest.insert(Attribute::Metadata("sha256".into()), sha.clone().into());
    writer
        .replace(&gw.key(name), &bucketftp::Precondition::default(), &digest)
        .await
        .expect("PATCH sha256");

    let lines = ftplib(
        &gw,
        "print([l.strip() for l in f.sendcmd('FEAT').splitlines() if 'MFMT' in l])\n\
         print(reply('MFMT 20210304050607 dir/ünï code.txt'))\n\
         print(reply('MDTM dir/ünï code.txt'))\n\
         print([l for l in f.mlsd('dir', ['modify']) if l[0] == 'ünï code.txt'][0][1]['modify'])",
    )
    .await;
    assert_eq!(lines[0], "['MFMT']", "{lines:?}");
    assert!(
        lines[1].starts_with("213 Modify=20210304050607"),
        "{lines:?}"
    );
    assert_eq!(lines[2], "213 20210304050607", "{lines:?}");
    assert_eq!(lines[3], "20210304050607", "{lines:?}");
    let stored = attributes(&gw, name).await;
    assert_eq!(metadata(&stored, "mtime"), Some("2021-03-04T05:06:07Z"));
    assert_eq!(
        metadata(&stored, "goog-reserved-file-mtime"),
        Some(T2021.to_string().as_str())
    );
    assert_eq!(metadata(&stored, "sha256"), Some(sha.as_str()), "kept");
    let mut ftp = gw.login("alice").await;
    let reply = ftp
        .custom_command(
            "XSHA256 dir/ünï code.txt",
            &[suppaftp::Status::RequestedFileActionOk],
        )
        .await
        .expect("XSHA256");
    assert!(
        String::from_utf8_lossy(&reply.body).contains(&sha),
        "answered from the PATCHed digest: {reply:?}"
    );
    ftp.quit().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfmt_refused_and_unlisted_with_unftp_sbe_gcs() {
    let Some(gw) = Gateway::start(Backend::GcsSbe).await else {
        return;
    };
    gw.put_object("a.txt", b"abc").await;
    let lines = ftplib(
        &gw,
        "print([l.strip() for l in f.sendcmd('FEAT').splitlines() if 'MFMT' in l])\n\
         print(reply('MFMT 20200102030405 a.txt')[:3])",
    )
    .await;
    assert_eq!(lines, ["[]", "502"]);
}

/// GCS lists the stored times with the directory: one JSON API
/// `objects.list` beside the XML listing instead of a HEAD per file, so a
/// directory of any size shows them (here 5 files against a
/// `listing_mtime_limit` of 3) without a HEAD; names with spaces and
/// non-ASCII letters match; a subdirectory's files stay out (it shows
/// as undated, year 2000);
/// `listing_mtime_limit = 0` would turn it off (the HEAD path's test
/// covers that limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_times_on_gcs_come_with_the_listing() {
    if common::alone(module_path!(), "listing_times_on_gcs_come_with_the_listing").await {
        return;
    }
    let opts = Options {
        http: true,
        storage_extra: "listing_mtime_limit = 3\n".into(),
        ..Options::default()
    };
    let Some(gw) = Gateway::start_with(Backend::Gcs, opts).await else {
        return;
    };
    let names = [
        "d/a.txt",
        "d/b c.txt",
        "d/ünï.txt",
        "d/e.txt",
        "d/f.txt",
        "d/sub/g.txt",
    ];
    for name in names {
        gw.put_object(name, b"x").await;
    }
    let mfmt: String = names
        .iter()
        .map(|n| format!("print(reply('MFMT 20200102030405 {n}')[:3])\n"))
        .collect();
    assert_eq!(ftplib(&gw, &mfmt).await, ["213"; 6]);

    let (h0, l0) = (
        heads(&gw, "gs").await,
        operations(&gw, "gs", "list_metadata").await,
    );
    let listed = ftplib(
        &gw,
        "print(sorted((name, fact['type'], fact.get('modify', '')[:4]) for name, fact in f.mlsd('d', ['type', 'modify'])))\n\
         out = []; f.retrlines('LIST d', out.append); print(sum('Jan 02 2020' in l for l in out))",
    )
    .await;
    assert_eq!(
        listed[0],
        "[('a.txt', 'file', '2020'), ('b c.txt', 'file', '2020'), ('e.txt', 'file', '2020'), \
         ('f.txt', 'file', '2020'), ('sub', 'dir', '2000'), ('ünï.txt', 'file', '2020')]",
        "{listed:?}"
    );
    assert_eq!(
        listed[1], "5",
        "LIST shows the stored times too: {listed:?}"
    );
    assert_eq!(heads(&gw, "gs").await, h0, "no HEAD per file");
    assert_eq!(
        operations(&gw, "gs", "list_metadata").await - l0,
        2.0,
        "one metadata listing per directory listing"
    );
}
