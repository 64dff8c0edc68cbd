//! Several replicas behind one load balancer, as docs/kubernetes.md
//! designs it: three gateways on one S3 (emulator) bucket, haproxy in TCP
//! mode in front with client-IP affinity, the same passive range on every
//! replica and `server.passive_host` set to the load balancer's address.
//! Clients come from 51 loopback addresses, so affinity has clients to
//! spread. What the bucket holds is read through the emulator's own API
//! (tests/fleet/bucket_state.py), never through bucketftp.
//!
//! Needs the S3 emulator (`source .ci/emulators.sh`) and haproxy; without
//! them the test says so loudly and is skipped, unless
//! `BUCKETFTP_REQUIRE_EMULATORS=1`.

#[path = "fleet/cluster.rs"]
mod cluster;
mod common;
#[path = "fleet/ftp_client.rs"]
mod ftp_client;

use cluster::{Fleet, Replica};
use common::{payload, PASSWORD};
use ftp_client::{Failure, Pace, Passive, Session};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The clients' source addresses: 127.0.0.10 … 127.0.0.60.
fn client_ips() -> Vec<Ipv4Addr> {
    (10..=60).map(|n| Ipv4Addr::new(127, 0, 0, n)).collect()
}

/// Concurrent sessions in the first phase.
const SESSIONS: usize = 200;

/// Sessions looping over uploads while a replica is stopped.
const LOOPERS: usize = 60;

/// The size of the uploads that outlast the shutdown grace, and how much of
/// them goes out before the replica is stopped (more than one 5 MiB part,
/// so a multipart upload is in progress).
const SLOW_SIZE: usize = 8 << 20;
const SLOW_FAST_PART: usize = 6 << 20;

/// No session may take longer than this (a hang is a failure, not a stuck
/// test).
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);

/// How long polled conditions may take to come true.
const POLL_LIMIT: Duration = Duration::from_secs(30);

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// What the emulator holds: objects (key → size, SHA-256) and keys of
/// in-progress multipart uploads.
struct BucketState {
    objects: BTreeMap<String, (usize, String)>,
    uploads: Vec<String>,
}

/// Reads the bucket under `prefix` through boto3.
async fn bucket_state(prefix: &str) -> BucketState {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fleet/bucket_state.py");
    let out = tokio::process::Command::new("python3")
        .args([script, prefix])
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "bucket_state.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut state = BucketState {
        objects: BTreeMap::new(),
        uploads: Vec::new(),
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        match fields[..] {
            ["object", key, size, sha] => {
                state.objects.insert(
                    key.to_string(),
                    (size.parse().expect("size"), sha.to_string()),
                );
            }
            ["upload", key] => state.uploads.push(key.to_string()),
            _ => panic!("bucket_state.py: unexpected line {line:?}"),
        }
    }
    state
}

/// Polls `check` until it returns `true`, or fails with `what`.
async fn poll_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + POLL_LIMIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn login(source: Ipv4Addr, to: SocketAddr, passive: Passive) -> Result<Session, Failure> {
    Session::login(source, to, "alice", PASSWORD, passive).await
}

/// A session's failure, or a timeout as one.
async fn bounded<T>(
    work: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(SESSION_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(Failure {
                step: "session".into(),
                code: None,
                detail: format!("no progress in {SESSION_TIMEOUT:?}"),
            })
        })
}

/// Phase 1: one session's STOR, LIST and RETR, every byte compared.
async fn store_list_retrieve(
    source: Ipv4Addr,
    to: SocketAddr,
    passive: Passive,
    name: String,
    data: Vec<u8>,
) -> Result<(), Failure> {
    let mut ftp = login(source, to, passive).await?;
    ftp.store(&format!("phase1/{name}"), &data, Pace::Full)
        .await?;
    let listing = ftp.list("phase1").await?;
    if !listing.lines().any(|l| l.ends_with(&format!(" {name}"))) {
        return Err(Failure {
            step: "LIST phase1".into(),
            code: Some(226),
            detail: format!("{name} missing from {} lines", listing.lines().count()),
        });
    }
    let back = ftp.retrieve(&format!("phase1/{name}")).await?;
    if back != data {
        return Err(Failure {
            step: format!("RETR phase1/{name}"),
            code: Some(226),
            detail: format!(
                "{} bytes back, {} stored, or different",
                back.len(),
                data.len()
            ),
        });
    }
    ftp.quit().await;
    Ok(())
}

