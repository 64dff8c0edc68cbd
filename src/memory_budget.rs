//! The process-wide memory budget for transfer buffers.
//!
//! Every upload part and every downloaded range is a buffer of up to
//! `storage.part_size` bytes, and before the budget existed nothing bounded
//! how many there were at once: 20 concurrent large RETRs took 1.7 GiB, and
//! a pod's memory limit turned that into an OOM kill of every transfer on it
//! (issue #18). Now each buffer is paid for from one semaphore of bytes:
//!
//! - A transfer starts only once it holds its **base reservation** (one
//!   part, plus the small fixed buffers of its data path). It waits for it
//!   at most `storage.memory_wait`, then is refused with a 4xx reply
//!   ([`BudgetError`]). Once started it never gives the base back before it
//!   ends, so a running transfer can always finish.
//! - More parts in flight (an upload's parallel parts, a download's ranges
//!   read ahead) are taken only if they are free *now*
//!   ([`MemoryBudget::try_reserve`]) and nobody is waiting for a base
//!   reservation; under pressure a transfer runs with fewer, down to one.
//! - While someone waits ([`MemoryBudget::contended`]), running transfers give
//!   their extra parts back as those parts finish, so a crowd shares the
//!   budget instead of the first comers keeping it.
//!
//! Invariant: the bytes of every live transfer buffer are covered by a
//! [`Reservation`], so the buffers in use never exceed the budget. What lies
//! outside it (the process itself, sessions, socket and HTTP-client buffers)
//! is the "overhead" docs/operations.md quantifies.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The unit the semaphore counts in. Reservations are rounded up to it, so
/// accounting errs on the side of less memory; 256 KiB keeps permit counts
/// well within `u32` for any budget below a terabyte.
pub(crate) const GRANULE: usize = 256 * 1024;

/// The budget when no container memory limit is visible: enough for 128
/// parts of the default 8 MiB.
pub(crate) const DEFAULT_BUDGET: u64 = 1 << 30;

/// The share of a container's memory limit given to transfer buffers when
/// `storage.memory_budget` is not set: half, leaving the other half to the
/// process, its sessions, socket buffers and the allocator's slack.
pub(crate) const CGROUP_SHARE_DIVISOR: u64 = 2;

/// The fixed buffers of one transfer's data path besides its parts: an
/// upload's socket read chunks, a download's copy buffer to the data
/// connection, a local file's read block. Paid for with the base
/// reservation.
pub(crate) const DATA_PATH_BYTES: usize = 1 << 20;

/// A transfer's base reservation when it moves whole parts (uploads, cloud
/// downloads with ranges): one part plus [`DATA_PATH_BYTES`]. The budget
/// must hold at least this much.
pub(crate) fn part_reservation(part_size: usize) -> usize {
    part_size.saturating_add(DATA_PATH_BYTES)
}

/// A streamed download's base reservation (a local file read in 1 MiB
/// blocks, or one plain GET whose body arrives in small frames): its read
/// block and the copy buffer.
pub(crate) const STREAM_RESERVATION: usize = 2 * DATA_PATH_BYTES;

/// Why a transfer did not get its buffers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum BudgetError {
    /// The budget stayed in use by other transfers for the whole wait.
    #[error("no transfer buffer free within {0:?} (memory budget in use), try again later")]
    Exhausted(Duration),
    /// The server began shutting down while the transfer waited.
    #[error("server is shutting down")]
    ShuttingDown,
}

/// Bytes of transfer buffers the process may hold at once.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    permits: Arc<Semaphore>,
    granules: usize,
    wait: Duration,
    /// Transfers waiting for their base reservation now.
    waiting: AtomicUsize,
}

impl MemoryBudget {
    /// A budget of `bytes` (rounded down to [`GRANULE`]s); a transfer waits
    /// at most `wait` for its base reservation.
    pub(crate) fn new(bytes: u64, wait: Duration) -> Arc<Self> {
        let granules = usize::try_from(bytes / GRANULE as u64)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        crate::metrics::memory_budget_configured(granules * GRANULE);
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(granules)),
            granules,
            wait,
            waiting: AtomicUsize::new(0),
        })
    }

    /// The budget in bytes.
    pub(crate) fn total(&self) -> usize {
        self.granules * GRANULE
    }

    /// Bytes reserved now.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        (self.granules - self.permits.available_permits()) * GRANULE
    }

    /// Whether a transfer is waiting for its base reservation.
    pub(crate) fn contended(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// The base reservation of a new transfer: waits up to the configured
    /// wait (or until `cancelled` resolves), then gives up.
    pub(crate) async fn reserve(
        &self,
        bytes: usize,
        cancelled: impl std::future::Future<Output = ()>,
    ) -> Result<Reservation, BudgetError> {
        let granules = granules_for(bytes).min(self.granules);
        let n = u32::try_from(granules).unwrap_or(u32::MAX);
        if let Ok(permit) = self.permits.clone().try_acquire_many_owned(n) {
            return Ok(Reservation::new(permit));
        }
        crate::metrics::memory_budget_waited();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let got = tokio::select! {
            biased;
            _ = cancelled => Err(BudgetError::ShuttingDown),
            got = tokio::time::timeout(self.wait, self.permits.clone().acquire_many_owned(n)) => match got {
                // The semaphore is never closed, so acquire cannot fail;
                // treat it as a timeout if it ever does.
                Ok(Ok(permit)) => Ok(Reservation::new(permit)),
                Ok(Err(_)) | Err(_) => Err(BudgetError::Exhausted(self.wait)),
            },
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        if got.is_err() {
            crate::metrics::memory_budget_refused();
        }
        got
    }

    /// More buffer for a running transfer, only if it is free now and no
    /// new transfer is waiting for its base reservation.
    pub(crate) fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        if self.contended() {
            return None;
        }
        let n = u32::try_from(granules_for(bytes)).ok()?;
        self.permits
            .clone()
            .try_acquire_many_owned(n)
            .ok()
            .map(Reservation::new)
    }
}

