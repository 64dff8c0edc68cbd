//! Session context and the registry of in-flight transfers.
//!
//! Graceful shutdown needs to know which transfers are running, to give them a
//! grace period and then cut the rest cleanly (abort the upload, answer 4xx).
//! Every RETR and STOR holds a [`TransferGuard`] for its lifetime; the guard
//! carries the cancellation signal the data path selects on.

use crate::metrics::Direction;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Why a transfer was not started.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum TransferRefused {
    /// The server is shutting down and takes no new transfers.
    #[error("server is shutting down")]
    ShuttingDown,
    /// `max_uploads` transfers are already running.
    #[error("too many concurrent uploads, try again later")]
    TooManyUploads,
}

/// Tracks every running transfer of the process.
#[derive(Debug)]
pub struct Transfers {
    cancel: CancellationToken,
    closing: AtomicBool,
    active: watch::Sender<usize>,
    upload_slots: Option<Arc<Semaphore>>,
}

impl Transfers {
    /// A registry allowing at most `max_uploads` concurrent uploads
    /// (`None` = unlimited).
    pub fn new(max_uploads: Option<usize>) -> Arc<Self> {
        Arc::new(Self {
            cancel: CancellationToken::new(),
            closing: AtomicBool::new(false),
            active: watch::Sender::new(0),
            upload_slots: max_uploads.map(|n| Arc::new(Semaphore::new(n))),
        })
    }

    /// Registers a transfer; refused while shutting down or over the limit.
    pub(crate) fn begin(
        self: &Arc<Self>,
        direction: Direction,
    ) -> Result<TransferGuard, TransferRefused> {
        if self.closing.load(Ordering::SeqCst) {
            return Err(TransferRefused::ShuttingDown);
        }
        let permit = match (&self.upload_slots, direction) {
            (Some(slots), Direction::Upload) => Some(
                slots
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| TransferRefused::TooManyUploads)?,
            ),
            _ => None,
        };
        self.active.send_modify(|n| *n += 1);
        crate::metrics::transfer_started(direction);
        Ok(TransferGuard {
            transfers: self.clone(),
            direction,
            _permit: permit,
        })
    }

    /// How many transfers are running now.
    pub fn active(&self) -> usize {
        *self.active.borrow()
    }

    /// Stops new transfers, waits up to `grace` for running ones, then
    /// cancels the rest and waits (bounded) for them to clean up.
    /// Returns how many transfers had to be cancelled.
    pub(crate) async fn drain(&self, grace: Duration) -> usize {
        self.closing.store(true, Ordering::SeqCst);
        let mut rx = self.active.subscribe();
        if tokio::time::timeout(grace, rx.wait_for(|n| *n == 0))
            .await
            .is_ok()
        {
            return 0;
        }
        let cut = self.active();
        tracing::warn!(
            transfers = cut,
            "shutdown grace period over: cancelling transfers"
        );
        self.cancel.cancel();
        // Cancelled uploads abort their multipart uploads before returning;
        // give that a bounded time so a dead back-end cannot hang shutdown.
        let _ = tokio::time::timeout(CLEANUP_BUDGET, rx.wait_for(|n| *n == 0)).await;
        cut
    }

    /// Whether shutdown has begun.
    pub(crate) fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }
}

/// Whether one of the command lines in `bytes` is ABOR. Telnet commands
/// (bytes 0xF0..=0xFF) are dropped first; command names are
/// case-insensitive (RFC 959 section 5.3).
fn holds_abor(bytes: &[u8]) -> bool {
    bytes.split(|b| *b == b'\n').any(|line| {
        let text: Vec<u8> = line.iter().copied().filter(u8::is_ascii).collect();
        text.trim_ascii_start()
            .get(..4)
            .is_some_and(|name| name.eq_ignore_ascii_case(b"ABOR"))
    })
}

/// How long cancelled transfers get to clean up after the grace period.
const CLEANUP_BUDGET: Duration = Duration::from_secs(10);

/// Held by a running transfer; dropping it unregisters the transfer.
#[derive(Debug)]
pub(crate) struct TransferGuard {
    transfers: Arc<Transfers>,
    direction: Direction,
    _permit: Option<OwnedSemaphorePermit>,
}

