//! The process's open-file limit, raised from its soft to its hard value at
//! start-up.
//!
//! Every control connection holds one descriptor, and every transfer two or
//! three more (data connection, passive listener, a local file; a `file://`
//! upload over plain TCP also two pipes, four descriptors). Systemd and
//! some container runtimes start processes with a soft limit of 1,024 and a
//! hard one far above it, leaving raising it to the program: with the soft
//! limit, `server.max_sessions` = 10,000 would end in failed accepts
//! (`EMFILE`) long before the limit is reached. Raising the soft limit up to
//! the hard one needs no privilege, and is safe here because nothing in the
//! process uses `select(2)` (tokio waits with epoll), whose descriptor sets
//! stop at 1,024.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Descriptors the process needs besides its control connections: listeners,
/// logs, the runtime, store clients, and the data connections of transfers.
pub const SPARE: u64 = 1_024;

/// What the limit is after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The soft limit before (`None` = unlimited).
    pub before: Option<u64>,
    /// The soft limit now.
    pub now: Option<u64>,
}

impl Limits {
    /// Whether `sessions` control connections plus [`SPARE`] fit under the
    /// limit now.
    pub fn fits(&self, sessions: usize) -> bool {
        self.now
            .is_none_or(|limit| limit >= sessions as u64 + SPARE)
    }
}

/// Raises the soft open-file limit to the hard limit. A failure (a sandbox
/// that forbids `setrlimit`) leaves the limit as it was.
pub fn raise() -> Limits {
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    let now = if limit.current != limit.maximum && setrlimit(Resource::Nofile, raised).is_ok() {
        limit.maximum
    } else {
        limit.current
    };
    Limits {
        before: limit.current,
        now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_reaches_the_hard_limit() {
        let limits = raise();
        let after = getrlimit(Resource::Nofile);
        assert_eq!(limits.now, after.current);
        assert_eq!(after.current, after.maximum, "soft limit not raised");
        assert!(limits
            .before
            .is_none_or(|b| limits.now.is_none_or(|n| n >= b)));
    }

    #[test]
    fn sessions_fit_with_the_spare() {
        let limits = Limits {
            before: Some(1_024),
            now: Some(20_000),
        };
        assert!(limits.fits(10_000));
        assert!(!limits.fits(19_000));
        assert!(Limits {
            before: None,
            now: None
        }
        .fits(1_000_000));
    }
}
