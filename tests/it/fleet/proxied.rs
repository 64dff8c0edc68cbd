//! The second topology (issue #20): any L4 load balancer. haproxy spreads
//! control connections round-robin with no stickiness, each replica has
//! its own passive range behind its own listeners, and every connection,
//! control and data, starts with a PROXY protocol v2 header. Nothing keeps
//! a client on a replica but the port numbers, and the replicas judge the
//! clients by the addresses in the headers.

use super::bucket::{self, sha256_hex};
use super::cluster::Fleet;
use super::ftp_client::{connect_from, Failure, Passive, Session};
use super::workload::{self, passive_for};
use super::{
    fail_with_logs, holds_exactly_what_was_answered_226, poll_until, transfer_counts, POLL_LIMIT,
    VICTIM,
};
use crate::common::{payload, PASSWORD};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Concurrent sessions in the first phase.
const SESSIONS: usize = 200;

/// Sessions storing and reading back while a replica restarts.
const LOOPERS: usize = 45;

/// The clients: 127.0.0.10 … 127.0.0.60, inside alice's `allowed_ips`
/// (127.0.0.0/26).
fn client_ips() -> Vec<Ipv4Addr> {
    (10..=60).map(|n| Ipv4Addr::new(127, 0, 0, n)).collect()
}

