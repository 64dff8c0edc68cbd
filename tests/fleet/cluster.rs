//! The fleet under test: three `bucketftp` processes on distinct loopback
//! addresses, one S3 emulator bucket, and haproxy in TCP mode in front, as
//! docs/kubernetes.md describes for a load balancer with client-IP
//! affinity.
//!
//! libunftp opens each passive socket on the address the control
//! connection arrived at (`passive_common::try_port_range` binds
//! `local_addr.ip()`), so every replica uses the same passive range on its
//! own address and haproxy listens on that range on 127.0.0.1.

use crate::common::{cheap_hash, http_get, storage_for, Backend, PASSWORD};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The replicas' addresses; haproxy's server ids are 1, 2, 3 in this order.
pub const REPLICA_IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
];

/// The load balancer's address: what clients dial and PASV advertises.
pub const BALANCER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// Ports per passive range. libunftp tries 9 random ports of the range per
/// PASV and holds one per running transfer; with ~70 sessions a replica,
/// 500 ports make a failed PASV vanishingly unlikely.
const PASSIVE_SPAN: u16 = 500;

/// The passive ranges lie above Linux's ephemeral ports (32768–60999),
/// where no outgoing connection of haproxy or the clients can hold one.
const PASSIVE_FLOOR: u16 = 61000;

/// How long the fleet may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One gateway process.
pub struct Replica {
    /// haproxy's server id (1-based).
    pub id: u32,
    /// Its loopback address.
    pub ip: Ipv4Addr,
    /// FTP control address.
    pub ftp: SocketAddr,
    /// Metrics and health address.
    pub http: SocketAddr,
    /// The process.
    pub child: Child,
    /// Its stderr (logs).
    pub log: PathBuf,
}

impl Replica {
    /// Sends SIGTERM, as Kubernetes does to a pod being deleted.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("replica still running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// A counter or gauge of this replica's `/metrics`: the sum of every
    /// sample of `name` whose labels include all of `labels`.
    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let (status, body) = http_get(self.http, "/metrics").await.expect("metrics");
        assert_eq!(status, 200, "replica {}: /metrics", self.id);
        body.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter(|l| labels.iter().all(|label| l.contains(label)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// haproxy in front of the replicas.
pub struct Balancer {
    /// Where clients connect.
    pub control: SocketAddr,
    /// The passive range, identical on haproxy and every replica.
    pub passive: RangeInclusive<u16>,
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Balancer {
    /// Runs one command on haproxy's runtime API (its stats socket).
    pub async fn runtime(&self, command: &str) -> String {
        runtime(&self.socket, command)
            .await
            .unwrap_or_else(|e| panic!("haproxy socket: {e}\n{}", self.log_text()))
    }

    /// The affinity table: client address → server id.
    pub async fn affinity(&self) -> BTreeMap<Ipv4Addr, u32> {
        self.runtime("show table control")
            .await
            .lines()
            .filter_map(|line| {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|f| f.strip_prefix(name))
                        .map(str::to_string)
                };
                Some((
                    field("key=")?.parse().ok()?,
                    field("server_id=")?.parse().ok()?,
                ))
            })
            .collect()
    }

    /// The health state (`UP`, `DOWN`, …) of the control backend's servers,
    /// by server id.
    pub async fn health(&self) -> BTreeMap<u32, String> {
        let csv = self.runtime("show stat").await;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .unwrap_or_else(|| panic!("no {name} in show stat"))
        };
        let (pxname, sid, status) = (column("pxname"), column("sid"), column("status"));
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > status && f[pxname] == "control")
            .filter_map(|f| Some((f[sid].parse().ok()?, f[status].to_string())))
            .filter(|(id, _)| *id > 0)
            .collect()
    }

