//! The commit rule: an upload becomes an object only when it is complete.
//!
//! FTP ends an upload by closing the data connection, and so does a client
//! that was killed, one that sent ABOR, and one whose transfer the server
//! cut. Every engine reads the client's bytes through [`UploadInput`], which
//! ends in end-of-file only when the end of the data is the end of the file:
//! no ABOR pending ([`SessionContext::abort_pending`]), the control
//! connection still open, shutdown not begun cutting transfers. Otherwise it
//! ends in an error, and no engine commits what ended in an error: the
//! object_store engine aborts its upload ([`super::upload`]), unftp-sbe-gcs
//! aborts the one HTTP request its body streams in (GCS creates no object
//! from a request whose body never finished). So ABOR, a vanished client,
//! shutdown and a silent data connection leave nothing behind and are
//! answered 4xx ([`Cut`]), never with a false 226.
//!
//! The same reader is where a silent data connection times out and where
//! received bytes are counted, so both engines report them alike. An engine
//! that moves the bytes without reading them ([`UploadInput::poll_read_raw`],
//! `file://` over plain TCP, see [`super::spliced`]) goes through the same
//! rules.

use crate::transfers::{SessionContext, TransferGuard};
use std::any::Any;
use std::future::Future;
use std::os::fd::BorrowedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use unftp_core::storage::{Error as StorageError, ErrorKind as StorageErrorKind};

/// Why the end of an upload's data was not taken as the end of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Cut {
    /// The client aborted the upload (ABOR, found unread on the control
    /// connection when the data ended).
    #[error("upload aborted by the client")]
    Aborted,
    /// The control connection closed before the data ended: the client went
    /// away, so the data is not known to be complete.
    #[error("control connection closed before the upload completed")]
    ClientGone,
    /// Shutdown's grace period ended during the upload.
    #[error("upload cut by server shutdown")]
    Shutdown,
    /// The data connection was silent for longer than the idle timeout.
    #[error("data connection idle for {0:?}")]
    Idle(Duration),
}

/// Shutdown is the server's doing and passes: 450, try again. The others
/// end the transfer for the client's reasons: 426.
impl From<Cut> for StorageError {
    fn from(cut: Cut) -> Self {
        let kind = match cut {
            Cut::Shutdown => StorageErrorKind::TransientFileNotAvailable,
            Cut::Aborted | Cut::ClientGone | Cut::Idle(_) => StorageErrorKind::ConnectionClosed,
        };
        StorageError::new(kind, cut)
    }
}

/// How an upload's data ended, as the wrapper that answers the client
/// reads it once the engine returns.
#[derive(Debug, Default)]
pub(crate) struct InputReport {
    received: AtomicU64,
    cut: OnceLock<Cut>,
}

impl InputReport {
    /// Bytes received from the client.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Why the upload must not be committed, if it was cut.
    pub(crate) fn cut(&self) -> Option<Cut> {
        self.cut.get().copied()
    }
}

/// A read of the data socket itself: takes bytes from it (0 = the client
/// closed it) and fails with `WouldBlock` instead of waiting.
pub(crate) type RawRead<'a> = &'a mut dyn FnMut(BorrowedFd<'_>) -> std::io::Result<usize>;

/// The client's data connection: readable, and on plain TCP also usable as
/// the socket itself (the engine's [`libunftp::DataReader`]).
pub(crate) trait DataSource: AsyncRead + Send + Sync + Unpin {
    /// Whether [`poll_read_raw`](Self::poll_read_raw) works.
    fn is_raw(&self) -> bool {
        false
    }

    /// Runs `read` on the socket once it is readable (see
    /// [`libunftp::DataReader::poll_read_raw`]); `Unsupported` when not
    /// [`is_raw`](Self::is_raw).
    fn poll_read_raw(
        &mut self,
        _cx: &mut Context<'_>,
        _read: RawRead<'_>,
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Err(std::io::ErrorKind::Unsupported.into()))
    }
}

impl DataSource for libunftp::DataReader {
    fn is_raw(&self) -> bool {
        self.is_plain_tcp()
    }

    fn poll_read_raw(
        &mut self,
        cx: &mut Context<'_>,
        read: RawRead<'_>,
    ) -> Poll<std::io::Result<usize>> {
        libunftp::DataReader::poll_read_raw(self, cx, read)
    }
}

