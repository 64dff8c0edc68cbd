//! Timing and error counting around any object store, as a wrapper.
//!
//! Every request the gateway makes goes through [`InstrumentedStore`], so the
//! latency histogram and the error counter see all of them, by operation
//! (`put`, `put_part`, `complete`, `abort`, `get`, `head`, `list`, `delete`,
//! `copy`, `rename`) and outcome, without a line of metrics code in the FTP
//! handlers. Labels are bounded: the back-end family, the operation and the
//! error kind; never a key.

use crate::metrics;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// An object store whose requests are timed and counted.
#[derive(Debug)]
pub(crate) struct InstrumentedStore {
    inner: Arc<dyn ObjectStore>,
    backend: &'static str,
}

impl InstrumentedStore {
    /// Wraps `inner`; `backend` is the metrics label (`s3`, `file`, …).
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, backend: &'static str) -> Self {
        Self { inner, backend }
    }
}

impl fmt::Display for InstrumentedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instrumented({})", self.inner)
    }
}

/// A bounded label for an `object_store` error.
pub(crate) fn error_kind(err: &object_store::Error) -> &'static str {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => "not_found",
        E::Precondition { .. } | E::NotModified { .. } => "precondition",
        E::AlreadyExists { .. } => "already_exists",
        E::PermissionDenied { .. } => "permission",
        E::Unauthenticated { .. } => "unauthenticated",
        E::InvalidPath { .. } => "invalid_path",
        E::NotSupported { .. } | E::NotImplemented { .. } => "not_supported",
        // What survives object_store's retries: throttling, 5xx, timeouts,
        // connection failures, or a local I/O error.
        E::Generic { .. } => "transient",
        _ => "other",
    }
}

async fn timed<T>(
    backend: &'static str,
    operation: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    let result = fut.await;
    metrics::storage_op(
        backend,
        operation,
        started.elapsed(),
        result.as_ref().err().map(error_kind),
    );
    result
}

