//! The README, run as written.
//!
//! Every ` ```sh ` and ` ```python ` block carries a
//! `<!-- readme-test: TAG -->` line above it that says which test runs it,
//! or `not run (why)`; a block without one fails
//! [`every_block_is_accounted_for`]. [`readme_runs_as_written`] then runs
//! them in order against the binary `cargo test` built (put first on
//! `PATH`, as `cargo install` would), in a scratch directory that is also
//! `$HOME`. The substitutions are the ones a reader makes: the password
//! the server printed for `PASSWORD`, the reader's own secrets for `…`,
//! and for the bucket commands the emulators' addresses given through the
//! clouds' standard environment variables (and for `http://127.0.0.1:9000`,
//! the stand-in for a MinIO's address). Nothing else is changed, and
//! nothing leaves 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The tags a README block may carry, besides `not run (…)`.
const TESTED: [&str; 5] = ["quickstart", "tour", "python", "buckets", "s3-compatible"];

/// One fenced block and the tag above it.
#[derive(Debug)]
struct Block {
    tag: String,
    lang: String,
    body: String,
}

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README")
}

fn blocks() -> Vec<Block> {
    let text = readme();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(lang) = lines[i].strip_prefix("```").filter(|l| !l.is_empty()) else {
            i += 1;
            continue;
        };
        let tag = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| l.trim().strip_prefix("<!-- readme-test:"))
            .map(|t| t.trim_end_matches("-->").trim().to_string())
            .unwrap_or_default();
        let end = lines[i + 1..]
            .iter()
            .position(|l| l.starts_with("```"))
            .map(|p| i + 1 + p)
            .expect("closed fence");
        out.push(Block {
            tag,
            lang: lang.trim().to_string(),
            body: lines[i + 1..end].join("\n"),
        });
        i = end + 1;
    }
    out
}

/// The block tagged `tag` (the tag's first word).
fn block(tag: &str) -> Block {
    let mut found: Vec<Block> = blocks()
        .into_iter()
        .filter(|b| b.tag.split_whitespace().next() == Some(tag))
        .collect();
    assert_eq!(found.len(), 1, "one README block tagged {tag}");
    found.remove(0)
}

/// Shell commands of a block: `\` continuations joined.
fn commands(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in body.lines() {
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    out
}

#[test]
fn every_block_is_accounted_for() {
    let all = blocks();
    assert!(all.len() >= 6, "{all:?}");
    for b in &all {
        if !matches!(b.lang.as_str(), "sh" | "python") {
            continue;
        }
        let first = b.tag.split_whitespace().next().unwrap_or("");
        assert!(
            TESTED.contains(&first) || b.tag.starts_with("not run ("),
            "README block without a `<!-- readme-test: … -->` line naming its test:\n{}",
            b.body
        );
    }
    for tag in TESTED {
        block(tag);
    }
}

/// The scratch directory every README command runs in (also `$HOME`).
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `sh -c SCRIPT` here, with the test binary first on `PATH` and no
    /// cloud settings inherited from the developer's shell.
    fn sh(&self, script: &str) -> Command {
        let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_bucketftp"))
            .parent()
            .expect("bin dir")
            .to_path_buf();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin_dir];
        paths.extend(std::env::split_paths(&path));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script])
            .current_dir(self.path())
            .env("PATH", std::env::join_paths(paths).expect("PATH"))
            .env("HOME", self.path())
            .env_remove("BUCKETFTP_CONFIG")
            .env_remove("NO_COLOR");
        for (k, _) in std::env::vars() {
            if ["AWS_", "AZURE_", "GOOGLE_", "BUCKETFTP__"]
                .iter()
                .any(|p| k.starts_with(p))
            {
                cmd.env_remove(k);
            }
        }
        cmd
    }
}

/// A server started by a README command; killed on drop.
struct Server {
    child: Child,
    /// The password it printed for the generated user, if any.
    password: Option<String>,
    stderr: PathBuf,
}

impl Server {
    /// Runs `script` (ending in the `bucketftp …` command, `exec`ed) and
    /// waits for the banner, which is printed once the storage answered.
    fn start(scratch: &Scratch, script: &str, env: &[(String, String)], name: &str) -> Server {
        let stderr = scratch.path().join(format!("{name}.stderr"));
        let mut cmd = scratch.sh(script);
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let mut child = cmd.spawn().expect("start README command");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            password: None,
            stderr,
        };
        let mut banner = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(rest) = line.split("with password \"").nth(1) {
                        server.password = rest.split('"').next().map(String::from);
                    }
                    let done = line.starts_with("log in ");
                    banner.push(line);
                    if done {
                        return server;
                    }
                }
                Err(_) => panic!(
                    "{script}: no banner; stdout {banner:?}; stderr:\n{}",
                    std::fs::read_to_string(&server.stderr).unwrap_or_default()
                ),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one shell line and returns its stdout; panics on failure.
