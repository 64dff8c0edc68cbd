//! What the fleet test's clients do: each function is one FTP session from
//! one source address, and returns what it was told rather than panicking,
//! so the test can judge every session at the end.

use super::bucket::sha256_hex;
use super::ftp_client::{Failure, Pace, Passive, Session};
use crate::common::{payload, PASSWORD};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// No session may take longer than this: a hang is a failure, not a stuck
/// test.
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);

/// The size of an upload held past the shutdown grace, and how much of it
/// goes out at once: more than one 5 MiB part, so that a multipart upload
/// is in progress when the replica is stopped.
const HELD_SIZE: usize = 8 << 20;
const HELD_FAST: usize = 6 << 20;

/// PASV for even session numbers, EPSV for odd ones.
pub fn passive_for(n: usize) -> Passive {
    if n.is_multiple_of(2) {
        Passive::Pasv
    } else {
        Passive::Epsv
    }
}

async fn login(source: Ipv4Addr, to: SocketAddr, passive: Passive) -> Result<Session, Failure> {
    Session::login(source, to, "alice", PASSWORD, passive).await
}

/// `work`, or a failure when it takes longer than [`SESSION_TIMEOUT`].
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

fn differs(step: String, got: &[u8], sent: &[u8]) -> Failure {
    Failure {
        step,
        code: Some(226),
        detail: format!(
            "{} bytes back for {} stored, or other bytes",
            got.len(),
            sent.len()
        ),
    }
}

/// Logs in, stores `data` as `dir/name`, finds it in `LIST dir`, reads it
/// back and compares every byte.
pub async fn store_list_retrieve(
    source: Ipv4Addr,
    to: SocketAddr,
    passive: Passive,
    dir: &str,
    name: &str,
    data: &[u8],
) -> Result<(), Failure> {
    bounded(async {
        let path = format!("{dir}/{name}");
        let mut ftp = login(source, to, passive).await?;
        ftp.store(&path, data, Pace::Full).await?;
        let listing = ftp.list(dir).await?;
        if !listing.lines().any(|l| l.ends_with(&format!(" {name}"))) {
            return Err(Failure {
                step: format!("LIST {dir}"),
                code: Some(226),
                detail: format!("{name} not among {} entries", listing.lines().count()),
            });
        }
        let back = ftp.retrieve(&path).await?;
        if back != data {
            return Err(differs(format!("RETR {path}"), &back, data));
        }
        ftp.quit().await;
        Ok(())
    })
    .await
}

/// How a [`looper`] session went.
pub struct Looped {
    /// Its source address.
    pub source: Ipv4Addr,
    /// Uploads answered 226: path → SHA-256.
    pub stored: Vec<(String, String)>,
    /// Why it ended before being told to stop.
    pub failure: Option<Failure>,
}

/// The replica id in a fleet replica's greeting (`bucketftp replica N ready`).
pub fn replica_of(greeting: &str) -> Option<u32> {
    greeting
        .split_whitespace()
        .skip_while(|w| *w != "replica")
        .nth(1)?
        .parse()
        .ok()
}

/// One session that stores a small file and reads it back, again and again
/// (counting rounds in `rounds`), until `stop` or the first failure.
/// `replica` is set to the id of the replica that greeted it.
pub async fn looper(
    n: usize,
    source: Ipv4Addr,
    to: SocketAddr,
    rounds: Arc<AtomicUsize>,
    replica: Arc<AtomicU32>,
    stop: watch::Receiver<bool>,
) -> Looped {
    let mut looped = Looped {
        source,
        stored: Vec::new(),
        failure: None,
    };
    let mut ftp = match bounded(login(source, to, passive_for(n))).await {
        Ok(ftp) => {
            replica.store(replica_of(&ftp.greeting).unwrap_or(0), Ordering::SeqCst);
            ftp
        }
        Err(f) => {
            looped.failure = Some(f);
            return looped;
        }
    };
    for round in 0usize.. {
        if *stop.borrow() {
            break;
        }
        let size = (64 << 10) + (n * 40_009 + round * 7_919) % (192 << 10);
        let data = payload(size, (1_000_000 + n * 1_000 + round) as u64);
        let path = format!("phase2/loop-{n:02}-{round:03}.bin");
        let result = bounded(async {
            ftp.store(&path, &data, Pace::Full).await?;
            looped.stored.push((path.clone(), sha256_hex(&data)));
            let back = ftp.retrieve(&path).await?;
            if back != data {
                return Err(differs(format!("RETR {path}"), &back, &data));
            }
            Ok(())
        })
        .await;
        if let Err(f) = result {
            looped.failure = Some(f);
            return looped;
        }
        rounds.fetch_add(1, Ordering::SeqCst);
    }
    ftp.quit().await;
    looped
}

/// How a [`held_upload`] went.
pub struct Held {
    /// Its source address.
    pub source: Ipv4Addr,
    /// The path it stored to.
    pub path: String,
    /// The SHA-256 of the whole file.
    pub sha: String,
    /// 226, or what the server said instead.
    pub result: Result<(), Failure>,
}

/// One 8 MiB upload: 6 MiB at once (then `reached` is told), a trickle,
/// and the last chunk only after `release`.
pub async fn held_upload(
    n: usize,
    source: Ipv4Addr,
    to: SocketAddr,
    reached: mpsc::UnboundedSender<()>,
    release: watch::Receiver<bool>,
) -> Held {
    let data = payload(HELD_SIZE, 2_000_000 + n as u64);
    let path = format!("phase2/held-{n}.bin");
    let result = bounded(async {
        let mut ftp = login(source, to, passive_for(n)).await?;
        let pace = Pace::Hold {
            fast: HELD_FAST,
            reached,
            release,
        };
        ftp.store(&path, &data, pace).await?;
        ftp.quit().await;
        Ok(())
    })
    .await;
    Held {
        source,
        path,
        sha: sha256_hex(&data),
        result,
    }
}