impl DataSource for Box<dyn DataSource> {
    fn is_raw(&self) -> bool {
        (**self).is_raw()
    }

    fn poll_read_raw(
        &mut self,
        cx: &mut Context<'_>,
        read: RawRead<'_>,
    ) -> Poll<std::io::Result<usize>> {
        (**self).poll_read_raw(cx, read)
    }
}

/// Any other reader (tests): readable only. (`None` only once
/// [`data_source`] took the engine's reader out, which it then returns.)
pub(crate) struct Readable<R>(Option<R>);

impl<R> Readable<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self(Some(inner))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Readable<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.0.as_mut() {
            Some(inner) => Pin::new(inner).poll_read(cx, buf),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl<R: AsyncRead + Send + Sync + Unpin> DataSource for Readable<R> {}

/// What `put` received, as a [`DataSource`]: the engine hands it a
/// [`libunftp::DataReader`], recovered here from the generic type.
pub(crate) fn data_source<R>(input: R) -> Box<dyn DataSource>
where
    R: AsyncRead + Send + Sync + Unpin + 'static,
{
    let mut input = Readable::new(input);
    let engine = (&mut input.0 as &mut dyn Any).downcast_mut::<Option<libunftp::DataReader>>();
    match engine.and_then(Option::take) {
        Some(reader) => Box::new(reader),
        None => Box::new(input),
    }
}

/// The client's upload as an engine reads it (see the module docs).
pub(crate) struct UploadInput {
    inner: Box<dyn DataSource>,
    session: Arc<SessionContext>,
    shutdown: CancellationToken,
    shutdown_signal: Pin<Box<WaitForCancellationFutureOwned>>,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    /// The last read returned `Pending`. A new read restarts the idle timer,
    /// so the time an engine spends storing what it read is never taken for
    /// the client's silence.
    waiting: bool,
    /// End-of-file was granted; later reads see it again.
    finished: bool,
    report: Arc<InputReport>,
}

impl UploadInput {
    /// Wraps the client's data connection for the upload `guard` registers;
    /// `idle` is `server.idle_timeout`.
    pub(crate) fn new(
        inner: Box<dyn DataSource>,
        session: Arc<SessionContext>,
        guard: &TransferGuard,
        idle: Duration,
    ) -> (Self, Arc<InputReport>) {
        let shutdown = guard.shutdown_signal();
        let report = Arc::new(InputReport::default());
        let input = Self {
            inner,
            session,
            shutdown_signal: Box::pin(shutdown.clone().cancelled_owned()),
            shutdown,
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            finished: false,
            report: report.clone(),
        };
        (input, report)
    }

    /// The verdict at the end of the data (the order matters:
    /// `abort_pending` takes the urgent byte an ABOR left).
    fn cut_at_end(&self) -> Option<Cut> {
        if self.session.abort_pending() {
            Some(Cut::Aborted)
        } else if !self.session.control_alive() {
            Some(Cut::ClientGone)
        } else if self.shutdown.is_cancelled() {
            Some(Cut::Shutdown)
        } else {
            None
        }
    }

    fn cut<T>(&mut self, cut: Cut) -> Poll<std::io::Result<T>> {
        let _ = self.report.cut.set(cut);
        Poll::Ready(Err(cut_error(cut)))
    }
}

fn cut_error(cut: Cut) -> std::io::Error {
    let kind = match cut {
        Cut::Idle(_) => std::io::ErrorKind::TimedOut,
        Cut::Aborted | Cut::ClientGone | Cut::Shutdown => std::io::ErrorKind::ConnectionAborted,
    };
    std::io::Error::new(kind, cut)
}

impl UploadInput {
    /// Whether the data connection can be used as the socket itself
    /// ([`poll_read_raw`](Self::poll_read_raw)).
    pub(crate) fn is_raw(&self) -> bool {
        self.inner.is_raw()
    }

    /// Runs `read` on the data socket itself (see [`DataSource`]) under the
    /// same rules as `poll_read`: `Ok(0)` only at the end of a complete
    /// file, an error when the upload was cut.
    pub(crate) fn poll_read_raw(
        &mut self,
        cx: &mut Context<'_>,
        read: RawRead<'_>,
    ) -> Poll<std::io::Result<usize>> {
        self.poll_under_rules(cx, |inner, cx| inner.poll_read_raw(cx, read))
    }

