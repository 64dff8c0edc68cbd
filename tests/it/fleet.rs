//! Several replicas behind one load balancer, in the two topologies of
//! docs/kubernetes.md: three gateways on one S3 (emulator) bucket with
//! haproxy in TCP mode in front and `server.passive_host` set to the load
//! balancer's address.
//!
//! - Client-IP affinity: control and data connections of a client stick to
//!   one replica, the same passive range on every replica.
//! - Any L4 balancer: round-robin control connections, one passive range
//!   per replica, PROXY protocol v2 on every connection (issue #20;
//!   tests/it/fleet/proxied.rs).
//!
//! Clients come from 51 loopback addresses. What the bucket holds is read
//! through the emulator's own API (tests/it/fleet/bucket_state.py), never
//! through bucketftp.
//!
//! Needs the S3 emulator (`source .ci/emulators.sh`) and haproxy; without
//! them the test says so loudly and is skipped, unless
//! `BUCKETFTP_REQUIRE_EMULATORS=1`.

mod bucket;
mod cluster;
use crate::common;
mod ftp_client;
mod haproxy;
mod proxied;
mod workload;

use bucket::sha256_hex;
use cluster::{Fleet, Replica};
use common::payload;
use ftp_client::Failure;
use haproxy::Topology;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use workload::passive_for;

/// Concurrent sessions in the first phase.
const SESSIONS: usize = 200;

/// Sessions storing and reading back while a replica is stopped.
const LOOPERS: usize = 60;

/// Uploads held open past the shutdown grace, per replica.
const HELD_PER_REPLICA: usize = 2;

/// The replica that gets SIGTERM (haproxy's server id).
const VICTIM: u32 = 2;

/// How long polled conditions may take to come true.
const POLL_LIMIT: Duration = Duration::from_secs(30);

/// The clients' source addresses: 127.0.0.10 … 127.0.0.60.
fn client_ips() -> Vec<Ipv4Addr> {
    (10..=60).map(|n| Ipv4Addr::new(127, 0, 0, n)).collect()
}

/// The two topologies' tests run one after the other: two fleets of 200
/// sessions at once would only test the machine.
static ONE_FLEET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Client address → replica id, as haproxy's stick table holds it.
type Affinity = BTreeMap<Ipv4Addr, u32>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_haproxy_keep_affinity_and_drain_cleanly() {
    let _one_fleet_at_a_time = ONE_FLEET.lock().await;
    let Some(mut fleet) = Fleet::start(Topology::Affinity).await else {
        return;
    };
    let started = std::time::Instant::now();
    let affinity = concurrent_sessions_spread_and_land_intact(&fleet).await;
    eprintln!("phase 1 done after {:?}", started.elapsed());
    stopping_a_replica_fails_only_its_sessions_cleanly(&mut fleet, &affinity).await;
    eprintln!("phase 2 done after {:?}", started.elapsed());
    clients_of_the_stopped_replica_reconnect_elsewhere(&fleet).await;
    let log = fleet.balancer.log_text();
    let changes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" is DOWN") || l.contains(" is UP"))
        .collect();
    eprintln!(
        "haproxy health changes (the replicas start after haproxy; replica {VICTIM} stopped):\n{}",
        changes.join("\n")
    );
    bucket::delete(&format!("{}/", fleet.prefix)).await;
    eprintln!("fleet test done in {:?}", started.elapsed());
}

/// The second topology, for any L4 balancer (docs/kubernetes.md,
/// "Per-replica passive ranges"): round-robin control connections, one
/// passive range per replica, PROXY protocol v2 on control and data
/// connections (tests/it/fleet/proxied.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_behind_a_round_robin_balancer_with_proxy_protocol() {
    let _one_fleet_at_a_time = ONE_FLEET.lock().await;
    let Some(mut fleet) = Fleet::start(Topology::ProxyProtocol).await else {
        return;
    };
    let started = std::time::Instant::now();
    proxied::round_robin_sessions_land_intact(&fleet).await;
    eprintln!("round-robin phase 1 done after {:?}", started.elapsed());
    proxied::replicas_judge_the_clients_addresses(&fleet).await;
    proxied::rolling_restart_fails_only_that_replicas_sessions(&mut fleet).await;
    bucket::delete(&format!("{}/", fleet.prefix)).await;
    eprintln!("round-robin fleet test done in {:?}", started.elapsed());
}

