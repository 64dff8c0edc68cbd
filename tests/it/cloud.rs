//! The clouds, proven on emulators that speak their real HTTP APIs (moto for
//! S3, azurite for Azure Blob), and checked through those APIs (boto3, the
//! Azure SDK) rather than through bucketftp.

use crate::common;

use common::{
    emulator, emulator_put, payload, stor_then_kill, storage_for, Backend, Gateway, Process,
};
use tokio::io::AsyncWriteExt;

const CLOUDS: [Backend; 2] = [Backend::S3, Backend::Azure];

fn cloud_name(backend: Backend) -> &'static str {
    match backend {
        Backend::S3 => "s3",
        Backend::Azure => "azure",
        _ => unreachable!("not a cloud"),
    }
}

/// The key of `path` in the emulator's bucket (with the test's prefix).
fn bucket_key(gw_prefix: &str, path: &str) -> String {
    if gw_prefix.is_empty() {
        path.to_string()
    } else {
        format!("{gw_prefix}/{path}")
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// 200 MiB through the real binary: byte-identical in the bucket (checked
/// with the emulator's API), uploaded as multipart, in bounded memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_is_multipart_identical_and_bounded() {
    for backend in CLOUDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some((url, options)) = storage_for(backend, dir.path(), "large") else {
            continue;
        };
        let prefix = url.splitn(4, '/').nth(3).unwrap_or("").to_string();
        let args = opts(&options);
        let gw = Process::start_with(&url, &args, &[]).await;
        let mut ftp = gw.login().await;
        let data = payload(200 << 20, 11);
        let mut stream = ftp.put_with_stream("big/200MiB.bin").await.expect("STOR");
        for chunk in data.chunks(1 << 20) {
            stream.write_all(chunk).await.expect("send");
        }
        stream.finish().await.expect("226");
        let (found, digest) = emulator(&[
            "sha256",
            cloud_name(backend),
            &bucket_key(&prefix, "big/200MiB.bin"),
        ]);
        assert!(found, "{backend:?}: object not in the bucket");
        assert_eq!(
            digest.trim(),
            format!("{} {}", sha256_hex(&data), data.len()),
            "{backend:?}: bytes differ"
        );
        let (_, metrics) = common::http_get(gw.http, "/metrics")
            .await
            .expect("metrics");
        let multipart = metrics
            .lines()
            .find(|l| l.starts_with("bucketftp_multipart_uploads_total "))
            .expect("multipart metric");
        assert!(multipart.ends_with(" 1"), "{backend:?}: {multipart}");
        let parts = metrics
            .lines()
            .find(|l| l.starts_with("bucketftp_multipart_parts_total "))
            .expect("parts metric");
        assert!(
            parts.ends_with(" 25"),
            "{backend:?}: 200 MiB / 8 MiB parts: {parts}"
        );
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", gw.child.id().expect("pid")))
                .expect("status");
        let peak_kib: u64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .expect("VmHWM");
        let bound_kib = (8 * 4 + 50) * 1024;
        eprintln!("{backend:?}: 200 MiB STOR peak RSS {} MiB", peak_kib / 1024);
        assert!(
            peak_kib < bound_kib,
            "{backend:?}: peak RSS {peak_kib} KiB over {bound_kib} KiB"
        );
    }
}

/// A client killed half-way through 100 MiB leaves no object and no
/// in-progress multipart upload, as the emulator's own API sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_leaves_nothing_in_the_bucket() {
    for backend in CLOUDS {
        let Some(gw) = Gateway::start(backend).await else {
            continue;
        };
        let prefix = gw.store.base.as_ref().to_string();
        stor_then_kill(gw.login("alice").await, "half.bin", &payload(50 << 20, 3)).await;
        gw.settle().await;
        let (_, objects) = emulator(&["list", cloud_name(backend), &prefix]);
        assert!(
            objects.trim().is_empty(),
            "{backend:?}: objects left: {objects}"
        );
        let (_, uploads) = emulator(&["uploads", cloud_name(backend), &prefix]);
        if backend == Backend::S3 {
            assert!(
                uploads.trim().is_empty(),
                "{backend:?}: multipart uploads left: {uploads}"
            );
        } else if !uploads.trim().is_empty() {
            // Azure has no call to drop uncommitted blocks: they are never
            // visible and the service discards them after seven days.
            eprintln!("azure: uncommitted blocks (discarded by Azure in 7 days): {uploads}");
        }
    }
}