/// Phase 2: a session that stores (and reads back) small files until told
/// to stop, or until the server refuses.
struct Looper {
    source: Ipv4Addr,
    /// Uploads that were answered 226: key (under the prefix) → SHA-256.
    stored: Vec<(String, String)>,
    /// Why it ended early.
    failure: Option<Failure>,
}

async fn looper(
    index: usize,
    source: Ipv4Addr,
    to: SocketAddr,
    passive: Passive,
    done: Arc<AtomicUsize>,
    stop: watch::Receiver<bool>,
) -> Looper {
    let mut outcome = Looper {
        source,
        stored: Vec::new(),
        failure: None,
    };
    let mut ftp = match bounded(login(source, to, passive)).await {
        Ok(ftp) => ftp,
        Err(f) => {
            outcome.failure = Some(f);
            return outcome;
        }
    };
    let mut round = 0u64;
    while !*stop.borrow() {
        let size = (64 << 10) + (index * 40_009 + round as usize * 7_919) % (192 << 10);
        let data = payload(size, 1_000_000 + index as u64 * 1_000 + round);
        let path = format!("phase2/loop-{index:02}-{round:03}.bin");
        let result = bounded(async {
            ftp.store(&path, &data, Pace::Full).await?;
            outcome.stored.push((path.clone(), sha256_hex(&data)));
            let back = ftp.retrieve(&path).await?;
            if back != data {
                return Err(Failure {
                    step: format!("RETR {path}"),
                    code: Some(226),
                    detail: "different bytes".into(),
                });
            }
            Ok(())
        })
        .await;
        if let Err(f) = result {
            outcome.failure = Some(f);
            return outcome;
        }
        done.fetch_add(1, Ordering::SeqCst);
        round += 1;
    }
    ftp.quit().await;
    outcome
}

/// Phase 2: one upload held open past the shutdown grace.
struct SlowUpload {
    source: Ipv4Addr,
    path: String,
    sha: String,
    result: Result<(), Failure>,
}

async fn slow_upload(
    index: usize,
    source: Ipv4Addr,
    to: SocketAddr,
    reached: tokio::sync::mpsc::UnboundedSender<()>,
    release: watch::Receiver<bool>,
) -> SlowUpload {
    let data = payload(SLOW_SIZE, 2_000_000 + index as u64);
    let path = format!("phase2/slow-{index}.bin");
    let result = bounded(async {
        let mut ftp = login(source, to, Passive::Epsv).await?;
        let pace = Pace::Hold {
            fast: SLOW_FAST_PART,
            reached,
            release,
        };
        ftp.store(&path, &data, pace).await?;
        ftp.quit().await;
        Ok(())
    })
    .await;
    SlowUpload {
        source,
        path,
        sha: sha256_hex(&data),
        result,
    }
}

/// Upload and download successes and failures counted by one replica.
async fn transfer_counts(replica: &Replica) -> [f64; 4] {
    let m = |d: &'static str, o: &'static str| async move {
        replica
            .metric(
                "bucketftp_transfers_total",
                &[&format!("direction=\"{d}\""), &format!("outcome=\"{o}\"")],
            )
            .await
    };
    [
        m("upload", "success").await,
        m("upload", "failure").await,
        m("download", "success").await,
        m("download", "failure").await,
    ]
}

