//! The fleet under test: three `bucketftp` processes on distinct loopback
//! addresses, one S3 emulator bucket, and haproxy in TCP mode in front
//! (tests/it/fleet/haproxy.rs) in one of two topologies.
//!
//! libunftp opens each passive socket on the address the control
//! connection arrived at (`passive_common::try_port_range` binds
//! `local_addr.ip()`), so replicas can share a passive range on their own
//! addresses (affinity) or each have its own (PROXY protocol topology);
//! haproxy listens on the ranges on 127.0.0.1.

use super::haproxy::{self, Balancer, Topology, BALANCER_IP};
use crate::common::{cheap_hash, http_get, storage_for, Backend, PASSWORD};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The replicas' addresses; haproxy's server ids are 1, 2, 3 in this order.
pub const REPLICA_IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
];

/// How long the fleet may take to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Three replicas behind haproxy on one bucket prefix.
pub struct Fleet {
    /// The gateways, in server-id order.
    pub replicas: Vec<Replica>,
    /// The load balancer.
    pub balancer: Balancer,
    /// The key prefix in the emulator's bucket that the fleet serves.
    pub prefix: String,
    /// How haproxy spreads connections.
    pub topology: Topology,
    /// Config, logs, haproxy's socket.
    pub dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts the fleet, or `None` (after a loud message) when the S3
    /// emulator or haproxy is missing; with `BUCKETFTP_REQUIRE_EMULATORS=1`
    /// a missing piece is a failure instead.
    pub async fn start(topology: Topology) -> Option<Fleet> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, options) = storage_for(Backend::S3, dir.path(), "fleet")?;
        let program = haproxy::binary()?;
        let prefix = url
            .splitn(4, '/')
            .nth(3)
            .expect("prefix in url")
            .to_string();
        let config = dir.path().join("bucketftp.toml");
        std::fs::write(&config, gateway_config(&url, &options, topology)).expect("write config");

        let replica_ports: Vec<(SocketAddr, SocketAddr)> = REPLICA_IPS
            .iter()
            .map(|ip| (free_addr(*ip), free_addr(*ip)))
            .collect();
        let balancer = haproxy::start(&program, dir.path(), &replica_ports, topology).await;
        let mut fleet = Fleet {
            replicas: Vec::new(),
            balancer,
            prefix,
            topology,
            dir,
        };
        for (i, (ip, (ftp, http))) in REPLICA_IPS.iter().zip(&replica_ports).enumerate() {
            let replica = fleet.spawn(i as u32 + 1, *ip, *ftp, *http);
            fleet.replicas.push(replica);
        }
        for replica in &mut fleet.replicas {
            wait_ready(replica).await;
        }
        fleet
            .balancer
            .wait_health(&(1..=3).map(|id| (id, "UP")).collect())
            .await;
        Some(fleet)
    }

    /// Starts replica `id` (again, after it stopped: same addresses, same
    /// passive range, as a StatefulSet pod comes back).
    fn spawn(&self, id: u32, ip: Ipv4Addr, ftp: SocketAddr, http: SocketAddr) -> Replica {
        let log = self.dir.path().join(format!("replica-{id}.log"));
        let passive = &self.balancer.passive[id as usize - 1];
        let mut command = Command::new(env!("CARGO_BIN_EXE_bucketftp"));
        command
            .arg("--config")
            .arg(self.dir.path().join("bucketftp.toml"))
            .args(["--listen", &ftp.to_string(), "--http", &http.to_string()])
            .args([
                "--passive-ports",
                &format!("{}-{}", passive.start(), passive.end()),
            ])
            .env_remove("BUCKETFTP_CONFIG")
            // What docs/kubernetes.md sets on every pod.
            .env("BUCKETFTP__SERVER__PASSIVE_HOST", BALANCER_IP.to_string())
            .env("BUCKETFTP__SERVER__SHUTDOWN_GRACE", "2s")
            // Listings without a HEAD per file for stored times: 200
            // sessions each listing a directory of up to 200 files would
            // send the emulator tens of thousands of HEADs, which tests
            // the emulator (tests/it/modification_times.rs tests the times).
            .env("BUCKETFTP__STORAGE__LISTING_MTIME_LIMIT", "0")
            // Tells the clients which replica they reached.
            .env(
                "BUCKETFTP__SERVER__GREETING",
                format!("bucketftp replica {id} ready"),
            )
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("log file"),
            )
            .kill_on_drop(true);
        match self.topology {
            // haproxy connects from its own address: every client is
            // 127.0.0.1 to the replicas.
            Topology::Affinity => {
                command.env("BUCKETFTP__SERVER__MAX_SESSIONS_PER_IP", "1000");
            }
            // The clients' own addresses, from the header; only haproxy
            // (127.0.0.1) may send one.
            Topology::ProxyProtocol => {
                command
                    .env("BUCKETFTP__SERVER__PROXY_PROTOCOL", "true")
                    .env("BUCKETFTP__SERVER__PROXY_PROTOCOL_FROM", "127.0.0.1/32");
            }
        }
        let child = command.spawn().expect("start bucketftp");
        Replica {
            id,
            ip,
            ftp,
            http,
            child,
            log,
        }
    }

    /// Starts a stopped replica again and waits until haproxy sends it
    /// sessions.
    pub async fn restart(&mut self, id: u32) {
        let index = id as usize - 1;
        let (ip, ftp, http) = {
            let old = &self.replicas[index];
            (old.ip, old.ftp, old.http)
        };
        self.replicas[index] = self.spawn(id, ip, ftp, http);
        wait_ready(&mut self.replicas[index]).await;
        self.balancer
            .wait_health(&[(id, "UP")].into_iter().collect())
            .await;
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

/// The configuration every replica shares: the bucket, and one account
/// with a cheap hash (200 logins at once should not be an argon2 benchmark).
fn gateway_config(url: &str, options: &BTreeMap<String, String>, topology: Topology) -> String {
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
    if topology == Topology::ProxyProtocol {
        // The clients are 127.0.0.10-60; behind the balancer without the
        // header every connection would come from 127.0.0.1, inside this
        // network too, so refusing 127.0.0.100 proves the header is used.
        text.push_str("allowed_ips = [\"127.0.0.0/26\"]\n");
    }
    text
}

/// A free port on `ip` (bound, then released for the child to take).
pub fn free_addr(ip: Ipv4Addr) -> SocketAddr {
    std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
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