/// What other tools wrote lists correctly through FTP, and what bucketftp
/// writes looks right to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interoperates_with_other_tools() {
    for backend in CLOUDS {
        let Some(gw) = Gateway::start(backend).await else {
            continue;
        };
        let cloud = cloud_name(backend);
        let prefix = gw.store.base.as_ref().to_string();
        let key = |p: &str| bucket_key(&prefix, p);
        let put = |k: String, data: &[u8]| emulator_put(cloud, &k, data);
        put(key("fx/a.txt"), b"from the sdk");
        put(key("fx/deep/no/markers/b.txt"), b"deep");
        match backend {
            // The S3 console's and `aws s3`'s folder: a zero-byte `dir/`.
            Backend::S3 => put(key("fx/folder/"), b""),
            // ADLS / blobfuse / Storage Explorer's folder.
            _ => {
                emulator(&["put-folder", cloud, &key("fx/folder")]);
            }
        }
        let mut ftp = gw.login("alice").await;
        let mut list = ftp.list(Some("fx")).await.expect("LIST");
        list.sort();
        let kinds: Vec<(char, String)> = list
            .iter()
            .map(|l| {
                (
                    l.chars().next().unwrap_or(' '),
                    l.rsplit(' ').next().unwrap_or("").to_string(),
                )
            })
            .collect();
        let mut kinds_sorted = kinds.clone();
        kinds_sorted.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            kinds_sorted,
            vec![
                ('-', "a.txt".to_string()),
                ('d', "deep".to_string()),
                ('d', "folder".to_string())
            ],
            "{backend:?}: {list:?}"
        );
        ftp.cwd("/fx/deep/no/markers")
            .await
            .expect("CWD through prefixes");
        ftp.cwd("/fx/folder")
            .await
            .expect("CWD into a foreign folder");
        assert!(ftp.list(None).await.expect("LIST").is_empty());
        // A folder made by bucketftp, as the other tools see it.
        ftp.mkdir("/made").await.expect("MKD");
        match backend {
            Backend::S3 => {
                let (found, meta) = emulator(&["meta", cloud, &key("made/")]);
                assert!(found, "no `made/` marker for S3 tools");
                assert!(meta.contains(r#""size": 0"#), "{meta}");
            }
            _ => {
                let (found, meta) = emulator(&["meta", cloud, &key("made")]);
                assert!(found, "no folder blob for Azure tools");
                assert!(meta.contains(r#""hdi_isfolder": "true""#), "{meta}");
            }
        }
    }
}

/// A bucket that does not exist, or credentials the service refuses, stop
/// start-up with one line that says what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bucket_or_credentials_fail_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cases: Vec<(String, Vec<String>, &str)> = Vec::new();
    if let Some((url, options)) = storage_for(Backend::S3, dir.path(), "wrong") {
        let url = url.replacen("s3://bucketftp", "s3://no-such-bucket", 1);
        cases.push((url, opts(&options), "no-such-bucket"));
    }
    if let Some((url, options)) = storage_for(Backend::Azure, dir.path(), "wrong") {
        let missing = url.replacen("az://bucketftp", "az://no-such-container", 1);
        cases.push((missing, opts(&options), "no-such-container"));
        let mut bad_key = opts(&options);
        bad_key.push("--storage-option".into());
        bad_key.push(format!(
            "azure_storage_account_key={}",
            "d3JvbmcgYWNjb3VudCBrZXkgZm9yIHRoZSB0ZXN0cw=="
        ));
        cases.push((url, bad_key, "40"));
    }
    for (url, args, expected) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bucketftp"))
            .args(["--listen", "127.0.0.1:0", "--http", "off", "--user", "a:b"])
            .args(["--storage", &url])
            .args(&args)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: started anyway");
        let last = err.trim().lines().last().unwrap_or("");
        assert!(last.starts_with("bucketftp: "), "{url}: {err}");
        assert!(last.contains(expected), "{url}: {last}");
        assert!(
            !err.contains("panicked") && !err.contains("stack backtrace"),
            "{err}"
        );
    }
}