fn fail_with_logs(fleet: &Fleet, message: String) -> ! {
    panic!("{message}\n{}", fleet.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_haproxy_keep_affinity_and_drain_cleanly() {
    let Some(mut fleet) = cluster::Fleet::start().await else {
        return;
    };
    let to = fleet.balancer.control;
    let ips = client_ips();
    let started = std::time::Instant::now();

    // ---- Phase 1: 200 sessions at once, PASV and EPSV, every byte checked.
    let mut expected: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut sessions = tokio::task::JoinSet::new();
    for i in 0..SESSIONS {
        let source = ips[i % ips.len()];
        let passive = if i % 2 == 0 {
            Passive::Pasv
        } else {
            Passive::Epsv
        };
        let size = (64 << 10) + (i * 104_729) % (960 << 10);
        let data = payload(size, i as u64 + 1);
        let name = format!("s{i:03}.bin");
        expected.insert(
            format!("{}/phase1/{name}", fleet.prefix),
            (size, sha256_hex(&data)),
        );
        sessions.spawn(async move {
            let result = bounded(store_list_retrieve(source, to, passive, name, data)).await;
            (i, source, passive, result)
        });
    }
    let mut failures = Vec::new();
    let mut per_source: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    while let Some(joined) = sessions.join_next().await {
        let (i, source, passive, result) = joined.expect("session task");
        *per_source.entry(source).or_default() += 1;
        if let Err(f) = result {
            failures.push(format!("session {i} from {source} ({passive:?}): {f}"));
        }
    }
    if !failures.is_empty() {
        fail_with_logs(
            &fleet,
            format!(
                "{} of {SESSIONS} sessions failed:\n{}",
                failures.len(),
                failures.join("\n")
            ),
        );
    }
    eprintln!("phase 1: {SESSIONS} sessions in {:?}", started.elapsed());

    // Spread: the affinity table names a replica for every client address,
    // and each replica counted exactly the transfers of its clients.
    let affinity = fleet.balancer.affinity().await;
    assert_eq!(
        affinity.keys().copied().collect::<BTreeSet<_>>(),
        ips.iter().copied().collect::<BTreeSet<_>>(),
        "affinity table"
    );
    let mut phase1_uploads: BTreeMap<u32, usize> = BTreeMap::new();
    for (ip, n) in &per_source {
        *phase1_uploads.entry(affinity[ip]).or_default() += n;
    }
    for replica in &fleet.replicas {
        let mine = phase1_uploads.get(&replica.id).copied().unwrap_or(0);
        let counts = transfer_counts(replica).await;
        eprintln!(
            "phase 1: replica {} ({}) served {mine} sessions; transfers [up ok, up failed, down ok, down failed] = {counts:?}",
            replica.id, replica.ip
        );
        assert!(
            mine > 0,
            "replica {} got no clients: {affinity:?}",
            replica.id
        );
        assert_eq!(
            counts,
            [mine as f64, 0.0, mine as f64, 0.0],
            "replica {}: its transfers are exactly its clients' (data followed control)",
            replica.id
        );
    }
    let state = bucket_state(&format!("{}/", fleet.prefix)).await;
    assert!(
        state.uploads.is_empty(),
        "uploads left: {:?}",
        state.uploads
    );
    assert_eq!(
        state.objects, expected,
        "the bucket holds exactly what was stored"
    );

    // ---- Phase 2: SIGTERM one replica while its uploads are in flight.
    let victim_id = 2;
    let victim_ips: BTreeSet<Ipv4Addr> = affinity
        .iter()
        .filter(|(_, id)| **id == victim_id)
        .map(|(ip, _)| *ip)
        .collect();
    let (release_tx, release_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (reached_tx, mut reached_rx) = tokio::sync::mpsc::unbounded_channel();
    // Two held uploads on every replica (the victim's must be cut, the
    // others' must complete).
    let mut slow = tokio::task::JoinSet::new();
    let mut slow_count = 0;
    let mut victim_slow_paths = Vec::new();
    for replica in &fleet.replicas {
        let mine = affinity.iter().filter(|(_, id)| **id == replica.id);
        for (ip, _) in mine.take(2) {
            let index = slow_count;
            slow_count += 1;
            if replica.id == victim_id {
                victim_slow_paths.push(format!("{}/phase2/slow-{index}.bin", fleet.prefix));
            }
            slow.spawn(slow_upload(
                index,
                *ip,
                to,
                reached_tx.clone(),
                release_rx.clone(),
            ));
        }
    }
    let mut loopers = tokio::task::JoinSet::new();
    let rounds: Vec<Arc<AtomicUsize>> = (0..LOOPERS).map(|_| Arc::default()).collect();
    for (j, done) in rounds.iter().enumerate() {
        let passive = if j % 2 == 0 {
            Passive::Epsv
        } else {
            Passive::Pasv
        };
        loopers.spawn(looper(
            j,
            ips[j % ips.len()],
            to,
            passive,
            done.clone(),
            stop_rx.clone(),
        ));
    }
    // In flight: every held upload past its first part, the victim's
    // multipart uploads visible in the bucket, every looper under way.
    for _ in 0..slow_count {
        tokio::time::timeout(POLL_LIMIT, reached_rx.recv())
            .await
            .expect("held uploads under way")
            .expect("reached channel");
    }
    let slow_prefix = format!("{}/phase2/slow-", fleet.prefix);
    poll_until("the victim's multipart uploads", || async {
        let uploads = bucket_state(&slow_prefix).await.uploads;
        victim_slow_paths.iter().all(|p| uploads.contains(p))
    })
    .await;
    poll_until("every looper's first round", || async {
        rounds.iter().all(|r| r.load(Ordering::SeqCst) > 0)
    })
    .await;
    let victim = fleet
        .replicas
        .iter_mut()
        .find(|r| r.id == victim_id)
        .expect("victim");
    let in_flight = victim
        .metric("bucketftp_transfers_in_flight", &["direction=\"upload\""])
        .await;
    eprintln!("phase 2: SIGTERM to replica {victim_id} with {in_flight} uploads in flight");
    assert!(in_flight >= victim_slow_paths.len() as f64);
    victim.terminate();
    let status = tokio::time::timeout(POLL_LIMIT, victim.child.wait())
        .await
        .expect("the victim exits after its grace period")
        .expect("wait");
    assert!(status.success(), "victim exit status {status}");
    let balancer = &fleet.balancer;
    balancer
        .wait_health(&[(victim_id, "DOWN")].into_iter().collect())
        .await;
    // The survivors keep serving: every looper still running finishes a
    // round that began after the victim was gone.
    let after_exit: Vec<usize> = rounds.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    release_tx.send(true).expect("release");
    let mut slow_results = Vec::new();
    while let Some(joined) = slow.join_next().await {
        slow_results.push(joined.expect("slow task"));
    }
    poll_until(
        "a round after the shutdown on every surviving looper",
        || async {
            rounds.iter().enumerate().all(|(j, r)| {
                victim_ips.contains(&ips[j % ips.len()])
                    || r.load(Ordering::SeqCst) >= after_exit[j] + 2
            })
        },
    )
    .await;
    stop_tx.send(true).expect("stop");
    let mut loop_results = Vec::new();
    while let Some(joined) = loopers.join_next().await {
        loop_results.push(joined.expect("looper task"));
    }

    // Judge: only the victim's sessions failed, each with a 4xx reply; the
    // bucket holds exactly the uploads answered 226, complete.
    let mut problems = Vec::new();
    let mut stored: BTreeMap<String, String> = BTreeMap::new();
    let mut endings: BTreeMap<String, usize> = BTreeMap::new();
    let mut judge = |source: &Ipv4Addr, failure: &Failure, problems: &mut Vec<String>| {
        let on_victim = victim_ips.contains(source);
        let command = failure.step.split(' ').next().unwrap_or_default();
        let code = failure.code.map_or("no reply".into(), |c| c.to_string());
        *endings.entry(format!("{command} {code}")).or_default() += 1;
        let is_4xx = failure.code.is_some_and(|c| (400..500).contains(&c));
        if !on_victim {
            problems.push(format!(
                "{source} (surviving replica {}): {failure}",
                affinity[source]
            ));
        } else if !is_4xx {
            problems.push(format!("{source} (victim): not a 4xx: {failure}"));
        }
    };
    for l in &loop_results {
        for (path, sha) in &l.stored {
            stored.insert(format!("{}/{path}", fleet.prefix), sha.clone());
        }
        match (&l.failure, victim_ips.contains(&l.source)) {
            (Some(f), _) => judge(&l.source, f, &mut problems),
            (None, true) => problems.push(format!(
                "{}: a looper on the victim never heard of the shutdown",
                l.source
            )),
            (None, false) => {}
        }
    }
    for s in &slow_results {
        match &s.result {
            Ok(()) => {
                if victim_ips.contains(&s.source) {
                    problems.push(format!("{}: 226 for a held upload on the victim", s.path));
                }
                stored.insert(format!("{}/{}", fleet.prefix, s.path), s.sha.clone());
            }
            Err(f) => judge(&s.source, f, &mut problems),
        }
    }
    if !problems.is_empty() {
        fail_with_logs(&fleet, format!("phase 2:\n{}", problems.join("\n")));
    }
    eprintln!(
        "phase 2: {} uploads answered 226; sessions that failed, by command and reply: {endings:?}",
        stored.len()
    );
    let phase2 = format!("{}/phase2/", fleet.prefix);
    poll_until("no multipart upload left", || async {
        bucket_state(&phase2).await.uploads.is_empty()
    })
    .await;
    let state = bucket_state(&phase2).await;
    let landed: BTreeMap<String, String> = state
        .objects
        .into_iter()
        .map(|(k, (_, sha))| (k, sha))
        .collect();
    assert_eq!(
        landed, stored,
        "phase 2: the bucket holds exactly the uploads answered 226"
    );
    for replica in fleet.replicas.iter().filter(|r| r.id != victim_id) {
        let counts = transfer_counts(replica).await;
        assert_eq!(counts[1], 0.0, "replica {}: failed uploads", replica.id);
        assert_eq!(counts[3], 0.0, "replica {}: failed downloads", replica.id);
    }

    // ---- Phase 3: the victim's clients reconnect and land on a survivor.
    let mut sessions = tokio::task::JoinSet::new();
    for (k, source) in ips.iter().copied().enumerate() {
        let passive = if k % 2 == 0 {
            Passive::Pasv
        } else {
            Passive::Epsv
        };
        let data = payload(64 << 10, 3_000_000 + k as u64);
        let name = format!("again-{k:02}.bin");
        sessions.spawn(async move {
            let result = bounded(async {
                let mut ftp = login(source, to, passive).await?;
                ftp.store(&format!("phase3/{name}"), &data, Pace::Full)
                    .await?;
                let back = ftp.retrieve(&format!("phase3/{name}")).await?;
                ftp.quit().await;
                Ok(back == data)
            })
            .await;
            (source, result)
        });
    }
    let mut problems = Vec::new();
    while let Some(joined) = sessions.join_next().await {
        match joined.expect("session task") {
            (_, Ok(true)) => {}
            (source, Ok(false)) => problems.push(format!("{source}: different bytes")),
            (source, Err(f)) => problems.push(format!("{source}: {f}")),
        }
    }
    if !problems.is_empty() {
        fail_with_logs(&fleet, format!("phase 3:\n{}", problems.join("\n")));
    }
    let affinity = fleet.balancer.affinity().await;
    assert!(
        affinity.values().all(|id| *id != victim_id),
        "clients still pinned to the stopped replica: {affinity:?}"
    );
    let state = bucket_state(&format!("{}/phase3/", fleet.prefix)).await;
    assert_eq!(state.objects.len(), ips.len(), "phase 3 objects");
    eprintln!("fleet test done in {:?}", started.elapsed());
}
