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
//! holds into one (non-blocking, when tokio sees the socket readable) until
//! it holds half a MiB or is full, while a blocking thread drains the other
//! into the file at its offset: the file is written while the next bytes
//! arrive, one write in flight. A pipe is drained completely before it is
//! filled again. What the last pipe holds at the end of the file is
//! written by the commit itself, so a small file is written, hashed and
//! linked in one blocking call.
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
use crate::local_attributes::{DirectCommit, DirectUpload, Tmpfile};
use crate::memory_budget::Reservation;
use crate::transfers::{SessionContext, TransferGuard};
use rustix::pipe::{PipeFlags, SpliceFlags};
use std::future::poll_fn;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinHandle;

/// Bytes a pipe holds (asked for with `F_SETPIPE_SZ`; where it is refused,
/// e.g. an unprivileged user past `fs.pipe-user-pages-soft`, the pipe
/// keeps what the kernel gave it and uploads just take more turns). Two
/// per upload at most, paid from the memory budget as the upload's part
/// ([`crate::memory_budget::part_reservation`]).
const PIPE_BYTES: usize = 1 << 20;

/// A pipe is handed to a write once it holds this much (or is full, or the
/// file ended): a client that sends small segments slowly (a camera, a
/// PLC) costs one write per half MiB, not one per segment.
const GATHER: usize = PIPE_BYTES / 2;

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

    /// Moves what `socket` holds, `room` bytes at most, into this pipe
    /// without waiting: `WouldBlock` when the socket holds nothing, 0 at its
    /// end, [`PipeFull`] when the socket holds more than the pipe takes.
    fn fill_from(&self, socket: BorrowedFd<'_>, room: usize) -> std::io::Result<usize> {
        let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
        let splice = || rustix::pipe::splice(socket, None, &self.write, None, room, flags);
        let holds_bytes = || rustix::io::ioctl_fionread(socket).is_ok_and(|n| n > 0);
        // A pipe has slots, not bytes: small segments fill it before its
        // size in bytes is reached, and a full pipe answers EAGAIN as an
        // empty socket does. Taken for an empty socket, the readiness tokio
        // then clears would never come back for bytes already there. Bytes
        // that arrived just after an EAGAIN look the same: a second splice
        // takes them, where a full pipe answers EAGAIN again.
        let result = match splice() {
            Err(rustix::io::Errno::AGAIN) if holds_bytes() => match splice() {
                Err(rustix::io::Errno::AGAIN) if holds_bytes() => {
                    return Err(std::io::Error::other(PipeFull))
                }
                other => other,
            },
            other => other,
        };
        result.map_err(std::io::Error::from)
    }
}

/// The pipe being filled takes no more; the socket still holds bytes.
#[derive(Debug, thiserror::Error)]
#[error("pipe full")]
struct PipeFull;