/// The budget used when `storage.memory_budget` is not set: the container's
/// memory limit divided by [`CGROUP_SHARE_DIVISOR`] when cgroups show one,
/// else [`DEFAULT_BUDGET`].
pub(crate) fn default_budget() -> u64 {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    default_from(std::path::Path::new("/sys/fs/cgroup"), &own)
}

/// [`default_budget`] with the cgroup file system at `root` and
/// `/proc/self/cgroup` as `own` (for tests).
fn default_from(root: &std::path::Path, own: &str) -> u64 {
    cgroup_limit(root, own).map_or(DEFAULT_BUDGET, |limit| limit / CGROUP_SHARE_DIVISOR)
}

/// The memory limit of the cgroup this process runs in, if it has one: the
/// smallest limit of its own group and the groups above it (a parent's
/// limit binds its children). cgroup v2: `memory.max` along the path named
/// in `/proc/self/cgroup` as `0::/path` (inside a container's namespace
/// that is `/`), where `max` means none. cgroup v1: `memory.limit_in_bytes`
/// under `memory/` along the path of the `memory` controller's line, where
/// "none" is a number near 2^63.
fn cgroup_limit(root: &std::path::Path, own: &str) -> Option<u64> {
    let group = |controller: fn(&str) -> Option<&str>| {
        own.lines()
            .find_map(controller)
            .map(|p| p.trim_matches('/').to_string())
            .unwrap_or_default()
    };
    let v2 = group(|l| l.strip_prefix("0::"));
    let v1 = group(|l| {
        let mut fields = l.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then_some(path)
    });
    let along = |base: std::path::PathBuf, path: &str, file: &str| {
        // The group itself, then each parent up to the hierarchy's root.
        let mut dirs = vec![base.clone()];
        let mut walked = base;
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            walked = walked.join(segment);
            dirs.push(walked.clone());
        }
        dirs.into_iter()
            .filter_map(|dir| read_limit(&dir.join(file)))
            .min()
    };
    along(root.to_path_buf(), &v2, "memory.max")
        .or_else(|| along(root.join("memory"), &v1, "memory.limit_in_bytes"))
}

/// A limit file's value, unless it says "no limit".
fn read_limit(file: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let limit: u64 = text.trim().parse().ok()?;
    (limit < 1 << 60).then_some(limit)
}

/// Granules covering `bytes` (at least one).
fn granules_for(bytes: usize) -> usize {
    bytes.div_ceil(GRANULE).max(1)
}

/// Bytes of budget held by one transfer; given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    permit: OwnedSemaphorePermit,
}