impl TransferGuard {
    /// Resolves when shutdown cuts this transfer.
    pub(crate) fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.transfers.cancel.cancelled()
    }

    /// Whether shutdown has cut this transfer.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.transfers.cancel.is_cancelled()
    }

    /// The signal itself, for a reader that outlives this borrow and
    /// polls it rather than selecting on it (an upload's input).
    pub(crate) fn shutdown_signal(&self) -> CancellationToken {
        self.transfers.cancel.clone()
    }
}

impl Drop for TransferGuard {
    fn drop(&mut self) {
        self.transfers
            .active
            .send_modify(|n| *n = n.saturating_sub(1));
        crate::metrics::transfer_finished(self.direction);
    }
}

/// What the storage back-end knows about the control connection it serves.
///
/// libunftp creates one back-end per control connection, and the gateway
/// builds that back-end with this context, so audit records carry the session
/// and an upload can ask whether its client is still there.
#[derive(Debug)]
pub(crate) struct SessionContext {
    /// Process-unique session number, for logs.
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The control socket, shared with libunftp (which holds the only
    /// strong reference, engine patch 0311) and only ever *peeked*: FTP marks
    /// the end of an upload by closing the data connection, which a client
    /// that was killed also does. Its control connection closing at the same
    /// time is what tells the two apart.
    ///
    /// Weak, not a duplicate descriptor: a session costs one descriptor, and
    /// the socket closes when the engine ends the session. An upgrade that
    /// succeeds holds the socket open for the call, so the descriptor used is
    /// never one that was closed and reused.
    control: Option<Weak<TcpStream>>,
    /// Turns true when the client has logged in (libunftp calls the
    /// back-end's `enter` then); the accept loop's login deadline and
    /// unauthenticated-connection cap wait on it.
    logged_in: watch::Sender<bool>,
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

impl SessionContext {
    /// Context for a new session on `control`.
    pub(crate) fn new(peer: SocketAddr, control: Option<Weak<TcpStream>>) -> Self {
        Self {
            id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            peer,
            control,
            logged_in: watch::Sender::new(false),
        }
    }

    /// The control socket while the session holds it; `None` once libunftp
    /// has closed it (or for a detached context).
    fn control(&self) -> Option<Arc<TcpStream>> {
        self.control.as_ref().and_then(Weak::upgrade)
    }

    /// Sends `farewell` (a complete reply line) and shuts the control
    /// connection down in both directions. libunftp runs its control loop
    /// in a task of its own, so this is how the gateway ends a session:
    /// the loop reads end-of-stream and exits. Best effort: the socket is
    /// non-blocking and a full send buffer drops the farewell. A session
    /// that has already ended is left alone.
    pub(crate) fn hang_up(&self, farewell: &[u8]) {
        if let Some(socket) = self.control() {
            use rustix::net::{send, shutdown, SendFlags, Shutdown};
            if !farewell.is_empty() {
                let _ = send(
                    &*socket,
                    farewell,
                    SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
                );
            }
            let _ = shutdown(&*socket, Shutdown::Both);
        }
    }

    /// Records that the session's user logged in.
    pub(crate) fn mark_logged_in(&self) {
        self.logged_in.send_replace(true);
    }

    /// Resolves once the session's user has logged in.
    pub(crate) async fn logged_in(&self) {
        // The sender lives in `self`, so the channel cannot close while
        // this borrow waits.
        let _ = self.logged_in.subscribe().wait_for(|in_| *in_).await;
    }

    /// A context with no control socket, for unit tests of the back-end.
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        Self::new(SocketAddr::from(([127, 0, 0, 1], 0)), None)
    }

    /// Whether the client asked to abort the transfer that just read the end
    /// of its data: an ABOR the FTP engine has not read yet, or the Telnet
    /// Synch (urgent data) sent with an ABOR. The urgent byte is taken.
    ///
    /// Clients that abort an upload send ABOR and close the data connection
    /// (Python's `ftplib.abort()`, lftp), so the data ends exactly as a
    /// complete file does. The engine stops a transfer for an ABOR it has
    /// handled; this covers the rest:
    /// - an ABOR line still unread, found by peeking (never reading) the
    ///   control connection. Telnet commands before it (`IAC IP`) are
    ///   skipped, and so is the loss of the urgent byte that the kernel takes
    ///   out of the stream (ftplib sends the whole line as urgent data, which
    ///   leaves `ABOR\r` in line);
    /// - the urgent byte itself, which the engine never reads: it stays
    ///   until taken, so it also covers an ABOR the engine has read but not
    ///   yet acted on when the data ends (the peek alone raced with that).
    ///
    /// A plain ABOR without the Synch, read by the engine in the moment
    /// between the end of the data and this check, is not seen: the upload
    /// completed before its ABOR was processed (RFC 959's 226 case). Over
    /// FTPS the bytes are encrypted, and only the engine sees an ABOR.
    pub(crate) fn abort_pending(&self) -> bool {
        let Some(socket) = self.control() else {
            return false;
        };
        let mut pending = [0u8; 512];
        let unread_abor = match peek(&socket, &mut pending) {
            Ok(n) => holds_abor(&pending[..n]),
            Err(_) => false,
        };
        // Taken in any case, so that it cannot abort the next transfer.
        let urgent = self.take_urgent();
        unread_abor || urgent
    }

    /// Takes the urgent ("out-of-band") byte from the control connection,
    /// if one arrived; true when there was one, or when its arrival is
    /// announced.
    ///
    /// RFC 959 has clients send the Telnet Synch (urgent data) with ABOR, as
    /// `ftplib.abort()` and lftp do. Transfers take it when they end, so an
    /// ABOR for one transfer does not abort the next upload.
    pub(crate) fn take_urgent(&self) -> bool {
        let Some(socket) = self.control() else {
            return false;
        };
        let mut byte = [0u8; 1];
        let flags = rustix::net::RecvFlags::OOB | rustix::net::RecvFlags::DONTWAIT;
        match rustix::net::recv(&*socket, &mut byte, flags) {
            Ok((n, _)) => n > 0,
            // The urgent pointer is set but its byte has not arrived yet:
            // an abort is on its way.
            Err(rustix::io::Errno::WOULDBLOCK) => true,
            // EINVAL: no urgent data (the usual case).
            Err(_) => false,
        }
    }

    /// False once the client has closed or reset the control connection,
    /// or libunftp has ended the session (and closed the socket).
    ///
    /// `peek` never waits (`MSG_DONTWAIT`): no data → `WouldBlock` → alive;
    /// end of stream → `Ok(0)` → gone.
    pub(crate) fn control_alive(&self) -> bool {
        let Some(control) = &self.control else {
            return true;
        };
        let Some(socket) = control.upgrade() else {
            return false;
        };
        let mut byte = [0u8; 1];
        match peek(&socket, &mut byte) {
            Ok(0) => false,
            Ok(_) => true,
            Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) => true,
            Err(_) => false,
        }
    }
}