impl PipeFull {
    fn is(e: &std::io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<PipeFull>())
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
    let file = upload.file();
    crate::metrics::splice_started();
    let mut filling = Pipe::new().map_err(store_error)?;
    // Bytes in `filling`.
    let mut gathered: usize = 0;
    let mut spare: Option<Pipe> = None;
    let mut draining: Option<Draining> = None;
    // Bytes handed to writes.
    let mut written: u64 = 0;
    loop {
        let room = PIPE_BYTES - gathered;
        let filled = tokio::select! {
            biased;
            _ = guard.cancelled() => return Err(UploadError::Shutdown),
            n = poll_fn(|cx| input.poll_read_raw(cx, &mut |socket| filling.fill_from(socket, room))) => n,
        };
        let full = match filled {
            Ok(0) => break,
            Ok(n) => {
                gathered += n;
                gathered >= GATHER
            }
            Err(e) if PipeFull::is(&e) => true,
            Err(e) => return Err(UploadError::Client(e)),
        };
        if !full {
            continue;
        }
        // One write in flight: the previous one must be done before this
        // pipe is handed over and the other filled.
        if let Some(previous) = draining.take() {
            spare = Some(drained(previous, guard).await?);
        }
        let next = spare
            .take()
            .map_or_else(Pipe::new, Ok)
            .map_err(store_error)?;
        let handed = std::mem::replace(&mut filling, next);
        draining = Some(drain(&file, handed, written, gathered));
        written += gathered as u64;
        gathered = 0;
    }
    if let Some(previous) = draining.take() {
        drained(previous, guard).await?;
    }
    drop(file);
    let started = Instant::now();
    // What the last pipe gathered is written by the commit, on its own
    // blocking thread: a small file is written, hashed and linked at once.
    let size = written + gathered as u64;
    let last = (gathered > 0).then_some((filling.read, gathered));
    let committed = upload.complete(size, settings.sha256, last).await;
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

/// A local failure outside the file's own writes (a pipe, a writer thread
/// that panicked), as the store's.
fn store_error(e: impl std::error::Error + Send + Sync + 'static) -> UploadError {
    UploadError::Store(object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    })
}

/// Writes the `len` bytes `pipe` holds into `file` at `offset`, off the
/// async threads; the pipe comes back empty.
fn drain(file: &Arc<Tmpfile>, pipe: Pipe, offset: u64, len: usize) -> Draining {
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        file.splice_from(pipe.read.as_fd(), offset, len)?;
        Ok(pipe)
    })
}