impl Reservation {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        crate::metrics::memory_budget_in_use((permit.num_permits() * GRANULE) as i64);
        Self { permit }
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.permit.num_permits() * GRANULE
    }

    /// Adds `other`'s bytes to this reservation.
    pub(crate) fn merge(&mut self, mut other: Reservation) {
        // Moving every permit leaves `other` empty: its drop then gives
        // back nothing and the in-use gauge stays right.
        let n = other.permit.num_permits();
        if let Some(moved) = other.permit.split(n) {
            self.permit.merge(moved);
        }
    }

    /// Gives back `bytes` (rounded up to granules) if more than that is
    /// held; returns whether it did.
    pub(crate) fn release(&mut self, bytes: usize) -> bool {
        let n = granules_for(bytes);
        if self.permit.num_permits() <= n {
            return false;
        }
        match self.permit.split(n) {
            Some(part) => {
                drop(Reservation { permit: part });
                true
            }
            None => false,
        }
    }

    /// Gives back everything above `bytes` (rounded up to granules).
    pub(crate) fn shrink_to(&mut self, bytes: usize) {
        let keep = granules_for(bytes);
        let held = self.permit.num_permits();
        if held > keep {
            self.release((held - keep) * GRANULE);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        crate::metrics::memory_budget_in_use(-((self.permit.num_permits() * GRANULE) as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[tokio::test]
    async fn reservations_are_paid_back_on_drop() {
        let budget = MemoryBudget::new(16 << 20, Duration::from_secs(5));
        let mut a = budget
            .reserve(5 * MIB, std::future::pending())
            .await
            .unwrap();
        assert_eq!(a.bytes(), 5 * MIB);
        let b = budget.try_reserve(5 * MIB).unwrap();
        a.merge(b);
        assert_eq!(a.bytes(), 10 * MIB);
        assert_eq!(budget.in_use(), 10 * MIB);
        assert!(budget.try_reserve(7 * MIB).is_none(), "only 6 MiB left");
        assert!(a.release(5 * MIB));
        assert_eq!(budget.in_use(), 5 * MIB);
        assert!(!a.release(5 * MIB), "the base is never given back");
        a.shrink_to(1000);
        assert_eq!(a.bytes(), GRANULE);
        drop(a);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_new_transfer_waits_then_is_refused() {
        let wait = Duration::from_millis(50);
        let budget = MemoryBudget::new(8 << 20, wait);
        let held = budget
            .reserve(8 * MIB, std::future::pending())
            .await
            .unwrap();
        let refused = budget.reserve(MIB, std::future::pending()).await;
        assert_eq!(refused.unwrap_err(), BudgetError::Exhausted(wait));
        drop(held);
        assert!(budget.reserve(MIB, std::future::pending()).await.is_ok());
    }

    #[tokio::test]
    async fn a_waiting_transfer_gets_what_is_given_back_first() {
        let budget = MemoryBudget::new(8 << 20, Duration::from_secs(3600));
        let mut running = budget
            .reserve(4 * MIB, std::future::pending())
            .await
            .unwrap();
        running.merge(budget.try_reserve(4 * MIB).unwrap());
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.reserve(4 * MIB, std::future::pending()).await })
        };
        while !budget.contended() {
            tokio::task::yield_now().await;
        }
        assert!(
            budget.try_reserve(GRANULE).is_none(),
            "no extras while someone waits"
        );
        assert!(running.release(4 * MIB));
        assert_eq!(waiter.await.unwrap().unwrap().bytes(), 4 * MIB);
        assert!(!budget.contended());
    }

    #[test]
    fn the_default_follows_the_cgroup_limit() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(default_from(root, ""), DEFAULT_BUDGET, "no cgroup files");
        std::fs::write(root.join("memory.max"), "max\n").unwrap();
        assert_eq!(
            default_from(root, "0::/\n"),
            DEFAULT_BUDGET,
            "v2 without a limit"
        );
        std::fs::write(root.join("memory.max"), "1073741824\n").unwrap();
        assert_eq!(default_from(root, "0::/\n"), 512 << 20, "v2 in a container");
        std::fs::create_dir_all(root.join("pod/ctr")).unwrap();
        std::fs::write(root.join("pod/ctr/memory.max"), "268435456\n").unwrap();
        assert_eq!(
            default_from(root, "0::/pod/ctr\n"),
            128 << 20,
            "v2, own group"
        );
        let v1 = tempfile::tempdir().unwrap();
        std::fs::create_dir(v1.path().join("memory")).unwrap();
        let limit = v1.path().join("memory/memory.limit_in_bytes");
        std::fs::write(&limit, "9223372036854771712\n").unwrap();
        assert_eq!(
            default_from(v1.path(), "4:memory:/\n"),
            DEFAULT_BUDGET,
            "v1 unlimited"
        );
        std::fs::write(&limit, "2147483648\n").unwrap();
        assert_eq!(default_from(v1.path(), "4:memory:/\n"), 1 << 30, "v1 limit");
        // A systemd service or a container without a cgroup namespace:
        // the process's own group, below an unlimited root.
        std::fs::write(&limit, "9223372036854771712\n").unwrap();
        std::fs::create_dir_all(v1.path().join("memory/svc/job")).unwrap();
        std::fs::write(
            v1.path().join("memory/svc/job/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::write(
            v1.path().join("memory/svc/memory.limit_in_bytes"),
            "536870912\n",
        )
        .unwrap();
        let own = "5:cpu,cpuacct:/\n4:memory:/svc/job\n0::/\n";
        assert_eq!(
            default_from(v1.path(), own),
            256 << 20,
            "v1, a parent's limit binds"
        );
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait() {
        let budget = MemoryBudget::new(1 << 20, Duration::from_secs(3600));
        let _held = budget.reserve(MIB, std::future::pending()).await.unwrap();
        let refused = budget.reserve(MIB, std::future::ready(())).await;
        assert_eq!(refused.unwrap_err(), BudgetError::ShuttingDown);
    }
}
