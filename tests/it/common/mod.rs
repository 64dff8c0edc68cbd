//! Test harness: a real gateway on 127.0.0.1 port 0, in this process, over
//! a real store, and helpers to drive it with real clients.
//!
//! Back-ends come from [`Backend`]; the cloud ones read their emulator's
//! endpoint from the environment that `.ci/emulators` sets up. When it is
//! missing the test is skipped loudly, unless `BUCKETFTP_REQUIRE_EMULATORS=1`
//! (CI), where a missing emulator is a failure.

pub mod line_client;
pub mod programs;

use bucketftp::config::{self, Config};
use bucketftp::Listeners;
use bucketftp::OpenedStore;
use bucketftp::Transfers;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use tokio::sync::oneshot;

/// The password of every test account (a log-scan test looks for it).
pub const PASSWORD: &str = "s3cret-Test-Passw0rd";

/// Where the gateway keeps its files in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `memory://`
    Memory,
    /// `file://` in a temporary directory.
    Local,
    /// `s3://` on the emulator named by `BUCKETFTP_TEST_S3_ENDPOINT`.
    S3,
    /// `az://` on the emulator named by `BUCKETFTP_TEST_AZURE_ENDPOINT`.
    Azure,
    /// `gs://` on the emulator named by `BUCKETFTP_TEST_GCS_ENDPOINT`,
    /// through object_store.
    Gcs,
    /// The same, through the `unftp-sbe-gcs` engine.
    GcsSbe,
}

/// A PBKDF2 hash with few rounds: fast tests, same verification path.
pub fn cheap_hash(password: &str) -> String {
    use password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"bucketftp-tests!").expect("static salt");
    pbkdf2::Pbkdf2
        .hash_password_customized(
            password.as_bytes(),
            None,
            None,
            pbkdf2::Params {
                rounds: 1000,
                output_length: 32,
            },
            &salt,
        )
        .expect("pbkdf2")
        .to_string()
}

static PREFIX_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique prefix so tests sharing one emulator bucket never meet.
pub fn unique_prefix(tag: &str) -> String {
    let n = PREFIX_COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("t{}-{}-{}", std::process::id(), n, tag)
}

/// The storage URL and options for a back-end, or `None` (skip) when its
/// emulator is not configured.
pub fn storage_for(
    backend: Backend,
    dir: &std::path::Path,
    tag: &str,
) -> Option<(String, BTreeMap<String, String>)> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut options = BTreeMap::new();
    let url = match backend {
        Backend::Memory => "memory://".to_string(),
        Backend::Local => format!("file://{}", dir.display()),
        Backend::S3 => {
            let endpoint = required_env("BUCKETFTP_TEST_S3_ENDPOINT")?;
            let bucket = env("BUCKETFTP_TEST_S3_BUCKET").unwrap_or_else(|| "bucketftp".into());
            options.insert("aws_endpoint".into(), endpoint);
            options.insert("aws_allow_http".into(), "true".into());
            options.insert("aws_region".into(), "us-east-1".into());
            options.insert("aws_access_key_id".into(), "testing".into());
            options.insert("aws_secret_access_key".into(), "testing".into());
            options.insert("aws_virtual_hosted_style_request".into(), "false".into());
            format!("s3://{bucket}/{}", unique_prefix(tag))
        }
        Backend::Azure => {
            let endpoint = required_env("BUCKETFTP_TEST_AZURE_ENDPOINT")?;
            let container =
                env("BUCKETFTP_TEST_AZURE_CONTAINER").unwrap_or_else(|| "bucketftp".into());
            // Emulator mode takes azurite's address from
            // AZURITE_BLOB_STORAGE_URL (object_store reads it itself).
            let _ = endpoint;
            options.insert("azure_storage_use_emulator".into(), "true".into());
            format!("az://{container}/{}", unique_prefix(tag))
        }
        Backend::Gcs | Backend::GcsSbe => {
            let endpoint = required_env("BUCKETFTP_TEST_GCS_ENDPOINT")?;
            let bucket = env("BUCKETFTP_TEST_GCS_BUCKET").unwrap_or_else(|| "bucketftp".into());
            let key = dir.join("gcs-service-account.json");
            std::fs::write(
                &key,
                format!(
                    r#"{{"gcs_base_url": "{endpoint}", "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}}"#
                ),
            )
            .expect("write gcs key");
            options.insert("google_service_account".into(), key.display().to_string());
            format!("gs://{bucket}/{}", unique_prefix(tag))
        }
    };
    Some((url, options))
}

