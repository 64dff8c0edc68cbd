//! haproxy in TCP mode in front of the replicas: the load balancer of
//! docs/kubernetes.md, with client-IP affinity for control and data
//! connections alike.

use super::cluster::{free_addr, START_TIMEOUT};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The load balancer's address: what clients dial and PASV advertises.
pub const BALANCER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// Ports per passive range. libunftp tries 9 random ports of the range per
/// PASV and holds one per running transfer; with ~70 sessions a replica,
/// 500 ports make a failed PASV vanishingly unlikely.
const PASSIVE_SPAN: u16 = 500;

/// The passive ranges lie above Linux's ephemeral ports (32768–60999),
/// where no outgoing connection of haproxy or the clients can hold one.
const PASSIVE_FLOOR: u16 = 61000;

/// How haproxy spreads connections over the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// docs/kubernetes.md's simple mode: client-IP affinity for control and
    /// data connections, one passive range shared by every replica, the
    /// replicas see haproxy's address.
    Affinity,
    /// Any L4 balancer: control connections round-robin, each replica its
    /// own passive range (a data connection finds its replica by port
    /// alone), and a PROXY protocol v2 header on every connection, so the
    /// replicas see the clients' addresses.
    ProxyProtocol,
}

/// haproxy in front of the replicas.
pub struct Balancer {
    /// Where clients connect.
    pub control: SocketAddr,
    /// Each replica's passive range, in server-id order (all the same with
    /// [`Topology::Affinity`]).
    pub passive: Vec<RangeInclusive<u16>>,
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

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `haproxy` on PATH or in /usr/sbin; `None` (skip) when missing.
pub fn binary() -> Option<PathBuf> {
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

/// Starts haproxy on a passive range that is free on 127.0.0.1, trying
/// another range if a port was taken meanwhile.
pub async fn start(
    haproxy: &Path,
    dir: &Path,
    replicas: &[(SocketAddr, SocketAddr)],
    topology: Topology,
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
        let control = free_addr(BALANCER_IP);
        let socket = dir.join("haproxy.sock");
        let cfg = dir.join("haproxy.cfg");
        let log = dir.join("haproxy.log");
        let passive: Vec<RangeInclusive<u16>> = match topology {
            Topology::Affinity => vec![passive; replicas.len()],
            Topology::ProxyProtocol => {
                let width = PASSIVE_SPAN / replicas.len() as u16;
                (0..replicas.len() as u16)
                    .map(|n| {
                        let start = passive.start() + n * width;
                        start..=start + width - 1
                    })
                    .collect()
            }
        };
        let text = match topology {
            Topology::Affinity => haproxy_config(control, &passive[0], replicas, &socket),
            Topology::ProxyProtocol => proxy_protocol_config(control, &passive, replicas, &socket),
        };
        std::fs::write(&cfg, text).expect("write haproxy.cfg");
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
            // Ready once the control frontend is open. Asked on the runtime
            // socket, not by connecting: a probe connection would be
            // forwarded to a replica as soon as one is up and leave its
            // source address in the affinity table the test checks.
            if runtime(&socket, "show stat").await.is_ok_and(|csv| {
                csv.lines()
                    .any(|l| l.starts_with("ftp_control,FRONTEND,") && l.contains(",OPEN,"))
            }) {
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
        passive_servers.push_str(&format!("    server r{id} {} id {id}\n", ftp.ip()));
    }
    let preamble = preamble(control, socket);
    format!(
        r#"{preamble}
# Control connections: a new client address is spread by hashing it
# (consistent hashing: a replica going down moves only its own clients) and
# remembered in the fleet's one stick table. A remembered client stays on
# its replica even while a health check fails ("option persist"): with
# affinity by address alone, moving some of a client's sessions would send
# the data connections of the others to the wrong replica. Only a replica
# that refuses connections (stopped) loses its clients, to "redispatch",
# which also rewrites their entries.
backend control
    balance source
    hash-type consistent
    stick-table type ip size 10k expire 1h
    stick on src
    option persist
    option redispatch
    retries 2
    # /readyz: 503 from the first moment of a shutdown. It asks the store
    # (up to 5 s), so it may be slow under load: allow what the Kubernetes
    # manifests allow (timeoutSeconds 6).
    option httpchk
    http-check send meth GET uri /readyz
    timeout check 6s
    default-server inter 500ms fall 2 rise 1
{control_servers}
frontend ftp_passive
    bind {balancer}:{low}-{high}
    default_backend passive

# Data connections: to the replica that holds the client's control
# connection, by the same table. No health check here, so a draining
# replica still gets the data connections of its own sessions, and a data
# connection never lands on another replica: all connections reach the
# replicas from haproxy's address, so libunftp's source-IP check could not
# tell a stray one from the right one.
backend passive
    stick match src table control
    balance source
    hash-type consistent
{passive_servers}"#,
        balancer = BALANCER_IP,
        low = passive.start(),
        high = passive.end(),
    )
}

/// What both topologies' configurations start with: the runtime socket,
/// TCP mode, and the control port's frontend.
fn preamble(control: SocketAddr, socket: &Path) -> String {
    format!(
        r#"global
    maxconn 4000
    stats socket {socket} mode 600 level admin

defaults
    mode tcp
    timeout connect 2s
    # Longer than any upload the test holds open.
    timeout client 2m
    timeout server 2m

frontend ftp_control
    bind {control}
    default_backend control
"#,
        socket = socket.display(),
    )
}

/// haproxy's configuration for [`Topology::ProxyProtocol`]: what an AWS NLB
/// with proxy protocol v2 on its target groups does, with one listener per
/// replica range.
fn proxy_protocol_config(
    control: SocketAddr,
    passive: &[RangeInclusive<u16>],
    replicas: &[(SocketAddr, SocketAddr)],
    socket: &Path,
) -> String {
    let mut text = format!(
        r#"{preamble}
# Control connections: round-robin, no stickiness at all. Health checks
# (on the HTTP port, without a PROXY header) take a stopped replica out.
backend control
    balance roundrobin
    option redispatch
    retries 2
    option httpchk
    http-check send meth GET uri /readyz
    timeout check 6s
    default-server inter 500ms fall 2 rise 1
"#,
        preamble = preamble(control, socket),
    );
    for (i, (ftp, http)) in replicas.iter().enumerate() {
        let id = i + 1;
        text.push_str(&format!(
            "    server r{id} {ftp} id {id} send-proxy-v2 check port {}\n",
            http.port()
        ));
    }
    // Data connections: replica n's range goes to replica n, port for port
    // (no port on the server line keeps the client's), with a header too.
    for (i, ((ftp, _), range)) in replicas.iter().zip(passive).enumerate() {
        let id = i + 1;
        text.push_str(&format!(
            "\nfrontend ftp_passive_{id}\n    bind {balancer}:{low}-{high}\n    default_backend passive_{id}\n\nbackend passive_{id}\n    server r{id} {ip} send-proxy-v2\n",
            balancer = BALANCER_IP,
            low = range.start(),
            high = range.end(),
            ip = ftp.ip(),
        ));
    }
    text
}

/// One command on haproxy's runtime API.
async fn runtime(socket: &Path, command: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::UnixStream::connect(socket).await?;
    stream.write_all(format!("{command}\n").as_bytes()).await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    Ok(out)
}