#[async_trait]
impl ObjectStore for InstrumentedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        timed(
            self.backend,
            "put",
            self.inner.put_opts(location, payload, opts),
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let upload = timed(
            self.backend,
            "create_multipart",
            self.inner.put_multipart_opts(location, opts),
        )
        .await?;
        Ok(Box::new(InstrumentedUpload {
            inner: Arc::new(tokio::sync::Mutex::new(upload)),
            backend: self.backend,
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let operation = if options.head { "head" } else { "get" };
        timed(
            self.backend,
            operation,
            self.inner.get_opts(location, options),
        )
        .await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        timed(self.backend, "get", self.inner.get_ranges(location, ranges)).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let backend = self.backend;
        let mut started = Instant::now();
        self.inner
            .delete_stream(locations)
            .map(move |result| {
                metrics::storage_op(
                    backend,
                    "delete",
                    started.elapsed(),
                    result.as_ref().err().map(error_kind),
                );
                started = Instant::now();
                result
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        timed_listing(self.backend, self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        timed_listing(self.backend, self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        timed(self.backend, "list", self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        timed(
            self.backend,
            "copy",
            self.inner.copy_opts(from, to, options),
        )
        .await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        // Forwarded, not left to the trait's copy + delete default: the
        // local file system renames atomically.
        timed(
            self.backend,
            "rename",
            self.inner.rename_opts(from, to, options),
        )
        .await
    }
}

/// A listing is timed from the first poll to its end (or its first error),
/// as one `list` operation.
fn timed_listing(
    backend: &'static str,
    inner: BoxStream<'static, Result<ObjectMeta>>,
) -> BoxStream<'static, Result<ObjectMeta>> {
    struct State {
        inner: BoxStream<'static, Result<ObjectMeta>>,
        started: Option<Instant>,
        done: bool,
    }
    futures::stream::unfold(
        State {
            inner,
            started: None,
            done: false,
        },
        move |mut state| async move {
            if state.done {
                return None;
            }
            let started = *state.started.get_or_insert_with(Instant::now);
            match state.inner.next().await {
                Some(Ok(meta)) => Some((Ok(meta), state)),
                Some(Err(e)) => {
                    metrics::storage_op(backend, "list", started.elapsed(), Some(error_kind(&e)));
                    state.done = true;
                    Some((Err(e), state))
                }
                None => {
                    metrics::storage_op(backend, "list", started.elapsed(), None);
                    None
                }
            }
        },
    )
    .boxed()
}

/// A multipart upload whose parts, completion and abort are timed.
///
/// An abort that fails (the store is unreachable right then) is retried in
/// the background with backoff, so a store outage during an upload does not
/// leave its parts behind once the store is back.
#[derive(Debug)]
struct InstrumentedUpload {
    inner: Arc<tokio::sync::Mutex<Box<dyn MultipartUpload>>>,
    backend: &'static str,
}

/// How long a failed abort keeps being retried in the background.
const ABORT_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

#[async_trait]
impl MultipartUpload for InstrumentedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let backend = self.backend;
        // `put_part` is never called while `complete` or `abort` holds the
        // lock (they take `&mut self` too), so it is free.
        let part = match self.inner.try_lock() {
            Ok(mut upload) => upload.put_part(data),
            Err(_) => {
                return futures::future::ready(Err(object_store::Error::Generic {
                    store: "bucketftp",
                    source: "multipart upload busy".into(),
                }))
                .boxed()
            }
        };
        async move {
            let result = timed(backend, "put_part", part).await;
            if result.is_ok() {
                metrics::part_uploaded();
            }
            result
        }
        .boxed()
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let mut upload = self.inner.lock().await;
        timed(self.backend, "complete", upload.complete()).await
    }

    async fn abort(&mut self) -> Result<()> {
        let first = {
            let mut upload = self.inner.lock().await;
            timed(self.backend, "abort", upload.abort()).await
        };
        if let Err(e) = &first {
            tracing::warn!(cause = %e, "aborting a multipart upload failed; retrying in the background");
            let (inner, backend) = (self.inner.clone(), self.backend);
            tokio::spawn(async move {
                let started = Instant::now();
                let mut delay = std::time::Duration::from_secs(1);
                while started.elapsed() < ABORT_RETRY_FOR {
                    tokio::time::sleep(delay).await;
                    let mut upload = inner.lock().await;
                    match timed(backend, "abort", upload.abort()).await {
                        Ok(()) => {
                            tracing::info!("multipart upload aborted after retrying");
                            return;
                        }
                        Err(_) => delay = (delay * 2).min(std::time::Duration::from_secs(10)),
                    }
                }
                tracing::error!("gave up aborting a multipart upload: its parts remain until the bucket's lifecycle rule removes them");
            });
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    fn count(operation: &str, outcome: &str) -> u64 {
        prometheus::gather()
            .iter()
            .filter(|f| f.name() == "bucketftp_storage_operation_duration_seconds")
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| {
                let labels: Vec<(&str, &str)> = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                labels.contains(&("backend", "unit-test"))
                    && labels.contains(&("operation", operation))
                    && labels.contains(&("outcome", outcome))
            })
            .map(|m| m.get_histogram().get_sample_count())
            .sum()
    }

    #[tokio::test]
    async fn every_operation_is_timed_and_errors_are_counted() {
        metrics::init();
        let store = InstrumentedStore::new(Arc::new(InMemory::new()), "unit-test");
        let a = Path::from("a");
        store
            .put(&a, Bytes::from_static(b"x").into())
            .await
            .unwrap();
        store.head(&a).await.unwrap();
        store.get(&a).await.unwrap();
        assert!(store.head(&Path::from("missing")).await.is_err());
        let _: Vec<_> = store.list(None).collect().await;
        store.copy(&a, &Path::from("b")).await.unwrap();
        store.delete(&a).await.unwrap();
        let mut upload = store.put_multipart(&Path::from("m")).await.unwrap();
        upload
            .put_part(Bytes::from_static(b"p").into())
            .await
            .unwrap();
        upload.complete().await.unwrap();
        for op in [
            "put", "head", "get", "list", "copy", "delete", "put_part", "complete",
        ] {
            assert!(count(op, "success") >= 1, "{op} not timed");
        }
        assert!(count("head", "error") >= 1);
    }
}
