//! Where an FTPS upload ends: at the client's TLS close_notify, or also at a
//! plain close of the data connection (`tls.require_close_notify = false`).
//!
//! Over TLS the end of the data is the sender's close_notify alert (RFC 8446
//! section 6.1): a connection that just closes may have been cut by a network
//! failure or by an attacker who wants a truncated file stored. The FTP
//! engine's TLS stream reports such an end as an error of kind
//! `UnexpectedEof`, and the upload is refused (4xx, nothing stored). Some
//! old FTPS stacks (netkit ftp-ssl, embedded devices) never send close_notify
//! after an upload; for them an operator can accept the plain close as the
//! end, as vsftpd does with `strict_ssl_read_eof=NO`. A plain-TCP data
//! connection never yields `UnexpectedEof` (its end reads as 0 bytes), so the
//! switch changes nothing for unencrypted uploads.

use super::commit_rule::{DataSource, RawRead};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// An upload's data stream that, unless close_notify is required, reads a
/// TLS connection closed without close_notify as the end of the data.
pub(crate) struct UploadEnd<R> {
    inner: R,
    require_close_notify: bool,
    /// Set once an end without close_notify was accepted (logged once).
    accepted_unterminated: bool,
}

impl<R> UploadEnd<R> {
    /// Wraps an upload's data stream; `require_close_notify` is
    /// `tls.require_close_notify`.
    pub(crate) fn new(inner: R, require_close_notify: bool) -> Self {
        Self {
            inner,
            require_close_notify,
            accepted_unterminated: false,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for UploadEnd<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof && !self.require_close_notify =>
            {
                if !self.accepted_unterminated {
                    self.accepted_unterminated = true;
                    tracing::info!(
                        cause = %e,
                        "upload ended without TLS close_notify; accepted (tls.require_close_notify = false)"
                    );
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// close_notify is TLS's: the raw socket (plain TCP only) passes through.
impl<R: DataSource> DataSource for UploadEnd<R> {
    fn is_raw(&self) -> bool {
        self.inner.is_raw()
    }

    fn poll_read_raw(
        &mut self,
        cx: &mut Context<'_>,
        read: RawRead<'_>,
    ) -> Poll<std::io::Result<usize>> {
        self.inner.poll_read_raw(cx, read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Yields its bytes, then fails as a TLS stream closed without
    /// close_notify does.
    struct CutTls(Option<Vec<u8>>);

    impl AsyncRead for CutTls {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            match self.0.take() {
                Some(bytes) => {
                    buf.put_slice(&bytes);
                    Poll::Ready(Ok(()))
                }
                None => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "peer closed connection without sending TLS close_notify",
                ))),
            }
        }
    }

    #[tokio::test]
    async fn a_cut_tls_upload_fails_by_default() {
        let mut input = UploadEnd::new(CutTls(Some(b"data".to_vec())), true);
        let mut out = Vec::new();
        let err = input.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn a_cut_tls_upload_ends_when_allowed() {
        let mut input = UploadEnd::new(CutTls(Some(b"data".to_vec())), false);
        let mut out = Vec::new();
        input.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"data");
    }

    #[tokio::test]
    async fn other_errors_stay_errors() {
        struct Reset;
        impl AsyncRead for Reset {
            fn poll_read(
                self: Pin<&mut Self>,
                _cx: &mut Context<'_>,
                _buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()))
            }
        }
        let mut input = UploadEnd::new(Reset, false);
        let mut out = Vec::new();
        let err = input.read_to_end(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    }
}
