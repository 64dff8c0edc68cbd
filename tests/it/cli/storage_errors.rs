//! Start-up storage errors as a new user meets them: one line on stderr
//! that names the store, the endpoint and the fix; nothing on stdout (no
//! banner claims to serve a store that does not work); exit status 1.
//!
//! Every endpoint here is on 127.0.0.1: a closed port, a listener that
//! never answers, a scripted S3 answer, or the emulators. Every S3 store
//! either has explicit credentials or is refused before any request, so
//! nothing asks the instance-metadata service at 169.254.169.254.

use super::{bucketftp, run};
use std::io::{Read, Write};
use std::net::TcpListener;

/// Starts the binary on `storage` with `options` and expects it to fail.
/// Returns the one line it printed.
fn start_fails(storage: &str, options: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = bucketftp();
    cmd.args(["--listen", "127.0.0.1:0", "--http", "off"])
        .args(["--storage", storage]);
    for o in options {
        cmd.args(["--storage-option", o]);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("AZURE_") || k.starts_with("GOOGLE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let (ok, out, err) = run(&mut cmd);
    assert!(!ok, "{storage} {options:?} started: {out}");
    assert_eq!(out, "", "nothing on stdout before the storage works: {out}");
    let err = err.trim_end().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("bucketftp: storage "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

const TEST_KEYS: [&str; 2] = ["aws_access_key_id=testing", "aws_secret_access_key=testing"];

#[test]
fn custom_endpoint_without_credentials() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let err = start_fails(
        "s3://b/p",
        &[
            &format!("aws_endpoint={endpoint}"),
            "aws_allow_http=true",
            "aws_region=us-east-1",
        ],
        &[],
    );
    assert!(err.contains("s3://b/p"), "{err}");
    assert!(
        err.contains(&format!("no credentials for {endpoint}")),
        "{err}"
    );
    assert!(
        err.contains("aws_access_key_id") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    assert!(err.contains("aws_metadata_endpoint"), "the opt-in: {err}");
    assert!(!err.contains("169.254.169.254"), "{err}");
}

#[test]
fn plain_http_without_allow_http() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let mut options = vec![format!("aws_endpoint={endpoint}")];
    options.extend(TEST_KEYS.iter().map(|s| s.to_string()));
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let err = start_fails("s3://b/p", &options, &[]);
    assert!(err.contains(&endpoint), "{err}");
    assert!(err.contains("aws_allow_http=true"), "{err}");
}

/// The README shows this error for its S3-compatible example without
/// `aws_allow_http`: the line is the binary's, word for word.
#[test]
fn readme_error_example_is_real() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let shown = readme
        .lines()
        .find(|l| l.starts_with("bucketftp: storage s3://my-bucket/ftp cannot be used"))
        .expect("README shows a start-up error");
    let err = start_fails(
        "s3://my-bucket/ftp",
        &["aws_endpoint=http://127.0.0.1:9000"],
        &[
            ("AWS_ACCESS_KEY_ID", "minioadmin"),
            ("AWS_SECRET_ACCESS_KEY", "minioadmin"),
        ],
    );
    assert_eq!(err, shown);
}

#[test]
fn connection_refused_names_the_address() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let endpoint_option = format!("aws_endpoint={endpoint}");
    let mut options = vec![endpoint_option.as_str(), "aws_allow_http=true"];
    options.extend(TEST_KEYS);
    let err = start_fails("s3://b/p", &options, &[]);
    assert!(
        err.contains(&format!(
            "cannot connect to {endpoint} (connection refused)"
        )),
        "{err}"
    );
    assert!(err.contains("check aws_endpoint"), "{err}");
}

#[test]
fn endpoint_that_never_answers() {
    // Accepts connections (the kernel does, from the backlog) and never
    // says a word.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", silent.local_addr().expect("addr"));
    let endpoint_option = format!("aws_endpoint={endpoint}");
    let mut options = vec![endpoint_option.as_str(), "aws_allow_http=true"];
    options.extend(TEST_KEYS);
    let err = start_fails("s3://b/p", &options, &[]);
    assert!(
        err.contains(&format!(
            "{endpoint} accepts connections but did not answer within"
        )),
        "{err}"
    );
    drop(silent);
}

/// What S3 answers a request signed for the wrong region (moto does not
/// check regions, so a scripted loopback responder plays S3 here).
#[test]
fn wrong_region() {
    let s3 = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", s3.local_addr().expect("addr"));
    let responder = std::thread::spawn(move || {
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'</Message><Region>eu-west-1</Region><RequestId>1</RequestId></Error>";
        // object_store does not retry a 400: one request.
        if let Ok((mut conn, _)) = s3.accept() {
            let mut request = [0u8; 8192];
            let _ = conn.read(&mut request);
            let _ = write!(
                conn,
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let endpoint_option = format!("aws_endpoint={endpoint}");
    let mut options = vec![
        endpoint_option.as_str(),
        "aws_allow_http=true",
        "aws_region=us-east-1",
    ];
    options.extend(TEST_KEYS);
    let err = start_fails("s3://photos/p", &options, &[]);
    assert!(err.contains("bucket photos is in another region"), "{err}");
    assert!(err.contains("set aws_region=eu-west-1"), "{err}");
    assert!(err.contains(&endpoint), "{err}");
    let _ = responder.join();
}

#[test]
fn bucket_missing_on_the_s3_emulator() {
    let Some(endpoint) = emulator("BUCKETFTP_TEST_S3_ENDPOINT") else {
        return;
    };
    let endpoint_option = format!("aws_endpoint={endpoint}");
    let mut options = vec![endpoint_option.as_str(), "aws_allow_http=true"];
    options.extend(TEST_KEYS);
    let err = start_fails("s3://no-such-bucket-here/p", &options, &[]);
    assert!(
        err.contains(&format!(
            "bucket no-such-bucket-here does not exist at {endpoint}"
        )),
        "{err}"
    );
    assert!(err.contains("NoSuchBucket"), "{err}");
    assert!(err.contains("create it"), "{err}");
}

#[test]
fn access_denied_on_azurite() {
    let Some(azurite) = emulator("AZURITE_BLOB_STORAGE_URL") else {
        return;
    };
    // A well-formed key that is not the emulator account's.
    let wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    let err = start_fails(
        "az://bucketftp/p",
        &[
            "azure_storage_use_emulator=true",
            &format!("azure_storage_account_key={wrong_key}"),
        ],
        &[("AZURITE_BLOB_STORAGE_URL", &azurite)],
    );
    assert!(
        err.contains(&format!("access denied at {azurite}")),
        "{err}"
    );
    assert!(err.contains("403"), "{err}");
    assert!(err.contains("azure_storage_account_key"), "{err}");
}

/// An emulator's address, or `None` (skipped loudly; a failure when CI
/// requires the emulators).
fn emulator(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v.trim_end_matches('/').to_string()),
        _ => {
            if std::env::var("BUCKETFTP_REQUIRE_EMULATORS").as_deref() == Ok("1") {
                panic!("{var} is not set but BUCKETFTP_REQUIRE_EMULATORS=1");
            }
            eprintln!("\n*** SKIPPED: {var} is not set (source .ci/emulators.sh) ***\n");
            None
        }
    }
}
