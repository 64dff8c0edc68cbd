//! One audit record per FTP operation, at info level on the target
//! `bucketftp::audit`: session, user, client address, command, path, bytes,
//! duration, outcome, the reply code libunftp sends and the cause of a
//! failure. Every engine's operations are recorded alike because the
//! wrapper, not the engine, writes them.

use super::account::SessionUser;
use super::reply_codes::reply_code_of;
use super::ObjectBackend;
use crate::metrics::Direction;
use std::path::Path;
use std::time::Instant;
use unftp_core::storage::{
    Error as StorageError, ErrorKind as StorageErrorKind, Result as StorageResult,
};

impl ObjectBackend {
    /// What runs when a download's reader is dropped: the audit record and
    /// the transfer metrics, with the bytes actually sent.
    pub(super) fn finish_download(
        &self,
        user: &SessionUser,
        path: &Path,
        started: Instant,
    ) -> impl FnOnce(u64, bool) + Send + 'static {
        let (backend, user, path) = (self.clone(), user.clone(), path.to_path_buf());
        move |bytes, completed| {
            // An ABOR sent with urgent data during this download must not
            // be taken for an abort of the next upload.
            let _ = backend.session.take_urgent();
            crate::metrics::transfer_outcome(
                Direction::Download,
                completed,
                started.elapsed(),
                bytes,
            );
            let result = if completed {
                Ok(())
            } else {
                Err(StorageError::new(
                    StorageErrorKind::ConnectionClosed,
                    "download did not complete",
                ))
            };
            backend.audit(
                &user,
                "RETR",
                &path,
                bytes,
                started,
                &result.as_ref().map(|_| ()),
            );
        }
    }

    /// Times a command that moves no bytes and writes its audit line, so
    /// DELE, MKD, RNTO, RMD and MFMT report alike.
    pub(super) async fn audited<T>(
        &self,
        user: &SessionUser,
        command: &'static str,
        path: &Path,
        op: impl std::future::Future<Output = StorageResult<T>>,
    ) -> StorageResult<T> {
        let started = Instant::now();
        let result = op.await;
        self.audit(
            user,
            command,
            path,
            0,
            started,
            &result.as_ref().map(|_| ()),
        );
        result
    }

    /// One audit record per finished operation, at info level.
    pub(super) fn audit(
        &self,
        user: &SessionUser,
        command: &'static str,
        path: &Path,
        bytes: u64,
        started: Instant,
        result: &Result<(), &StorageError>,
    ) {
        let (outcome, reply) = match result {
            Ok(()) => ("ok", reply_code_ok(command)),
            Err(e) => ("error", reply_code_of(e.kind())),
        };
        tracing::info!(
            target: "bucketftp::audit",
            session = self.session.id,
            user = %user,
            client_ip = %self.session.peer.ip(),
            command,
            path = %path.display(),
            bytes,
            duration_ms = started.elapsed().as_millis() as u64,
            outcome,
            reply,
            cause = result.as_ref().err().map(|e| crate::errors::error_chain(e)).unwrap_or_default(),
            "ftp operation"
        );
    }
}

/// The reply code libunftp sends for a successful command.
fn reply_code_ok(command: &str) -> u16 {
    match command {
        "STOR" | "RETR" | "APPE" => 226,
        "MKD" => 257,
        "MFMT" => 213,
        _ => 250,
    }
}