/// Phase 1: 200 sessions at once from 51 addresses, PASV and EPSV, each
/// STOR + LIST + RETR byte-exact. Round-robin puts a client's sessions on
/// every replica, so a data connection reaches the right one by its port
/// alone; every replica served sessions, none failed a transfer, and the
/// bucket holds exactly the 200 files.
pub async fn round_robin_sessions_land_intact(fleet: &Fleet) {
    let to = fleet.balancer.control;
    let ips = client_ips();
    let mut expected = BTreeMap::new();
    let mut sessions = JoinSet::new();
    for i in 0..SESSIONS {
        let source = ips[i % ips.len()];
        let size = (32 << 10) + (i * 104_729) % (480 << 10);
        let data = payload(size, 7_000_000 + i as u64);
        let name = format!("p{i:03}.bin");
        expected.insert(
            format!("{}/rr1/{name}", fleet.prefix),
            (size, sha256_hex(&data)),
        );
        sessions.spawn(async move {
            let passive = passive_for(i);
            let result =
                workload::store_list_retrieve(source, to, passive, "rr1", &name, &data).await;
            (i, source, passive, result)
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = sessions.join_next().await {
        let (i, source, passive, result) = joined.expect("session task");
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
    let mut total = [0.0; 4];
    for replica in &fleet.replicas {
        let counts = transfer_counts(replica).await;
        eprintln!(
            "round-robin phase 1: replica {} transfers [up ok, up failed, down ok, down failed] = {counts:?}",
            replica.id
        );
        assert!(counts[0] > 0.0, "replica {} got no sessions", replica.id);
        for (t, c) in total.iter_mut().zip(counts) {
            *t += c;
        }
    }
    let n = SESSIONS as f64;
    assert_eq!(total, [n, 0.0, n, 0.0], "transfers over all replicas");
    let state = bucket::state(&format!("{}/rr1/", fleet.prefix)).await;
    assert!(
        state.uploads.is_empty(),
        "uploads left: {:?}",
        state.uploads
    );
    assert_eq!(
        state.objects, expected,
        "the bucket holds exactly what was stored"
    );
}

/// The replicas see the clients, not the balancer: `allowed_ips`
/// (127.0.0.0/26) refuses a client at 127.0.0.100 although the balancer's
/// own address (127.0.0.1) is inside it; a connection that goes around the
/// balancer (not from `proxy_protocol_from`) or comes without a header is
/// closed without a greeting.
pub async fn replicas_judge_the_clients_addresses(fleet: &Fleet) {
    let to = fleet.balancer.control;
    let outsider = Ipv4Addr::new(127, 0, 0, 100);
    match Session::login(outsider, to, "alice", PASSWORD, Passive::Epsv).await {
        Err(Failure {
            code: Some(530), ..
        }) => {}
        Err(other) => panic!("login from {outsider}: {other}"),
        Ok(_) => panic!("login from {outsider} outside allowed_ips was accepted"),
    }
    let insider = Ipv4Addr::new(127, 0, 0, 10);
    Session::login(insider, to, "alice", PASSWORD, Passive::Epsv)
        .await
        .unwrap_or_else(|f| panic!("login from {insider}: {f}"))
        .quit()
        .await;

    let replica = &fleet.replicas[0];
    let before = replica
        .metric(
            "bucketftp_sessions_rejected_total",
            &["reason=\"proxy_protocol\""],
        )
        .await;
    // Around the balancer, from a client address: not a trusted proxy.
    let mut direct = connect_from(insider, replica.ftp)
        .await
        .expect("connect to the replica");
    // From the balancer's address but without a header: refused once the
    // header deadline passes.
    let mut headerless = connect_from(Ipv4Addr::LOCALHOST, replica.ftp)
        .await
        .expect("connect to the replica");
    for (what, conn) in [("direct", &mut direct), ("headerless", &mut headerless)] {
        let mut got = Vec::new();
        let read = tokio::time::timeout(POLL_LIMIT, conn.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "{what} connection still open");
        assert!(
            got.is_empty(),
            "{what} connection was answered: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    let after = replica
        .metric(
            "bucketftp_sessions_rejected_total",
            &["reason=\"proxy_protocol\""],
        )
        .await;
    assert_eq!(after - before, 2.0, "refusals counted");
}

/// Phase 2: a rolling restart of one replica while 45 sessions (spread
/// round-robin, so about 15 on each replica) store and read back in a loop.
/// SIGTERM, exit within its grace, back with the same passive range. Only
/// sessions on the restarted replica may fail, each with a 4xx; after it is
/// back, new sessions reach it and succeed; the bucket holds exactly the
/// uploads answered 226 and no multipart upload is left.
pub async fn rolling_restart_fails_only_that_replicas_sessions(fleet: &mut Fleet) {
    let to = fleet.balancer.control;
    let ips = client_ips();
    let (stop_tx, stop_rx) = watch::channel(false);
    let rounds: Vec<Arc<AtomicUsize>> = (0..LOOPERS).map(|_| Arc::default()).collect();
    let greeted: Vec<Arc<AtomicU32>> = (0..LOOPERS).map(|_| Arc::default()).collect();
    let mut loopers = JoinSet::new();
    for n in 0..LOOPERS {
        let looper = workload::looper(
            n,
            ips[n % ips.len()],
            to,
            rounds[n].clone(),
            greeted[n].clone(),
            stop_rx.clone(),
        );
        loopers.spawn(async move { (n, looper.await) });
    }
    poll_until("every looper's first round", || async {
        rounds.iter().all(|r| r.load(Ordering::SeqCst) > 0)
    })
    .await;
    let on_victim = |n: usize| greeted[n].load(Ordering::SeqCst) == VICTIM;
    assert!(
        (0..LOOPERS).any(on_victim),
        "round-robin put no session on replica {VICTIM}"
    );

    let victim = &mut fleet.replicas[VICTIM as usize - 1];
    victim.terminate();
    let status = tokio::time::timeout(POLL_LIMIT, victim.child.wait())
        .await
        .expect("the replica exits after its grace period")
        .expect("wait");
    assert!(status.success(), "exit status {status}");
    let at_exit: Vec<usize> = rounds.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    fleet.restart(VICTIM).await;
    poll_until(
        "two rounds after the restart on every other looper",
        || async {
            (0..LOOPERS).all(|n| on_victim(n) || rounds[n].load(Ordering::SeqCst) >= at_exit[n] + 2)
        },
    )
    .await;
    stop_tx.send(true).expect("stop");
    let mut looped = loopers.join_all().await;
    looped.sort_by_key(|(n, _)| *n);

    let mut problems = Vec::new();
    let mut stored = BTreeMap::new();
    for (n, l) in &looped {
        let n = *n;
        for (path, sha) in &l.stored {
            stored.insert(format!("{}/{path}", fleet.prefix), sha.clone());
        }
        match &l.failure {
            Some(f) if !on_victim(n) => problems.push(format!(
                "looper {n} on replica {}: {f}",
                greeted[n].load(Ordering::SeqCst)
            )),
            Some(f) if !f.code.is_some_and(|c| (400..500).contains(&c)) => problems.push(format!(
                "looper {n} on the restarted replica: not a 4xx: {f}"
            )),
            None if on_victim(n) => problems.push(format!(
                "looper {n}: a session on the restarted replica was never refused"
            )),
            _ => {}
        }
    }
    if !problems.is_empty() {
        fail_with_logs(fleet, format!("rolling restart:\n{}", problems.join("\n")));
    }

    // Back in rotation: a round of new sessions reaches every replica, the
    // restarted one included, and all succeed.
    let mut sessions = JoinSet::new();
    for n in 0..30 {
        let source = ips[n % ips.len()];
        let data = payload(48 << 10, 8_000_000 + n as u64);
        let name = format!("after-{n:02}.bin");
        stored.insert(format!("{}/phase2/{name}", fleet.prefix), sha256_hex(&data));
        sessions.spawn(async move {
            workload::store_list_retrieve(source, to, passive_for(n), "phase2", &name, &data)
                .await
                .map_err(|f| format!("{source}: {f}"))
        });
    }
    let failed: Vec<String> = sessions
        .join_all()
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if !failed.is_empty() {
        fail_with_logs(fleet, format!("after the restart:\n{}", failed.join("\n")));
    }
    let restarted = transfer_counts(&fleet.replicas[VICTIM as usize - 1]).await;
    assert!(
        restarted[0] > 0.0 && restarted[1] == 0.0,
        "the restarted replica serves again: {restarted:?}"
    );

    holds_exactly_what_was_answered_226(fleet, "phase2", &stored).await;
}
