//! The bucket as the S3 emulator's own API shows it (boto3, through
//! tests/it/fleet/bucket_state.py), never through bucketftp.

use std::collections::BTreeMap;

/// What the emulator holds under a prefix.
pub struct BucketState {
    /// Objects: key → (size, SHA-256 hex).
    pub objects: BTreeMap<String, (usize, String)>,
    /// Keys of in-progress multipart uploads.
    pub uploads: Vec<String>,
}

/// The SHA-256 of `data`, as the script prints it.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Runs the script and returns its output.
async fn script(args: &[&str]) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/fleet/bucket_state.py"
    );
    let out = tokio::process::Command::new("python3")
        .arg(path)
        .args(args)
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "bucket_state.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Objects and in-progress uploads under `prefix`.
pub async fn state(prefix: &str) -> BucketState {
    let mut state = BucketState {
        objects: BTreeMap::new(),
        uploads: Vec::new(),
    };
    for line in script(&[prefix]).await.lines() {
        match line.split(' ').collect::<Vec<_>>()[..] {
            ["object", key, size, sha] => {
                let size = size.parse().expect("object size");
                state
                    .objects
                    .insert(key.to_string(), (size, sha.to_string()));
            }
            ["upload", key] => state.uploads.push(key.to_string()),
            _ => panic!("bucket_state.py: unexpected line {line:?}"),
        }
    }
    state
}

/// Removes every object under `prefix` (the emulator keeps all in memory).
pub async fn delete(prefix: &str) {
    script(&["--delete", prefix]).await;
}