/// Phase 1: 200 sessions at once, PASV and EPSV, each STOR + LIST + RETR
/// with every byte compared; the affinity table covers every client, every
/// replica has clients, each replica counted exactly its clients'
/// transfers (so every data connection reached its control connection's
/// replica), and the bucket holds exactly the 200 files.
async fn concurrent_sessions_spread_and_land_intact(fleet: &Fleet) -> Affinity {
    let to = fleet.balancer.control;
    let ips = client_ips();
    let mut expected = BTreeMap::new();
    let mut sessions = JoinSet::new();
    for i in 0..SESSIONS {
        let source = ips[i % ips.len()];
        let size = (64 << 10) + (i * 104_729) % (960 << 10);
        let data = payload(size, i as u64 + 1);
        let name = format!("s{i:03}.bin");
        let key = format!("{}/phase1/{name}", fleet.prefix);
        expected.insert(key, (size, sha256_hex(&data)));
        sessions.spawn(async move {
            let passive = passive_for(i);
            let result =
                workload::store_list_retrieve(source, to, passive, "phase1", &name, &data).await;
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
        let n = failures.len();
        fail_with_logs(
            fleet,
            format!(
                "{n} of {SESSIONS} sessions failed:\n{}",
                failures.join("\n")
            ),
        );
    }

    let affinity = fleet.balancer.affinity().await;
    assert_eq!(
        affinity.keys().copied().collect::<BTreeSet<_>>(),
        ips.iter().copied().collect::<BTreeSet<_>>(),
        "every client address is in the affinity table"
    );
    let mut sessions_of: BTreeMap<u32, usize> = BTreeMap::new();
    for (ip, n) in &per_source {
        *sessions_of.entry(affinity[ip]).or_default() += n;
    }
    for replica in &fleet.replicas {
        let mine = sessions_of.get(&replica.id).copied().unwrap_or(0);
        let counts = transfer_counts(replica).await;
        eprintln!(
            "phase 1: replica {} ({}) had {mine} sessions; transfers [up ok, up failed, down ok, down failed] = {counts:?}",
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
    let state = bucket::state(&format!("{}/", fleet.prefix)).await;
    assert!(
        state.uploads.is_empty(),
        "uploads left: {:?}",
        state.uploads
    );
    assert_eq!(
        state.objects, expected,
        "the bucket holds exactly what was stored"
    );
    affinity
}

/// Phase 2: SIGTERM to one replica while it has uploads in flight. 60
/// sessions store and read back small files in a loop on all replicas;
/// two 8 MiB uploads per replica are held open (their multipart uploads
/// started) past the 2 s grace. Only the stopped replica's sessions may
/// fail, each with a 4xx reply; its held uploads are cut (no 226); the
/// other replicas keep serving; the bucket holds exactly the uploads
/// answered 226, complete, and no multipart upload is left.
async fn stopping_a_replica_fails_only_its_sessions_cleanly(
    fleet: &mut Fleet,
    affinity: &Affinity,
) {
    let to = fleet.balancer.control;
    let ips = client_ips();
    let on_victim = |ip: &Ipv4Addr| affinity[ip] == VICTIM;
    let (release_tx, release_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (reached_tx, mut reached_rx) = mpsc::unbounded_channel();

    let mut held = JoinSet::new();
    let mut held_count = 0;
    let mut victim_held_keys = Vec::new();
    for replica in &fleet.replicas {
        let clients = affinity.iter().filter(|(_, id)| **id == replica.id);
        for (ip, _) in clients.take(HELD_PER_REPLICA) {
            let n = held_count;
            held_count += 1;
            if replica.id == VICTIM {
                victim_held_keys.push(format!("{}/phase2/held-{n}.bin", fleet.prefix));
            }
            let (reached, release) = (reached_tx.clone(), release_rx.clone());
            held.spawn(workload::held_upload(n, *ip, to, reached, release));
        }
    }
    let rounds: Vec<Arc<AtomicUsize>> = (0..LOOPERS).map(|_| Arc::default()).collect();
    let mut loopers = JoinSet::new();
    for (n, count) in rounds.iter().enumerate() {
        let source = ips[n % ips.len()];
        loopers.spawn(workload::looper(
            n,
            source,
            to,
            count.clone(),
            Arc::default(),
            stop_rx.clone(),
        ));
    }

    // In flight: every held upload past its first part, the victim's
    // multipart uploads visible in the bucket, every looper under way.
    for _ in 0..held_count {
        tokio::time::timeout(POLL_LIMIT, reached_rx.recv())
            .await
            .expect("held uploads under way")
            .expect("held upload tasks alive");
    }
    let held_prefix = format!("{}/phase2/held-", fleet.prefix);
    poll_until("the victim's multipart uploads", || async {
        let uploads = bucket::state(&held_prefix).await.uploads;
        victim_held_keys.iter().all(|k| uploads.contains(k))
    })
    .await;
    poll_until("every looper's first round", || async {
        rounds.iter().all(|r| r.load(Ordering::SeqCst) > 0)
    })
    .await;

    let victim = fleet
        .replicas
        .iter_mut()
        .find(|r| r.id == VICTIM)
        .expect("victim");
    let in_flight = victim
        .metric("bucketftp_transfers_in_flight", &["direction=\"upload\""])
        .await;
    eprintln!("phase 2: SIGTERM to replica {VICTIM} with {in_flight} uploads in flight");
    assert!(
        in_flight >= victim_held_keys.len() as f64,
        "{in_flight} uploads in flight"
    );
    victim.terminate();
    let status = tokio::time::timeout(POLL_LIMIT, victim.child.wait())
        .await
        .expect("the victim exits after its grace period")
        .expect("wait");
    assert!(status.success(), "victim exit status {status}");
    fleet
        .balancer
        .wait_health(&[(VICTIM, "DOWN")].into_iter().collect())
        .await;

    // The survivors keep serving: their held uploads finish, and every
    // looper on them completes a round that began after the victim exited.
    let at_exit: Vec<usize> = rounds.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    release_tx.send(true).expect("release");
    let held = held.join_all().await;
    poll_until(
        "a round after the shutdown on every surviving looper",
        || async {
            rounds.iter().enumerate().all(|(n, r)| {
                on_victim(&ips[n % ips.len()]) || r.load(Ordering::SeqCst) >= at_exit[n] + 2
            })
        },
    )
    .await;
    stop_tx.send(true).expect("stop");
    let looped = loopers.join_all().await;

    // Judge every session.
    let mut problems = Vec::new();
    let mut stored: BTreeMap<String, String> = BTreeMap::new();
    let mut endings: BTreeMap<String, usize> = BTreeMap::new();
    let mut judge = |source: &Ipv4Addr, failure: &Failure, problems: &mut Vec<String>| {
        let command = failure.step.split(' ').next().unwrap_or_default();
        let code = failure.code.map_or("no reply".into(), |c| c.to_string());
        *endings.entry(format!("{command} {code}")).or_default() += 1;
        if !on_victim(source) {
            let replica = affinity[source];
            problems.push(format!("{source} (surviving replica {replica}): {failure}"));
        } else if !failure.code.is_some_and(|c| (400..500).contains(&c)) {
            problems.push(format!("{source} (stopped replica): not a 4xx: {failure}"));
        }
    };
    for l in &looped {
        for (path, sha) in &l.stored {
            stored.insert(format!("{}/{path}", fleet.prefix), sha.clone());
        }
        match &l.failure {
            Some(f) => judge(&l.source, f, &mut problems),
            None if on_victim(&l.source) => problems.push(format!(
                "{}: a session on the stopped replica was never refused",
                l.source
            )),
            None => {}
        }
    }
    for h in &held {
        match &h.result {
            Ok(()) if on_victim(&h.source) => {
                problems.push(format!("{}: 226 for an upload cut by the shutdown", h.path));
            }
            Ok(()) => {
                stored.insert(format!("{}/{}", fleet.prefix, h.path), h.sha.clone());
            }
            Err(f) => judge(&h.source, f, &mut problems),
        }
    }
    if !problems.is_empty() {
        fail_with_logs(fleet, format!("phase 2:\n{}", problems.join("\n")));
    }
    eprintln!(
        "phase 2: {} uploads answered 226; failed sessions by command and reply: {endings:?}",
        stored.len()
    );

    holds_exactly_what_was_answered_226(fleet, "phase2", &stored).await;
    for replica in fleet.replicas.iter().filter(|r| r.id != VICTIM) {
        let [_, up_failed, _, down_failed] = transfer_counts(replica).await;
        assert_eq!(
            up_failed + down_failed,
            0.0,
            "replica {}: failed transfers",
            replica.id
        );
    }
}

/// Phase 3: one new session from every client address, the stopped
/// replica's clients included: all succeed, and the affinity table no
/// longer names the stopped replica.
async fn clients_of_the_stopped_replica_reconnect_elsewhere(fleet: &Fleet) {
    let to = fleet.balancer.control;
    let mut expected = BTreeMap::new();
    let mut sessions = JoinSet::new();
    for (n, source) in client_ips().into_iter().enumerate() {
        let data = payload(64 << 10, 3_000_000 + n as u64);
        let name = format!("again-{n:02}.bin");
        expected.insert(
            format!("{}/phase3/{name}", fleet.prefix),
            (data.len(), sha256_hex(&data)),
        );
        sessions.spawn(async move {
            let passive = passive_for(n);
            let result =
                workload::store_list_retrieve(source, to, passive, "phase3", &name, &data).await;
            (source, result)
        });
    }
    let problems: Vec<String> = sessions
        .join_all()
        .await
        .into_iter()
        .filter_map(|(source, result)| result.err().map(|f| format!("{source}: {f}")))
        .collect();
    if !problems.is_empty() {
        fail_with_logs(fleet, format!("phase 3:\n{}", problems.join("\n")));
    }
    let affinity = fleet.balancer.affinity().await;
    assert!(
        affinity.values().all(|id| *id != VICTIM),
        "clients still pinned to the stopped replica: {affinity:?}"
    );
    let state = bucket::state(&format!("{}/phase3/", fleet.prefix)).await;
    assert_eq!(state.objects, expected, "phase 3 objects");
}

/// Once no multipart upload is left under `dir`, the objects there are
/// exactly `stored` (key → SHA-256): every upload answered 226, complete,
/// and nothing else.
async fn holds_exactly_what_was_answered_226(
    fleet: &Fleet,
    dir: &str,
    stored: &BTreeMap<String, String>,
) {
    let prefix = format!("{}/{dir}/", fleet.prefix);
    poll_until("no multipart upload left", || async {
        bucket::state(&prefix).await.uploads.is_empty()
    })
    .await;
    let landed: BTreeMap<String, String> = bucket::state(&prefix)
        .await
        .objects
        .into_iter()
        .map(|(key, (_, sha))| (key, sha))
        .collect();
    assert_eq!(
        &landed, stored,
        "the bucket holds exactly the uploads answered 226"
    );
}

/// Upload and download successes and failures counted by one replica.
async fn transfer_counts(replica: &Replica) -> [f64; 4] {
    let mut counts = [0.0; 4];
    let labels = [
        ("upload", "success"),
        ("upload", "failure"),
        ("download", "success"),
        ("download", "failure"),
    ];
    for (count, (direction, outcome)) in counts.iter_mut().zip(labels) {
        let direction = format!("direction=\"{direction}\"");
        let outcome = format!("outcome=\"{outcome}\"");
        *count = replica
            .metric("bucketftp_transfers_total", &[&direction, &outcome])
            .await;
    }
    counts
}

/// Polls `check` until it returns `true`, or fails naming `what`.
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

fn fail_with_logs(fleet: &Fleet, message: String) -> ! {
    panic!("{message}\n{}", fleet.logs());
}