    /// One read of the client (`read` returns how many bytes it took, 0 at
    /// the end of the data) with the module's rules around it.
    fn poll_under_rules(
        &mut self,
        cx: &mut Context<'_>,
        read: impl FnOnce(&mut dyn DataSource, &mut Context<'_>) -> Poll<std::io::Result<usize>>,
    ) -> Poll<std::io::Result<usize>> {
        if let Some(cut) = self.report.cut() {
            return Poll::Ready(Err(cut_error(cut)));
        }
        if self.finished {
            return Poll::Ready(Ok(0));
        }
        if self.shutdown_signal.as_mut().poll(cx).is_ready() {
            return self.cut(Cut::Shutdown);
        }
        if !self.waiting {
            let deadline = tokio::time::Instant::now() + self.idle;
            self.idle_timer.as_mut().reset(deadline);
        }
        match read(&mut *self.inner, cx) {
            Poll::Pending => {
                if self.idle_timer.as_mut().poll(cx).is_ready() {
                    return self.cut(Cut::Idle(self.idle));
                }
                self.waiting = true;
                Poll::Pending
            }
            Poll::Ready(Err(e)) => {
                self.waiting = false;
                Poll::Ready(Err(e))
            }
            Poll::Ready(Ok(n)) if n > 0 => {
                self.waiting = false;
                self.report.received.fetch_add(n as u64, Ordering::Relaxed);
                crate::metrics::bytes_received(n);
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Ok(_)) => {
                self.waiting = false;
                if let Some(cut) = self.cut_at_end() {
                    return self.cut(cut);
                }
                self.finished = true;
                Poll::Ready(Ok(0))
            }
        }
    }
}

impl AsyncRead for UploadInput {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(cut) = this.report.cut() {
            return Poll::Ready(Err(cut_error(cut)));
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        this.poll_under_rules(cx, |inner, cx| {
            let before = buf.filled().len();
            Pin::new(inner)
                .poll_read(cx, buf)
                .map_ok(|()| buf.filled().len() - before)
        })
        .map_ok(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Direction;
    use crate::transfers::Transfers;
    use tokio::io::AsyncReadExt;

    fn session() -> Arc<SessionContext> {
        Arc::new(SessionContext::detached())
    }

    #[tokio::test]
    async fn a_complete_upload_ends_in_end_of_file_and_is_counted() {
        let transfers = Transfers::new(None);
        let guard = transfers.begin(Direction::Upload).unwrap();
        let (mut input, report) = UploadInput::new(
            Box::new(Readable::new(&b"hello"[..])),
            session(),
            &guard,
            Duration::from_secs(30),
        );
        let mut read = Vec::new();
        input.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, b"hello");
        assert_eq!(report.received(), 5);
        assert_eq!(report.cut(), None);
        assert_eq!(
            input.read(&mut [0u8; 8]).await.unwrap(),
            0,
            "end-of-file again"
        );
    }

    #[tokio::test]
    async fn shutdown_cuts_the_upload_instead_of_ending_it() {
        let transfers = Transfers::new(None);
        let guard = transfers.begin(Direction::Upload).unwrap();
        let (mut input, report) = UploadInput::new(
            Box::new(Readable::new(&b"hello"[..])),
            session(),
            &guard,
            Duration::from_secs(30),
        );
        let draining = tokio::spawn({
            let transfers = transfers.clone();
            async move { transfers.drain(Duration::ZERO).await }
        });
        guard.cancelled().await;
        let err = input.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
        assert_eq!(report.cut(), Some(Cut::Shutdown));
        assert_eq!(
            StorageError::from(Cut::Shutdown).kind(),
            StorageErrorKind::TransientFileNotAvailable
        );
        drop(guard);
        assert_eq!(draining.await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_silent_data_connection_is_cut_after_the_idle_timeout() {
        let transfers = Transfers::new(None);
        let guard = transfers.begin(Direction::Upload).unwrap();
        // The client end stays open and sends nothing.
        let (_client, server) = tokio::io::duplex(64);
        let idle = Duration::from_millis(20);
        let (mut input, report) =
            UploadInput::new(Box::new(Readable::new(server)), session(), &guard, idle);
        let err = input.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(report.cut(), Some(Cut::Idle(idle)));
        assert_eq!(
            StorageError::from(Cut::Idle(idle)).kind(),
            StorageErrorKind::ConnectionClosed
        );
    }
}