/// `--storage-option KEY=VALUE` arguments for the binary.
fn opts(options: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    options
        .iter()
        .flat_map(|(k, v)| ["--storage-option".to_string(), format!("{k}={v}")])
        .collect()
}

/// `storage.storage_class` reaches S3 for single PUTs and multipart uploads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_class_is_passed_through() {
    let Some(gw) = Gateway::start_with(
        Backend::S3,
        common::Options {
            storage_extra: "part_size = \"5MiB\"\nstorage_class = \"STANDARD_IA\"\n".into(),
            ..common::Options::default()
        },
    )
    .await
    else {
        return;
    };
    let prefix = gw.store.base.as_ref().to_string();
    let mut ftp = gw.login("alice").await;
    for (name, size) in [("small.bin", 1000usize), ("large.bin", 12 << 20)] {
        let data = payload(size, 1);
        let mut r = &data[..];
        ftp.put_file(name, &mut r).await.expect("STOR");
        let (found, meta) = emulator(&["meta", "s3", &bucket_key(&prefix, name)]);
        assert!(found);
        assert!(
            meta.contains(r#""storage_class": "STANDARD_IA""#),
            "{name}: {meta}"
        );
    }
}

/// Large downloads from clouds are read as parallel ranged GETs; the bytes
/// must come back whole and in order, from any REST offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_ranged_downloads_are_exact() {
    for backend in CLOUDS {
        let Some(gw) = Gateway::start(backend).await else {
            continue;
        };
        let data = payload((23 << 20) + 12345, 9);
        gw.put_object("r.bin", &data).await;
        let mut ftp = gw.login("alice").await;
        for offset in [0usize, 1, 5 << 20, (7 << 20) + 3, data.len() - 10] {
            ftp.resume_transfer(offset).await.expect("REST");
            let got = common::retr(&mut ftp, "r.bin").await;
            assert!(got == data[offset..], "{backend:?} from {offset}");
        }
    }
}

/// Storage requests made so far, by operation, from the binary's metrics.
async fn requests(gw: &Process) -> std::collections::BTreeMap<String, u64> {
    let (_, metrics) = common::http_get(gw.http, "/metrics")
        .await
        .expect("metrics");
    let mut out = std::collections::BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("bucketftp_storage_operation_duration_seconds_count{"))
    {
        let op = line
            .split("operation=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("operation label");
        let n: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("count");
        *out.entry(op.to_string()).or_insert(0) += n;
    }
    out
}

/// A RETR of an object within one part is one GET: the parallel download's
/// first range doubles as the HEAD (on real S3 every request is a round
/// trip and a billed operation). A larger one is one GET per part, still
/// without a HEAD; an empty object falls back to a plain GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_requests_per_object() {
    for backend in CLOUDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some((url, options)) = storage_for(backend, dir.path(), "requests") else {
            continue;
        };
        let args = opts(&options);
        let gw =
            Process::start_with(&url, &args, &[("BUCKETFTP__STORAGE__PART_SIZE", "5MiB")]).await;
        let mut ftp = gw.login().await;
        let small = payload(4096, 1);
        let big = payload((12 << 20) + 3, 2); // three 5 MiB parts
        for (name, data) in [("small.bin", &small), ("big.bin", &big)] {
            let mut r = &data[..];
            ftp.put_file(name, &mut r).await.expect("STOR");
        }
        ftp.put_file("empty.bin", &mut &b""[..])
            .await
            .expect("STOR empty");
        for (name, data, gets, fallback) in [
            ("small.bin", &small[..], 1, 0),
            ("big.bin", &big[..], 3, 0),
            ("empty.bin", &b""[..], 1, 1),
        ] {
            let before = requests(&gw).await;
            let got = common::retr(&mut ftp, name).await;
            assert_eq!(got, data, "{backend:?} {name}: bytes");
            let after = requests(&gw).await;
            let delta = |op: &str| after.get(op).unwrap_or(&0) - before.get(op).unwrap_or(&0);
            assert_eq!(delta("head"), 0, "{backend:?} {name}: HEADs {after:?}");
            // The empty object's ranged GET is refused (416), then one plain GET.
            assert_eq!(
                delta("get"),
                gets + fallback,
                "{backend:?} {name}: GETs {before:?} -> {after:?}"
            );
        }
    }
}