/// Copies what the control socket holds unread into `buf`, leaving it for
/// libunftp to read. Never waits.
fn peek(socket: &TcpStream, buf: &mut [u8]) -> rustix::io::Result<usize> {
    let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
    rustix::net::recv(socket, buf, flags).map(|(n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_then_cancels() {
        let transfers = Transfers::new(Some(1));
        let guard = transfers.begin(Direction::Upload).unwrap();
        assert_eq!(
            transfers.begin(Direction::Upload).unwrap_err(),
            TransferRefused::TooManyUploads
        );
        let t = transfers.clone();
        let drained = tokio::spawn(async move { t.drain(Duration::from_millis(50)).await });
        guard.cancelled().await;
        drop(guard);
        assert_eq!(drained.await.unwrap(), 1);
        assert_eq!(
            transfers.begin(Direction::Download).unwrap_err(),
            TransferRefused::ShuttingDown
        );
    }

    #[test]
    fn abor_lines_are_found() {
        assert!(holds_abor(b"ABOR\r\n"));
        assert!(holds_abor(b"abor\r\n"));
        assert!(holds_abor(b"NOOP\r\nABOR\r\n"));
        assert!(
            holds_abor(b"\xff\xf4\xff\xf2ABOR\r\n"),
            "lftp's Telnet IP + Synch"
        );
        assert!(holds_abor(b"ABOR"), "a line still arriving");
        assert!(!holds_abor(b"NOOP\r\n"));
        assert!(!holds_abor(b"STOR ABOR\r\n"));
        assert!(!holds_abor(b""));
    }

    /// A connected pair on loopback: the client's end, and the server's end
    /// as the session would hold it.
    fn socket_pair() -> (std::net::TcpStream, std::net::TcpStream, SocketAddr) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        (client, server, peer)
    }

    /// The server's end as libunftp holds it (patch 0311): tokio's stream,
    /// shared; the context gets a weak reference.
    fn engine_held(server: std::net::TcpStream) -> Arc<TcpStream> {
        server.set_nonblocking(true).unwrap();
        Arc::new(TcpStream::from_std(server).unwrap())
    }

    #[tokio::test]
    async fn abor_sent_as_urgent_data_is_seen() {
        let (client, server, peer) = socket_pair();
        let server = engine_held(server);
        let ctx = SessionContext::new(peer, Some(Arc::downgrade(&server)));
        assert!(!ctx.abort_pending(), "nothing sent yet");
        // What ftplib.abort() sends: the whole line as urgent data.
        socket2::SockRef::from(&client)
            .send_out_of_band(b"ABOR\r\n")
            .unwrap();
        let mut seen = false;
        for _ in 0..100 {
            if ctx.abort_pending() {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen, "ABOR sent as urgent data not seen");
    }

    /// The race the urgent byte closes: the engine has read `ABOR\r` (so a
    /// peek finds nothing) but not yet stopped the transfer when the upload
    /// reads the end of its data.
    #[tokio::test]
    async fn abor_already_read_by_the_engine_is_seen_once() {
        let (client, server, peer) = socket_pair();
        socket2::SockRef::from(&client)
            .send_out_of_band(b"ABOR\r\n")
            .unwrap();
        // What the engine reads: the line up to the urgent byte (loopback
        // delivers it before send returns).
        let mut line = [0u8; 5];
        std::io::Read::read_exact(&mut &server, &mut line).unwrap();
        assert_eq!(&line, b"ABOR\r");
        let server = engine_held(server);
        let ctx = SessionContext::new(peer, Some(Arc::downgrade(&server)));
        assert!(ctx.abort_pending(), "the urgent byte marks the abort");
        assert!(
            !ctx.abort_pending(),
            "taken: the next upload is not aborted"
        );
    }

    #[tokio::test]
    async fn control_liveness_follows_the_peer() {
        let (client, server, peer) = socket_pair();
        let server = engine_held(server);
        let ctx = SessionContext::new(peer, Some(Arc::downgrade(&server)));
        assert!(ctx.control_alive());
        drop(client);
        // The FIN travels over loopback; poll briefly instead of sleeping blind.
        for _ in 0..100 {
            if !ctx.control_alive() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("closed control connection still reported alive");
    }

    #[tokio::test]
    async fn hang_up_sends_the_farewell_and_ends_the_stream() {
        let (mut client, server, peer) = socket_pair();
        let server = engine_held(server);
        let ctx = SessionContext::new(peer, Some(Arc::downgrade(&server)));
        ctx.hang_up(b"421 Login timeout\r\n");
        let mut heard = Vec::new();
        std::io::Read::read_to_end(&mut client, &mut heard).unwrap();
        assert_eq!(heard, b"421 Login timeout\r\n");
    }

    /// Once libunftp has closed the control socket, its descriptor number
    /// may belong to another connection: the context must touch nothing.
    #[tokio::test]
    async fn an_ended_session_touches_no_other_socket() {
        let (_gone_client, gone, peer) = socket_pair();
        let gone = engine_held(gone);
        let ctx = SessionContext::new(peer, Some(Arc::downgrade(&gone)));
        drop(gone);
        // Most likely reuses the descriptor number just freed.
        let (client, next, _) = socket_pair();
        next.set_nonblocking(true).unwrap();
        socket2::SockRef::from(&client)
            .send_out_of_band(b"!")
            .unwrap();
        assert!(!ctx.control_alive(), "the session's socket is gone");
        assert!(!ctx.abort_pending());
        assert!(!ctx.take_urgent());
        ctx.hang_up(b"421 Login timeout\r\n");
        // The other connection still works both ways, its urgent byte
        // untaken and nothing written to it.
        next.set_nonblocking(false).unwrap();
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        assert_eq!(
            socket2::SockRef::from(&next)
                .recv_out_of_band(&mut byte)
                .unwrap(),
            1
        );
        std::io::Write::write_all(&mut &next, b"hello\n").unwrap();
        let mut line = [0u8; 6];
        std::io::Read::read_exact(&mut &client, &mut line).unwrap();
        assert_eq!(&line, b"hello\n");
    }
}