    /// Polls until the control backend's servers are in these states.
    pub async fn wait_health(&self, want: &BTreeMap<u32, &str>) {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let health = self.health().await;
            if want
                .iter()
                .all(|(id, s)| health.get(id).map(String::as_str) == Some(*s))
            {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("haproxy health {health:?}, wanted {want:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// haproxy's own messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Three replicas behind haproxy on one bucket prefix.
pub struct Fleet {
    /// The gateways, in server-id order.
    pub replicas: Vec<Replica>,
    /// The load balancer.
    pub balancer: Balancer,
    /// The key prefix in the emulator's bucket that the fleet serves.
    pub prefix: String,
    /// Config, logs, haproxy's socket.
    pub dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts the fleet, or `None` (after a loud message) when the S3
    /// emulator or haproxy is missing; with `BUCKETFTP_REQUIRE_EMULATORS=1`
    /// a missing piece is a failure instead.
    pub async fn start() -> Option<Fleet> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, options) = storage_for(Backend::S3, dir.path(), "fleet")?;
        let haproxy = haproxy_binary()?;
        let prefix = url
            .splitn(4, '/')
            .nth(3)
            .expect("prefix in url")
            .to_string();
        let config = dir.path().join("bucketftp.toml");
        std::fs::write(&config, gateway_config(&url, &options)).expect("write config");

        let cport = free_addr(BALANCER_IP).port();
        let replica_ports: Vec<(SocketAddr, SocketAddr)> = REPLICA_IPS
            .iter()
            .map(|ip| (SocketAddr::new((*ip).into(), cport), free_addr(*ip)))
            .collect();
        let balancer = start_balancer(&haproxy, dir.path(), &replica_ports).await;
        let mut replicas = Vec::new();
        for (i, (ip, (ftp, http))) in REPLICA_IPS.iter().zip(&replica_ports).enumerate() {
            let id = i as u32 + 1;
            let log = dir.path().join(format!("replica-{id}.log"));
            let child = Command::new(env!("CARGO_BIN_EXE_bucketftp"))
                .arg("--config")
                .arg(&config)
                .args(["--listen", &ftp.to_string(), "--http", &http.to_string()])
                .args([
                    "--passive-ports",
                    &format!("{}-{}", balancer.passive.start(), balancer.passive.end()),
                ])
                .env_remove("BUCKETFTP_CONFIG")
                // What docs/kubernetes.md sets on every pod.
                .env("BUCKETFTP__SERVER__PASSIVE_HOST", BALANCER_IP.to_string())
                .env("BUCKETFTP__SERVER__SHUTDOWN_GRACE", "2s")
                // haproxy connects from its own address: every client is
                // 127.0.0.1 to the replicas.
                .env("BUCKETFTP__SERVER__MAX_SESSIONS_PER_IP", "1000")
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .kill_on_drop(true)
                .spawn()
                .expect("start bucketftp");
            replicas.push(Replica {
                id,
                ip: *ip,
                ftp: *ftp,
                http: *http,
                child,
                log,
            });
        }
        for replica in &mut replicas {
            wait_ready(replica).await;
        }
        balancer
            .wait_health(&(1..=3).map(|id| (id, "UP")).collect())
            .await;
        Some(Fleet {
            replicas,
            balancer,
            prefix,
            dir,
        })
    }

    /// Everything the replicas and haproxy logged, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = format!("(files in {})\n", self.dir.path().display());
        for r in &self.replicas {
            out.push_str(&format!("--- replica {} (ftp {}) ---\n", r.id, r.ftp));
            let text = r.log_text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str("--- haproxy ---\n");
        out.push_str(&self.balancer.log_text());
        out
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The configuration every replica shares: the bucket, and one account
/// with a cheap hash (200 logins at once should not be an argon2 benchmark).
fn gateway_config(url: &str, options: &BTreeMap<String, String>) -> String {
    let mut text = String::from("[server]\nactive_mode = false\nidle_timeout = \"2m\"\n\n");
    text.push_str(&format!(
        "[storage]\nurl = {url:?}\npart_size = \"5MiB\"\n\n[storage.options]\n"
    ));
    for (k, v) in options {
        text.push_str(&format!("{k} = {v:?}\n"));
    }
    text.push_str(&format!(
        "\n[[users]]\nname = \"alice\"\npassword_hash = {:?}\nhome = \"/\"\npermissions = [\"all\"]\n",
        cheap_hash(PASSWORD)
    ));
    text
}

/// `haproxy` on PATH or in /usr/sbin; `None` (skip) when missing.
fn haproxy_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("BUCKETFTP_REQUIRE_EMULATORS").as_deref() == Ok("1") {
            panic!("haproxy is not installed but BUCKETFTP_REQUIRE_EMULATORS=1 (apt-get install haproxy)");
        }
        eprintln!("\n*** SKIPPED: haproxy is not installed (apt-get install haproxy) ***\n");
    }
    found
}

/// A free port on `ip` (bound, then released for the child to take).
fn free_addr(ip: Ipv4Addr) -> SocketAddr {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// Starts haproxy on a passive range that is free on 127.0.0.1, trying
/// another range if a port was taken meanwhile.
async fn start_balancer(
    haproxy: &Path,
    dir: &Path,
    replicas: &[(SocketAddr, SocketAddr)],
) -> Balancer {
    let blocks = (u16::MAX - PASSIVE_FLOOR) / PASSIVE_SPAN;
    let first = (std::process::id() % u32::from(blocks)) as u16;
    let mut last_log = String::new();
    for attempt in 0..blocks {
        let low = PASSIVE_FLOOR + ((first + attempt) % blocks) * PASSIVE_SPAN;
        let passive = low..=low + PASSIVE_SPAN - 1;
        let all_free = passive
            .clone()
            .all(|p| std::net::TcpListener::bind((BALANCER_IP, p)).is_ok());
        if !all_free {
            continue;
        }
        let control = SocketAddr::new(BALANCER_IP.into(), replicas[0].0.port());
        let socket = dir.join("haproxy.sock");
        let cfg = dir.join("haproxy.cfg");
        let log = dir.join("haproxy.log");
        std::fs::write(&cfg, haproxy_config(control, &passive, replicas, &socket))
            .expect("write haproxy.cfg");
        let mut child = Command::new(haproxy)
            .arg("-f")
            .arg(&cfg)
            .arg("-db") // foreground: a child we own and kill
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("start haproxy");
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                last_log = std::fs::read_to_string(&log).unwrap_or_default();
                break;
            }
            if runtime(&socket, "show info").await.is_ok()
                && tokio::net::TcpStream::connect(control).await.is_ok()
            {
                return Balancer {
                    control,
                    passive,
                    child,
                    socket,
                    log,
                };
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "haproxy did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !last_log.contains("cannot bind") {
            panic!("haproxy failed: {last_log}");
        }
    }
    panic!("no free passive range for haproxy: {last_log}");
}

/// haproxy's configuration. One stick table, filled by the control
/// frontend, decides where a client's data connections go.
fn haproxy_config(
    control: SocketAddr,
    passive: &RangeInclusive<u16>,
    replicas: &[(SocketAddr, SocketAddr)],
    socket: &Path,
) -> String {
    let mut control_servers = String::new();
    let mut passive_servers = String::new();
    for (i, (ftp, http)) in replicas.iter().enumerate() {
        let id = i + 1;
        control_servers.push_str(&format!(
            "    server r{id} {ftp} id {id} check port {}\n",
            http.port()
        ));
        passive_servers.push_str(&format!(
            "    server r{id} {} id {id} check port {}\n",
            ftp.ip(),
            http.port()
        ));
    }
    format!(
        r#"global
    maxconn 4000
    stats socket {socket} mode 600 level admin

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend ftp
    bind {control}
    bind {balancer}:{low}-{high}
    default_backend control

backend control
    balance source
    stick-table type ip size 10k expire 1h
    stick store-request src
    option httpchk
    http-check send meth GET uri /readyz
    option redispatch
    retries 2
    default-server inter 200ms fall 1 rise 1
{passive_servers}"#,
        socket = socket.display(),
        balancer = BALANCER_IP,
        low = passive.start(),
        high = passive.end(),
    )
}

/// One command on haproxy's runtime API.
async fn runtime(socket: &Path, command: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::UnixStream::connect(socket).await?;
    stream.write_all(format!("{command}\n").as_bytes()).await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    Ok(out)
}

/// Polls `/readyz` until the replica serves (storage reachable).
async fn wait_ready(replica: &mut Replica) {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = replica.child.try_wait() {
            panic!(
                "replica {} exited ({status}): {}",
                replica.id,
                replica.log_text()
            );
        }
        if let Ok((200, _)) = http_get(replica.http, "/readyz").await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("replica {} not ready: {}", replica.id, replica.log_text());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