fn run_line(scratch: &Scratch, line: &str) -> String {
    let out = scratch.sh(line).output().expect("sh");
    assert!(
        out.status.success(),
        "README line failed: {line}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stores a file through the server on 127.0.0.1:2121 and reads it back.
fn round_trip(scratch: &Scratch, user: &str, password: &str, what: &str) {
    let body = format!("stored through {what}\n");
    std::fs::write(scratch.path().join("check.txt"), &body).expect("write");
    let url = format!("ftp://{user}:{password}@127.0.0.1:2121/readme/check.txt");
    run_line(
        scratch,
        &format!("curl -sS --max-time 30 --ftp-create-dirs -T check.txt {url}"),
    );
    assert_eq!(
        run_line(scratch, &format!("curl -sS --max-time 30 {url}")),
        body,
        "{what}"
    );
}

/// The quick start, the tour and the Python session, then the bucket
/// commands against the emulators. One test, so that the README's fixed
/// ports (2121, 9090) are used by one server at a time.
#[test]
fn readme_runs_as_written() {
    let scratch = Scratch::new();
    let quickstart = commands(&block("quickstart").body);
    assert_eq!(quickstart.len(), 1, "{quickstart:?}");
    let server = Server::start(
        &scratch,
        &format!("exec {}", quickstart[0]),
        &[],
        "quickstart",
    );
    let password = server.password.clone().expect("a generated password");
    let mut transcript = String::new();
    let tour = commands(&block("tour").body);
    assert!(tour.len() >= 4, "{tour:?}");
    for line in &tour {
        transcript.push_str(&run_line(&scratch, &line.replace("PASSWORD", &password)));
    }
    assert!(transcript.contains("hello, bucket"), "{transcript}");
    assert!(transcript.contains("hello.txt"), "listing: {transcript}");
    assert_eq!(
        std::fs::read(scratch.path().join("bucketftp-data/inbox/hello.txt"))
            .expect("object on disk"),
        b"hello, bucket\n"
    );
    let python = block("python").body.replace("PASSWORD", &password);
    let out = Command::new("python3")
        .args(["-c", &python])
        .current_dir(scratch.path())
        .output()
        .expect("python3");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "README Python snippet failed:\n{printed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.starts_with("hello, bucket\n"), "{printed}");
    assert!(printed.contains(" upload.txt"), "LIST inbox: {printed}");
    assert_eq!(
        std::fs::read(scratch.path().join("bucketftp-data/inbox/upload.txt")).expect("on disk"),
        b"hello, bucket\n"
    );
    drop(server);

    let Some(emulators) = Emulators::from_env() else {
        return;
    };
    emulators.prepare(&scratch);
    // `export` lines hold for the commands after them, as in a shell.
    let mut exports: Vec<String> = Vec::new();
    for command in commands(&block("buckets").body) {
        if command.trim_start().starts_with("export ") {
            // `NAME=…` is the reader's own secret: here the emulator's,
            // from `env_for`.
            let kept: Vec<&str> = command
                .split_whitespace()
                .filter(|w| !w.ends_with("=…"))
                .collect();
            if kept.len() > 1 {
                exports.push(kept.join(" "));
            }
            continue;
        }
        let storage = command
            .split("--storage ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no --storage in {command}"));
        let scheme = storage.split("://").next().unwrap_or("");
        let server = Server::start(
            &scratch,
            &format!("{}\nexec {command}", exports.join("\n")),
            &emulators.env_for(scheme, &scratch),
            scheme,
        );
        // The account: `--user NAME:PASSWORD`, else an exported
        // BUCKETFTP_USER, else the one the server generated.
        let exported_user = exports
            .iter()
            .rev()
            .find_map(|e| e.split("BUCKETFTP_USER=").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .map(|v| v.trim_matches(['\'', '"']).to_string());
        let spec = command
            .split("--user ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(String::from)
            .or(exported_user);
        let (user, password) = match spec {
            Some(spec) => {
                let (u, p) = spec.split_once(':').expect("NAME:PASSWORD");
                (u.to_string(), p.to_string())
            }
            None => (
                "bucketftp".to_string(),
                server.password.clone().expect("generated password"),
            ),
        };
        if scheme == "gs" {
            // fake-gcs-server serves object_store's GCS reads but not its
            // uploads (see tests/it/conformance.rs): read what its JSON API
            // took instead.
            emulators.gcs_upload("my-bucket", "ftp/readme/seeded.txt", "seeded\n");
            let url = format!("ftp://{user}:{password}@127.0.0.1:2121/readme/seeded.txt");
            assert_eq!(
                run_line(&scratch, &format!("curl -sS --max-time 30 {url}")),
                "seeded\n"
            );
            let listing = run_line(
                &scratch,
                &format!("curl -sS --max-time 30 ftp://{user}:{password}@127.0.0.1:2121/readme/"),
            );
            assert!(listing.contains(" seeded.txt"), "{listing}");
        } else {
            round_trip(&scratch, &user, &password, &command);
        }
        if scheme == "file" {
            assert!(
                scratch.path().join("ftp/readme/check.txt").is_file(),
                "file://$HOME/ftp"
            );
        }
        drop(server);
    }
    let compatible = commands(&block("s3-compatible").body);
    let (exports, server_line) = compatible.split_at(compatible.len() - 1);
    let script = format!("{}\nexec {}", exports.join("\n"), server_line[0])
        .replace("http://127.0.0.1:9000", &emulators.s3);
    let server = Server::start(&scratch, &script, &[], "s3-compatible");
    let password = server.password.clone().expect("generated password");
    round_trip(
        &scratch,
        "bucketftp",
        &password,
        "the S3-compatible example",
    );
}

/// The emulators `.ci/emulators.sh` started.
struct Emulators {
    s3: String,
    gcs: String,
    azurite: String,
}

impl Emulators {
    /// `None` (skipped, loudly) without emulators, unless CI requires them.
    fn from_env() -> Option<Self> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        match (
            get("BUCKETFTP_TEST_S3_ENDPOINT"),
            get("BUCKETFTP_TEST_GCS_ENDPOINT"),
            get("AZURITE_BLOB_STORAGE_URL"),
        ) {
            (Some(s3), Some(gcs), Some(azurite)) => Some(Self { s3, gcs, azurite }),
            _ => {
                if std::env::var("BUCKETFTP_REQUIRE_EMULATORS").as_deref() == Ok("1") {
                    panic!("the emulators are not configured but BUCKETFTP_REQUIRE_EMULATORS=1");
                }
                eprintln!("\n*** SKIPPED: the README's bucket commands need the emulators (source .ci/emulators.sh) ***\n");
                None
            }
        }
    }

    /// The buckets the README names, and a GCS key file for the emulator.
    fn prepare(&self, scratch: &Scratch) {
        let (ok, _) = super::common::emulator(&["create", "s3", "my-bucket"]);
        assert!(ok, "create my-bucket on S3");
        let (ok, _) = super::common::emulator(&["create", "azure", "my-container"]);
        assert!(ok, "create my-container on Azure");
        let created = Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .arg(format!("{}/storage/v1/b", self.gcs))
            .args(["-H", "content-type: application/json"])
            .args(["-d", r#"{"name":"my-bucket"}"#])
            .output()
            .expect("curl");
        let code = String::from_utf8_lossy(&created.stdout);
        assert!(
            code == "200" || code == "409",
            "create GCS my-bucket: {code}"
        );
        std::fs::write(
            scratch.path().join("gcs-key.json"),
            format!(
                r#"{{"gcs_base_url": "{}", "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}}"#,
                self.gcs
            ),
        )
        .expect("gcs key");
    }

    /// An object written through the GCS JSON API (as gsutil would).
    fn gcs_upload(&self, bucket: &str, name: &str, body: &str) {
        let name: String =
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
                .collect();
        let out = Command::new("curl")
            .args([
                "-sSf",
                "-o",
                "/dev/null",
                "-X",
                "POST",
                "--data-binary",
                body,
            ])
            .arg(format!(
                "{}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}",
                self.gcs
            ))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "GCS upload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What a reader of the README would have in their environment for
    /// `scheme`, pointed at the emulator.
    fn env_for(&self, scheme: &str, scratch: &Scratch) -> Vec<(String, String)> {
        let pairs: Vec<(&str, String)> = match scheme {
            "s3" => vec![
                ("AWS_ACCESS_KEY_ID", "testing".into()),
                ("AWS_SECRET_ACCESS_KEY", "testing".into()),
                ("AWS_ENDPOINT", self.s3.clone()),
                ("AWS_ALLOW_HTTP", "true".into()),
            ],
            "gs" => vec![(
                "GOOGLE_SERVICE_ACCOUNT",
                scratch.path().join("gcs-key.json").display().to_string(),
            )],
            "az" => vec![
                ("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1".into()),
                (
                    "AZURE_STORAGE_ACCOUNT_KEY",
                    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
                        .into(),
                ),
                ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
                ("AZURITE_BLOB_STORAGE_URL", self.azurite.clone()),
            ],
            _ => Vec::new(),
        };
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}