/// The emulator endpoints every cloud test reads.
pub const EMULATOR_VARS: [&str; 3] = [
    "BUCKETFTP_TEST_S3_ENDPOINT",
    "BUCKETFTP_TEST_AZURE_ENDPOINT",
    "BUCKETFTP_TEST_GCS_ENDPOINT",
];

/// Fails when an emulator is not configured, so a plain `cargo test`
/// cannot report the skipped cloud tests (and the README's bucket
/// commands) as passed: libtest hides their "SKIPPED" lines and has no
/// run-time skip. Skip it on purpose with
/// `cargo test -- --skip emulators_are_running`.
#[test]
fn emulators_are_running() {
    let missing: Vec<&str> = EMULATOR_VARS
        .iter()
        .copied()
        .filter(|v| std::env::var(v).map_or(true, |s| s.is_empty()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} not set: the S3/Azure/GCS tests were skipped, not run. \
         Run `bash .ci/test`, or `source .ci/emulators.sh` in this shell first \
         (or pass `-- --skip emulators_are_running` to skip them on purpose)",
        missing.join(", ")
    );
}

fn required_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            if std::env::var("BUCKETFTP_REQUIRE_EMULATORS").as_deref() == Ok("1") {
                panic!("{name} is not set but BUCKETFTP_REQUIRE_EMULATORS=1: the emulator did not start");
            }
            eprintln!("\n*** SKIPPED: {name} is not set; run the test through .ci/test to start the emulators ***\n");
            None
        }
    }
}

/// One account in a test configuration.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Login name.
    pub name: String,
    /// Home inside the store.
    pub home: String,
    /// Permission names.
    pub permissions: Vec<String>,
    /// More TOML lines for this `[[users]]` entry (e.g. `enabled = false`).
    pub extra: String,
}

impl TestUser {
    /// A user with every permission.
    pub fn full(name: &str, home: &str) -> Self {
        Self {
            name: name.into(),
            home: home.into(),
            permissions: vec!["all".into()],
            extra: String::new(),
        }
    }
}

/// How to build a test gateway.
#[derive(Debug, Clone)]
pub struct Options {
    /// Accounts (all with [`PASSWORD`]).
    pub users: Vec<TestUser>,
    /// Extra TOML appended to the generated `[server]` section.
    pub server_extra: String,
    /// Extra TOML appended to the generated `[storage]` section.
    pub storage_extra: String,
    /// Extra top-level TOML sections (e.g. `[auth]`).
    pub sections: String,
    /// Serve `/metrics` and friends.
    pub http: bool,
    /// Storage options that replace the back-end's defaults (e.g. an
    /// endpoint behind a fault-injecting proxy).
    pub storage_options: Vec<(String, String)>,
    /// `server.idle_timeout` (default 60s).
    pub idle_timeout: Option<String>,
    /// The FTP listener's address (default `127.0.0.1:0`).
    pub bind: Option<String>,
    /// `server.passive_ports` (default 20000-29999).
    pub passive_ports: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            users: vec![TestUser::full("alice", "/")],
            server_extra: String::new(),
            storage_extra: "part_size = \"5MiB\"\n".into(),
            sections: String::new(),
            http: false,
            storage_options: Vec::new(),
            idle_timeout: None,
            bind: None,
            passive_ports: None,
        }
    }
}

