//! `file://` uploads over plain TCP: socket → pipe → file, by `splice(2)`.
//!
//! Why: a disk takes a loopback client's bytes faster than the gateway can
//! copy them through its own buffers. Read into user space and written out
//! again, a 1 GiB STOR cost the gateway 0.7–0.9 s of CPU on the 2-core
//! benchmark machine, and with the client on the same cores that set the
//! pace (0.87–0.97× vsftpd). Spliced, the socket's pages move into a pipe
//! without a copy and the kernel copies them once, from the pipe into the
//! page cache: the bytes never enter the process (docs/benchmarks.md).
//!
//! How: two pipes take turns. The session's task splices what the socket
//! holds into one (non-blocking, when tokio sees the socket readable)
//! while a blocking thread drains the other into the file at its offset,
//! so the file is written while the next bytes arrive, one write in flight.
//! A pipe is drained completely before it is filled again, so a splice
//! from the socket can only wait for the socket, never for room in the
//! pipe.
//!
//! What stays as for every upload: the bytes go through
//! [`UploadInput::poll_read_raw`], so ABOR, a vanished client, an idle data
//! connection and shutdown cut the upload exactly as they cut a read one
//! ([`super::commit_rule`]), and received bytes are counted there; the file
//! is anonymous until its commit and dropped, never visible, on every
//! failure ([`DirectUpload`]); the memory budget pays for the two pipes'
//! buffers. What differs: the gateway never sees the bytes, so their
//! digests are read back from the file ([`crate::local_attributes`]'s
//! `direct`: before the commit up to 1 MiB, after it above).
//!
//! TLS data connections (`PROT P`), REST/APPE and file systems without
//! anonymous files upload through the store's multipart interface as on
//! every other store.

use super::commit_rule::UploadInput;
use super::upload::{announce, UploadError, UploadSettings, UploadTarget};
use crate::local_attributes::{DirectCommit, DirectUpload};
use crate::memory_budget::Reservation;
use crate::transfers::{SessionContext, TransferGuard};
use rustix::pipe::{PipeFlags, SpliceFlags};
use std::future::poll_fn;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;
use tokio::task::JoinHandle;

/// Bytes a pipe holds (asked for with `F_SETPIPE_SZ`; where the system's
/// per-user pipe allowance is used up a pipe keeps the default 64 KiB and
/// uploads just take more turns). Two per upload, paid from the memory
/// budget as the upload's part ([`crate::memory_budget::part_reservation`]).
pub(crate) const PIPE_BYTES: usize = 1 << 20;

/// One pipe: its read end and its write end.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> std::io::Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
        let _ = rustix::pipe::fcntl_setpipe_size(&write, PIPE_BYTES);
        Ok(Self { read, write })
    }

    /// Moves what `socket` holds into this (empty) pipe without waiting:
    /// `WouldBlock` when it holds nothing, 0 at its end.
    fn fill_from(&self, socket: BorrowedFd<'_>) -> std::io::Result<usize> {
        rustix::pipe::splice(
            socket,
            None,
            &self.write,
            None,
            PIPE_BYTES,
            SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
        )
        .map_err(std::io::Error::from)
    }
}

/// The write being done: the pipe comes back once drained.
type Draining = JoinHandle<Result<Pipe, object_store::Error>>;

/// Receives the client's file into `upload` and commits it as `target`
/// (see the module docs). `memory` is the upload's reservation, held until
/// it ends.
pub(crate) async fn receive(
    upload: DirectUpload,
    mut input: UploadInput,
    target: UploadTarget,
    settings: &UploadSettings,
    memory: Reservation,
    session: &SessionContext,
    guard: &TransferGuard,
) -> Result<(), UploadError> {
    let _memory = memory;
    let store_error = |e: std::io::Error| {
        UploadError::Store(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        })
    };
    let Some(file) = upload.file() else {
        return Err(store_error(std::io::ErrorKind::NotFound.into()));
    };
    crate::metrics::splice_started();
    let mut filling = Pipe::new().map_err(store_error)?;
    let mut spare = Some(Pipe::new().map_err(store_error)?);
    let mut draining: Option<Draining> = None;
    let mut size: u64 = 0;
    loop {
        let n = tokio::select! {
            biased;
            _ = guard.cancelled() => return Err(UploadError::Shutdown),
            n = poll_fn(|cx| input.poll_read_raw(cx, &mut |socket| filling.fill_from(socket))) => {
                n.map_err(UploadError::Client)?
            }
        };
        // One write in flight: the previous one must be done before this
        // pipe is handed over and the other filled.
        if let Some(previous) = draining.take() {
            spare = Some(drained(previous, guard).await?);
        }
        if n == 0 {
            break;
        }
        let next = spare
            .take()
            .map_or_else(Pipe::new, Ok)
            .map_err(store_error)?;
        let full = std::mem::replace(&mut filling, next);
        let (file, offset) = (file.clone(), size);
        draining = Some(tokio::task::spawn_blocking(move || {
            file.splice_from(full.read.as_fd(), offset, n)?;
            Ok(full)
        }));
        size += n as u64;
    }
    drop(file);
    let started = Instant::now();
    let committed = upload.complete(size, settings.sha256).await;
    crate::metrics::storage_op(
        "file",
        "put",
        started.elapsed(),
        committed
            .as_ref()
            .err()
            .map(crate::instrumented::error_kind),
    );
    let DirectCommit { sha256, deferred } = committed.map_err(UploadError::Store)?;
    let events = settings.events.clone();
    announce(events, target, session, "STOR", size, sha256, deferred);
    Ok(())
}

/// Waits for a write to finish (shutdown's cut does not wait: the write
/// holds its own reference to the file, which closes after it).
async fn drained(write: Draining, guard: &TransferGuard) -> Result<Pipe, UploadError> {
    tokio::select! {
        biased;
        _ = guard.cancelled() => Err(UploadError::Shutdown),
        done = write => match done {
            Ok(pipe) => pipe.map_err(UploadError::Store),
            Err(e) => Err(UploadError::Store(object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            })),
        },
    }
}