/// Waits for a write to finish (shutdown's cut does not wait: the write
/// holds its own reference to the file, which closes after it).
async fn drained(write: Draining, guard: &TransferGuard) -> Result<Pipe, UploadError> {
    tokio::select! {
        biased;
        _ = guard.cancelled() => Err(UploadError::Shutdown),
        done = write => match done {
            Ok(pipe) => pipe.map_err(UploadError::Store),
            Err(e) => Err(store_error(e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::commit_rule::{DataSource, RawRead};
    use crate::local_attributes::{AwaitDigest, XattrStore};
    use crate::memory_budget::{part_reservation, MemoryBudget};
    use crate::metrics::Direction;
    use crate::transfers::Transfers;
    use object_store::local::LocalFileSystem;
    use object_store::path::Path as ObjectPath;
    use object_store::{ObjectStore, ObjectStoreExt};
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::Duration;
    use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
    use tokio::net::{TcpListener, TcpStream};

    /// A plain TCP data connection, usable raw as the engine's is.
    struct RawTcp(TcpStream);

    impl AsyncRead for RawTcp {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.0).poll_read(cx, buf)
        }
    }

    impl DataSource for RawTcp {
        fn is_raw(&self) -> bool {
            true
        }

        fn poll_read_raw(
            &mut self,
            cx: &mut Context<'_>,
            read: RawRead<'_>,
        ) -> Poll<std::io::Result<usize>> {
            loop {
                std::task::ready!(self.0.poll_read_ready(cx))?;
                match self
                    .0
                    .try_io(tokio::io::Interest::READABLE, || read(self.0.as_fd()))
                {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    other => return Poll::Ready(other),
                }
            }
        }
    }

    /// A connected pair on loopback: (client, server).
    async fn connection() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        root: std::path::PathBuf,
        store: Arc<XattrStore>,
        settings: UploadSettings,
        transfers: Arc<Transfers>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let fs = LocalFileSystem::new_with_prefix(&root).unwrap();
        let budget = MemoryBudget::new(64 << 20, Duration::from_secs(1));
        let settings = UploadSettings {
            part_size: 1 << 20,
            concurrency: 1,
            budget,
            idle_timeout: Duration::from_secs(30),
            storage_class: None,
            content_types: crate::integrity::ContentTypes::None,
            sha256: true,
            defer_sha256: true,
            events: None,
        };
        Fixture {
            _dir: dir,
            root,
            store: Arc::new(XattrStore::new(Arc::new(fs))),
            settings,
            transfers: Transfers::new(None),
        }
    }

    impl Fixture {
        /// Receives what `client` sends into `key` through a real socket.
        async fn receive(&self, key: &str, server: TcpStream) -> Result<(), UploadError> {
            let key = ObjectPath::from(key);
            let guard = self.transfers.begin(Direction::Upload).unwrap();
            let session = Arc::new(SessionContext::detached());
            let (input, _report) = UploadInput::new(
                Box::new(RawTcp(server)),
                session.clone(),
                &guard,
                Duration::from_secs(30),
            );
            assert!(input.is_raw());
            let upload = self
                .store
                .direct_upload(&key, object_store::Attributes::new())
                .await
                .unwrap()
                .expect("anonymous files on the test's file system");
            let memory = self
                .settings
                .budget
                .reserve(part_reservation(1 << 20), std::future::pending())
                .await
                .unwrap();
            let target = UploadTarget {
                store: self.store.clone(),
                key,
                store_url: "file:///test".into(),
                user: "alice".into(),
            };
            receive(
                upload,
                input,
                target,
                &self.settings,
                memory,
                &session,
                &guard,
            )
            .await
        }

        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&self.root)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_upload_lands_whole_with_its_digest_after_the_commit() {
        let f = fixture();
        let data: Vec<u8> = (0..(5 << 20) + 3).map(|i| (i % 251) as u8).collect();
        let (mut client, server) = connection().await;
        let sending = {
            let data = data.clone();
            tokio::spawn(async move {
                client.write_all(&data).await.unwrap();
                client.shutdown().await.unwrap();
            })
        };
        f.receive("big.bin", server).await.unwrap();
        sending.await.unwrap();
        assert_eq!(std::fs::read(f.root.join("big.bin")).unwrap(), data);
        let mut head = object_store::GetOptions {
            head: true,
            ..Default::default()
        };
        head.extensions.insert(AwaitDigest);
        let stored = f
            .store
            .get_opts(&ObjectPath::from("big.bin"), head)
            .await
            .unwrap()
            .attributes;
        let mut digests = crate::integrity::UploadDigests::new(true);
        digests.update(&data);
        let expected = digests.finish();
        let value = |key: &str| {
            stored
                .get(&object_store::Attribute::Metadata(key.to_string().into()))
                .map(|v| v.to_string())
        };
        assert_eq!(value("sha256"), expected.sha256);
        assert_eq!(value("crc32"), Some(expected.crc32));
        assert_eq!(
            f.settings.budget.in_use(),
            0,
            "the pipes' budget given back"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_gone_mid_file_leaves_nothing() {
        let f = fixture();
        let (mut client, server) = connection().await;
        let sending = tokio::spawn(async move {
            client.write_all(&vec![7u8; 3 << 20]).await.unwrap();
            // Reset, not FIN: the client was killed.
            socket2::SockRef::from(&client)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(client);
        });
        let received = f.receive("cut.bin", server).await;
        sending.await.unwrap();
        assert!(
            matches!(received, Err(UploadError::Client(_))),
            "{received:?}"
        );
        assert!(f.names().is_empty(), "{:?}", f.names());
        assert!(f
            .store
            .head(&ObjectPath::from("cut.bin"))
            .await
            .is_err_and(|e| matches!(e, object_store::Error::NotFound { .. })));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_upload_leaves_nothing() {
        let f = fixture();
        let (mut client, server) = connection().await;
        client.write_all(&vec![1u8; 2 << 20]).await.unwrap();
        // Never finished: the client stays connected; the upload is dropped
        // (its task aborted) once it has taken the bytes in.
        let receiving = f.receive("dropped.bin", server);
        let _ = tokio::time::timeout(Duration::from_millis(300), receiving).await;
        drop(client);
        assert!(f.names().is_empty(), "{:?}", f.names());
    }
}