/// A running gateway.
pub struct Gateway {
    /// FTP control address.
    pub addr: SocketAddr,
    /// HTTP address, when enabled.
    pub http: Option<SocketAddr>,
    /// Implicit FTPS address, when `tls.implicit_listen` is set.
    pub ftps_implicit: Option<SocketAddr>,
    /// The default store, to check what landed.
    pub store: OpenedStore,
    /// The transfer registry, to wait for uploads to settle.
    pub transfers: Arc<Transfers>,
    /// The local root for `file://`, else a scratch directory.
    pub dir: tempfile::TempDir,
    /// The back-end under test.
    pub backend: Backend,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), bucketftp::RunError>>>,
}

impl Gateway {
    /// Starts a gateway with default options, or `None` when the back-end's
    /// emulator is missing (see the module docs).
    pub async fn start(backend: Backend) -> Option<Gateway> {
        Self::start_with(backend, Options::default()).await
    }

    /// Starts a gateway with the given options.
    pub async fn start_with(backend: Backend, opts: Options) -> Option<Gateway> {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("root dir");
        let (url, mut options) = storage_for(backend, &root, "gw")?;
        for (k, v) in &opts.storage_options {
            options.insert(k.clone(), v.clone());
        }
        let mut opts = opts;
        if backend == Backend::GcsSbe {
            opts.storage_extra.push_str("engine = \"unftp-sbe-gcs\"\n");
        }
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\npassive_ports = {:?}\nidle_timeout = {:?}\nshutdown_grace = \"5s\"\n{}\n[http]\nlisten = \"off\"\n[storage]\nurl = {:?}\n{}\n",
            opts.passive_ports.as_deref().unwrap_or("20000-29999"),
            opts.idle_timeout.as_deref().unwrap_or("60s"),
            opts.server_extra,
            url,
            opts.storage_extra
        );
        text.push_str("[storage.options]\n");
        for (k, v) in &options {
            text.push_str(&format!("{k} = {v:?}\n"));
        }
        text.push_str(&opts.sections);
        text.push('\n');
        for u in &opts.users {
            text.push_str(&format!(
                "[[users]]\nname = {:?}\npassword_hash = {:?}\nhome = {:?}\npermissions = {:?}\n{}\n",
                u.name,
                cheap_hash(PASSWORD),
                u.home,
                u.permissions,
                u.extra
            ));
        }
        if std::env::var("BUCKETFTP_TEST_SHOW_CONFIG").is_ok() {
            eprintln!("{text}");
        }
        let config: Config = config::from_toml(&text)
            .unwrap_or_else(|e| panic!("test config: {}\n{text}", bucketftp::error_chain(&e)));
        if let Ok(level) = std::env::var("BUCKETFTP_TEST_LOG") {
            // Debugging aid: the gateway's logs on stderr.
            bucketftp::init_logging(&bucketftp::config::LogConfig {
                format: bucketftp::config::LogFormat::Text,
                level,
            });
        }
        let env = BTreeMap::new();
        let (accounts, stores) = bucketftp::build_accounts(&config, &env).expect("accounts");
        let store = stores[0].clone();
        let ftp = tokio::net::TcpListener::bind(opts.bind.as_deref().unwrap_or("127.0.0.1:0"))
            .await
            .expect("bind");
        let addr = ftp.local_addr().expect("addr");
        let http = if opts.http {
            Some(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind http"),
            )
        } else {
            None
        };
        let http_addr = http.as_ref().map(|l| l.local_addr().expect("http addr"));
        // Implicit FTPS, when the test's [tls] section asks for it.
        let ftps_implicit = match config.tls.as_ref().and_then(|t| t.implicit_listen) {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .expect("bind implicit ftps"),
            ),
            None => None,
        };
        let ftps_implicit_addr = ftps_implicit
            .as_ref()
            .map(|l| l.local_addr().expect("implicit ftps addr"));
        let transfers = Transfers::new(config.server.max_uploads);
        let transfers_for_server = transfers.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let result = bucketftp::serve(
                config,
                accounts,
                stores,
                transfers_for_server,
                Listeners {
                    ftp,
                    ftps_implicit,
                    http,
                },
                async move {
                    let _ = rx.await;
                },
            )
            .await;
            if let Err(e) = &result {
                eprintln!("gateway failed: {}", bucketftp::error_chain(e));
            }
            result
        });
        Some(Gateway {
            addr,
            http: http_addr,
            ftps_implicit: ftps_implicit_addr,
            store,
            transfers,
            dir,
            backend,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// A logged-in client in binary mode.
    pub async fn login(&self, user: &str) -> AsyncFtpStream {
        let mut ftp = self.connect().await;
        ftp.login(user, PASSWORD).await.expect("login");
        ftp.transfer_type(FileType::Binary).await.expect("TYPE I");
        ftp
    }

    /// A connected, not yet logged-in client (retries while the server
    /// finishes its start-up probe).
    pub async fn connect(&self) -> AsyncFtpStream {
        let mut last = None;
        for _ in 0..100 {
            if self.task.as_ref().is_some_and(|t| t.is_finished()) {
                panic!("the gateway stopped during start-up (see its error above)");
            }
            match AsyncFtpStream::connect(self.addr).await {
                Ok(ftp) => return ftp,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cannot connect to {}: {last:?}", self.addr);
    }

    /// The object key for a path under the store's base prefix.
    /// (Keys are the FTP names verbatim, as the gateway writes them, not
    /// percent-encoded as `ObjectPath::from_iter` would make them.)
    pub fn key(&self, path: &str) -> ObjectPath {
        bucketftp::paths::Jail::new(self.store.base.clone())
            .key(std::path::Path::new(path))
            .expect("valid test path")
    }

    /// The bytes of an object, read directly from the store.
    pub async fn object(&self, path: &str) -> Option<Vec<u8>> {
        match self.store.store.get(&self.key(path)).await {
            Ok(r) => Some(r.bytes().await.expect("read object").to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("get {path}: {e}"),
        }
    }

    /// Writes an object directly to the store (as another tool would); a
    /// trailing `/` writes a folder marker `dir/`.
    pub async fn put_object(&self, path: &str, data: &[u8]) {
        let mut key = self.key(path);
        if path.ends_with('/') {
            key = key.join("");
        }
        if matches!(self.backend, Backend::Gcs | Backend::GcsSbe) {
            // fake-gcs-server takes writes through the JSON API only.
            return gcs_json_upload(key.as_ref(), data);
        }
        if self.backend == Backend::Azure && path.ends_with('/') {
            // object_store drops the slash from Azure blob URLs; the blob
            // `dir/` comes from the Azure SDK, as other tools write it.
            return emulator_put("azure", key.as_ref(), data);
        }
        self.store
            .store
            .put(&key, data.to_vec().into())
            .await
            .expect("put object");
    }

    /// Every key under the base prefix (relative to it), sorted.
    pub async fn keys(&self) -> Vec<String> {
        let base = self.store.base.clone();
        let prefix = (!base.as_ref().is_empty()).then_some(&base);
        let mut keys: Vec<String> = self
            .store
            .store
            .list(prefix)
            .map_ok(|m| {
                let k = m.location.as_ref().to_string();
                k.strip_prefix(base.as_ref())
                    .map(|r| r.trim_start_matches('/').to_string())
                    .unwrap_or(k)
            })
            .try_collect()
            .await
            .expect("list");
        keys.sort();
        keys
    }

    /// Waits until no transfer is running (aborted uploads have cleaned up).
    pub async fn settle(&self) {
        for _ in 0..600 {
            if self.transfers.active() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("transfers still running after 30 s");
    }

    /// Files under the local root that are not regular objects: object_store's
    /// staging files (`name#N`) from unfinished multipart writes.
    pub fn local_leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        let root = self.dir.path().join("root");
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.contains('#'))
                {
                    out.push(p.strip_prefix(&root).unwrap_or(&p).display().to_string());
                }
            }
        }
        out
    }

    /// Asks the gateway to shut down gracefully and waits for it.
    pub async fn stop(mut self) -> Result<(), bucketftp::RunError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("task").await.expect("join")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so big payloads need no
/// fixture files and differ at every offset.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The reply code of a failed suppaftp call.
pub fn code_of<T: std::fmt::Debug>(r: suppaftp::FtpResult<T>) -> u32 {
    match r {
        Err(suppaftp::FtpError::UnexpectedResponse(resp)) => resp.status.code(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// The final reply code of a refused transfer. libunftp answers `150` as
/// soon as the data connection is set up and reports a storage refusal
/// (missing file, no permission) as the completion reply, so the refusal
/// may come from either step; no data is sent. (A macro because suppaftp
/// does not export its async transfer stream type.)
#[macro_export]
macro_rules! transfer_code {
    ($call:expr) => {
        match $call {
            Err(suppaftp::FtpError::UnexpectedResponse(resp)) => resp.status.code(),
            Err(e) => panic!("expected an error reply, got {e}"),
            Ok(stream) => $crate::common::code_of(stream.finish().await),
        }
    };
}

/// Names, in a child of this test binary, the one test the child runs.
const ALONE: &str = "BUCKETFTP_TEST_ALONE";

/// Runs the calling test again in a child process of this test binary,
/// with nothing beside it: `true` in the parent once the child passed (the
/// caller returns), `false` in the child (the caller goes on with its body).
///
/// For tests that assert figures from an in-process gateway's `/metrics`:
/// the Prometheus registry is process-wide, so every other gateway of this
/// binary moves the same counters and gauges while such a test runs. In
/// its own process only the test's own gateway does. `module` is the
/// caller's `module_path!()`, `test` its function's name; a name that
/// selects no test fails here rather than passing with nothing run.
pub async fn alone(module: &str, test: &str) -> bool {
    // `module_path!()` starts with the crate (`it::`); libtest's names do not.
    let module = module.split_once("::").map_or("", |(_, rest)| rest);
    let name = format!("{module}::{test}");
    if std::env::var(ALONE).is_ok_and(|running| running == name) {
        return false;
    }
    let out = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([&name, "--exact", "--test-threads=1", "--nocapture"])
        .env(ALONE, &name)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run the test in its own process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} in its own process ({}):\n{stdout}\n{stderr}",
        out.status
    );
    eprint!("{stdout}{stderr}");
    true
}

/// A free TCP port on 127.0.0.1 (bound then released: for child processes
/// that need a port number on their command line).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The real `bucketftp` binary in its own process, for what only a process
/// shows: signals, exit codes, logs, its own metrics registry, peak memory.
pub struct Process {
    /// The child.
    pub child: tokio::process::Child,
    /// FTP control address.
    pub ftp: SocketAddr,
    /// HTTP (metrics/health) address.
    pub http: SocketAddr,
    /// Everything the process wrote to stderr (its logs).
    pub log: std::path::PathBuf,
    /// Scratch directory (holds the log and, for `file://`, the root).
    pub dir: tempfile::TempDir,
}

impl Process {
    /// Starts the binary with `--user alice:PASSWORD`, the given storage URL
    /// and extra environment (`BUCKETFTP__…`); waits until FTP answers.
    pub async fn start(storage: &str, env: &[(&str, &str)]) -> Process {
        Self::start_with(storage, &[], env).await
    }

    /// Like [`Process::start`] with extra command-line arguments.
    ///
    /// The ports come from [`free_port`], which frees them again before the
    /// child binds them: another process (any outgoing connection takes an
    /// ephemeral port) can take one in between. A child that exits because
    /// its address is in use is started again on new ports.
    pub async fn start_with(storage: &str, args: &[String], env: &[(&str, &str)]) -> Process {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("bucketftp.log");
        let storage = storage.replace("{dir}", &dir.path().display().to_string());
        for _attempt in 0..5 {
            let ftp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_bucketftp"));
            cmd.args(["--listen", &ftp.to_string(), "--http", &http.to_string()])
                .args(["--storage", &storage])
                .args(["--user", &format!("alice:{PASSWORD}")])
                .args(["--passive-ports", "40000-49999"])
                .args(args)
                .env_remove("BUCKETFTP_CONFIG")
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .kill_on_drop(true);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("start bucketftp");
            // Ready once the HTTP endpoint answers: main binds the FTP
            // listener before the HTTP one, so FTP connections queue from
            // then on. Not probed over FTP: a probe connection from
            // 127.0.0.1 would count against per-address limits until the
            // server saw it close.
            for _ in 0..200 {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if matches!(http_get(http, "/healthz").await, Ok((200, _))) {
                    return Process {
                        child,
                        ftp,
                        http,
                        log,
                        dir,
                    };
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if !text.contains("Address already in use") {
                panic!("bucketftp did not start: {text}");
            }
            let _ = child.kill().await;
        }
        panic!(
            "bucketftp did not start: its ports were taken five times: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// A logged-in client in binary mode.
    pub async fn login(&self) -> AsyncFtpStream {
        let mut ftp = AsyncFtpStream::connect(self.ftp).await.expect("connect");
        ftp.login("alice", PASSWORD).await.expect("login");
        ftp.transfer_type(FileType::Binary).await.expect("TYPE I");
        ftp
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// GET over plain HTTP/1.1 without a client library: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// STOR of `data` as `path` over raw sockets (USER, PASS, TYPE I, EPSV,
/// STOR); the code of the final reply, or of the refusal before `150`.
/// Unlike suppaftp's `finish()`, which reports a reset data connection
/// instead of the reply, this reads the completion reply whatever happened
/// to the data connection: a server that refuses mid-transfer (disk full)
/// may close it while data is still in flight, and the client then sees a
/// reset before the reply.
pub async fn raw_stor(
    addr: SocketAddr,
    user: &str,
    password: &str,
    path: &str,
    data: &[u8],
) -> u32 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut reply = async move |write: &mut tokio::net::tcp::OwnedWriteHalf,
                                line: Option<String>| {
        if let Some(line) = line {
            write
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .expect("send");
        }
        loop {
            let mut text = String::new();
            let n = tokio::time::timeout(Duration::from_secs(60), read.read_line(&mut text))
                .await
                .expect("the server answers within 60 s")
                .expect("read reply");
            assert!(n > 0, "control connection closed");
            if text.as_bytes().get(3) == Some(&b' ') {
                let code: u32 = text[..3].parse().expect("reply code");
                return (code, text);
            }
        }
    };
    assert_eq!(reply(&mut write, None).await.0, 220);
    assert_eq!(reply(&mut write, Some(format!("USER {user}"))).await.0, 331);
    assert_eq!(
        reply(&mut write, Some(format!("PASS {password}"))).await.0,
        230
    );
    assert_eq!(reply(&mut write, Some("TYPE I".into())).await.0, 200);
    let (code, text) = reply(&mut write, Some("EPSV".into())).await;
    assert_eq!(code, 229, "{text}");
    let port: u16 = text
        .split('|')
        .nth(3)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("EPSV reply: {text}"));
    let mut data_conn = tokio::net::TcpStream::connect((addr.ip(), port))
        .await
        .expect("data connection");
    let (code, _) = reply(&mut write, Some(format!("STOR {path}"))).await;
    if code != 150 && code != 125 {
        return code;
    }
    // Errors here are the server's refusal arriving as a reset; the reply
    // says what it was.
    let _ = data_conn.write_all(data).await;
    let _ = data_conn.shutdown().await;
    drop(data_conn);
    reply(&mut write, None).await.0
}

/// RETR of `path`, whole, after the completion reply.
pub async fn retr(ftp: &mut AsyncFtpStream, path: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut stream = ftp
        .retr_as_stream(path)
        .await
        .unwrap_or_else(|e| panic!("RETR {path}: {e}"));
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read data");
    stream.finish().await.expect("RETR completion reply");
    out
}

/// Starts a STOR of `name`, sends `data`, then kills the client: the data
/// connection is reset (linger 0, no FIN) and the control connection
/// dropped at once, as when a device loses power or its process is killed.
pub async fn stor_then_kill(mut ftp: AsyncFtpStream, name: &str, data: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let mut stream = ftp.put_with_stream(name).await.expect("STOR");
    stream.write_all(data).await.expect("send");
    stream.flush().await.expect("flush");
    let _ = socket2::SockRef::from(stream.get_mut().get_ref()).set_linger(Some(Duration::ZERO));
    drop(stream);
    drop(ftp);
}

/// Runs `command` with `data` on its standard input; true when it exits 0.
pub fn run_with_stdin(command: &mut std::process::Command, data: &[u8]) -> bool {
    use std::io::Write;
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write");
    child.wait().expect("wait").success()
}

/// Puts an object through the cloud's own SDK (tests/it/clients/emulator.py),
/// as consoles and CLIs do.
pub fn emulator_put(cloud: &str, key: &str, data: &[u8]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/clients/emulator.py");
    assert!(
        run_with_stdin(
            std::process::Command::new("python3").args([script, "put", cloud, key]),
            data
        ),
        "{cloud} SDK put of {key}"
    );
}

/// Uploads an object through the GCS JSON API of the emulator (what
/// `gsutil` and the console use), with curl.
pub fn gcs_json_upload(key: &str, data: &[u8]) {
    let endpoint = std::env::var("BUCKETFTP_TEST_GCS_ENDPOINT").expect("gcs endpoint");
    let bucket = std::env::var("BUCKETFTP_TEST_GCS_BUCKET").unwrap_or_else(|_| "bucketftp".into());
    let name: String =
        percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC).collect();
    let url = format!("{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}");
    assert!(
        run_with_stdin(
            std::process::Command::new("curl")
                .args(["-sSf", "-X", "POST", "--data-binary", "@-", &url])
                .stdout(std::process::Stdio::null()),
            data
        ),
        "GCS JSON upload of {key}"
    );
}

/// Runs tests/it/clients/emulator.py: the emulator's own API.
pub fn emulator(args: &[&str]) -> (bool, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/clients/emulator.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() && out.status.code() != Some(3) {
        panic!(
            "emulator.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (out.status.success(), text)
}

/// The attributes the store returns for an object (one HEAD).
pub async fn attributes(gw: &Gateway, path: &str) -> object_store::Attributes {
    // On file:// a large upload's SHA-256 is stored after its 226.
    attributes_as_of(gw, path, true).await
}

/// The same; on `file://` waiting for digests still being computed only
/// when `await_digest`.
pub async fn attributes_as_of(
    gw: &Gateway,
    path: &str,
    await_digest: bool,
) -> object_store::Attributes {
    let mut options = object_store::GetOptions {
        head: true,
        ..object_store::GetOptions::default()
    };
    if await_digest {
        options.extensions.insert(bucketftp::AwaitDigest);
    }
    gw.store
        .store
        .get_opts(&gw.key(path), options)
        .await
        .unwrap_or_else(|e| panic!("head {path}: {e}"))
        .attributes
}

/// One user-metadata value among an object's attributes.
pub fn metadata<'a>(attributes: &'a object_store::Attributes, key: &str) -> Option<&'a str> {
    attributes
        .get(&object_store::Attribute::Metadata(key.to_string().into()))
        .map(|v| v.as_ref())
}
