//! Streaming downloads: object → client, from any REST offset.

use crate::transfers::TransferGuard;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use sync_wrapper::SyncStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};
use tokio_util::io::{ReaderStream, StreamReader};

/// The reader libunftp copies to the data connection.
pub type DownloadReader = Box<dyn AsyncRead + Send + Sync + Unpin>;

/// Opens `key` at `offset` (a ranged GET when non-zero) as a byte stream.
pub async fn open_range(
    store: &Arc<dyn ObjectStore>,
    key: &ObjectPath,
    offset: u64,
    end: Option<u64>,
) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
    let range = match (offset, end) {
        (0, None) => None,
        (start, None) => Some(GetRange::Offset(start)),
        (start, Some(end)) => Some(GetRange::Bounded(start..end)),
    };
    let options = GetOptions {
        range,
        ..GetOptions::default()
    };
    let result = store.get_opts(key, options).await?;
    match result.payload {
        // A local file: read it in large blocks. object_store's own stream
        // reads 8 KiB per blocking-pool hand-off, which made a local RETR
        // ten times slower than vsftpd (docs/benchmarks.md).
        GetResultPayload::File(file, path) => {
            let range = result.range;
            let mut file = tokio::fs::File::from_std(file);
            file.seek(std::io::SeekFrom::Start(range.start))
                .await
                .map_err(|e| local_error(&path, e))?;
            let reader = file.take(range.end - range.start);
            Ok(ReaderStream::with_capacity(reader, LOCAL_READ)
                .map_err(move |e| local_error(&path, e))
                .boxed())
        }
        GetResultPayload::Stream(stream) => Ok(stream),
    }
}

/// Opens a cloud object from `offset` as `ahead` ranged GETs of `chunk`
/// bytes running at once, delivered in order: one GET stream is limited by
/// a single connection, where S3's own clients read several ranges in
/// parallel. Memory stays below `(ahead + 1) × chunk` per download.
///
/// The first range is requested blind and its answer stands in for a HEAD:
/// it carries the object's size and ETag, so an object within one chunk
/// (most small files) costs one request, not two. Every later range is
/// read with `If-Match` on that ETag, so an object replaced mid-download
/// fails the transfer instead of mixing versions.
pub async fn open_parallel(
    store: &Arc<dyn ObjectStore>,
    key: &ObjectPath,
    offset: u64,
    chunk: u64,
    ahead: usize,
) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
    if ahead <= 1 || chunk == 0 {
        return open_range(store, key, offset, None).await;
    }
    let first_options = GetOptions {
        range: Some(GetRange::Bounded(offset..offset.saturating_add(chunk))),
        ..GetOptions::default()
    };
    let first = match store.get_opts(key, first_options).await {
        Ok(first) => first,
        // A zero-byte object has no range to serve (416), and a store
        // that ignores ranges answers 200: a plain GET handles both.
        Err(e) if range_not_served(&e) => return open_range(store, key, offset, None).await,
        Err(e) => return Err(e),
    };
    let (size, etag, first_end) = (first.meta.size, first.meta.e_tag.clone(), first.range.end);
    let step = usize::try_from(chunk).unwrap_or(usize::MAX);
    let rest = (first_end..size)
        .step_by(step)
        .map(move |start| start..start.saturating_add(chunk).min(size));
    let (store, key) = (store.clone(), key.clone());
    let first_part = async move { first.bytes().await }.boxed();
    let parts = std::iter::once(first_part).chain(rest.map(move |range| {
        let (store, key, etag) = (store.clone(), key.clone(), etag.clone());
        async move {
            let options = GetOptions {
                range: Some(GetRange::Bounded(range)),
                if_match: etag,
                ..GetOptions::default()
            };
            store.get_opts(&key, options).await?.bytes().await
        }
        .boxed()
    }));
    Ok(futures::stream::iter(parts).buffered(ahead).boxed())
}

/// True when a ranged GET failed only because the range could not be
/// served: `416 Range Not Satisfiable` (the object is empty) or a `200`
/// where a `206` was due. object_store keeps neither as a variant of its
/// own (they arrive as `Generic` with the HTTP status in the message), so
/// the message is what there is to go on; the zero-byte conformance test
/// on every cloud emulator notices if it ever changes.
fn range_not_served(err: &object_store::Error) -> bool {
    if !matches!(err, object_store::Error::Generic { .. }) {
        return false;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        let text = e.to_string();
        if text.contains("416 Range Not Satisfiable") || text.contains("non-partial response") {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Bytes per read from a local file.
const LOCAL_READ: usize = 1 << 20;

fn local_error(path: &std::path::Path, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("reading {}: {e}", path.display()).into(),
    }
}

/// Wraps the object's byte stream as the `Sync` reader libunftp wants.
/// object_store's stream is `Send` but not `Sync`; `SyncStream` makes it so
/// by requiring `&mut` access, which a reader always has.
///
/// `on_finish(bytes, completed)` runs once when libunftp drops the reader:
/// `completed` is true only if the whole object was read without error.
pub fn reader(
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    guard: TransferGuard,
    on_finish: impl FnOnce(u64, bool) + Send + 'static,
) -> DownloadReader {
    let guarded = GuardedStream {
        inner: stream,
        guard,
        cancelled: false,
        bytes: 0,
        state: ReadState::Reading,
        on_finish: Some(Box::new(on_finish)),
    };
    Box::new(StreamReader::new(SyncStream::new(guarded)))
}

/// Holds the transfer's guard for as long as the client reads, counts the
/// bytes, and ends the stream with an error when shutdown cuts the transfer.
struct GuardedStream {
    inner: BoxStream<'static, object_store::Result<Bytes>>,
    guard: TransferGuard,
    cancelled: bool,
    bytes: u64,
    state: ReadState,
    on_finish: Option<Box<dyn FnOnce(u64, bool) + Send>>,
}

#[derive(PartialEq, Eq)]
enum ReadState {
    Reading,
    Done,
    Failed,
}

impl Drop for GuardedStream {
    fn drop(&mut self) {
        if let Some(f) = self.on_finish.take() {
            f(self.bytes, self.state == ReadState::Done);
        }
    }
}

impl Stream for GuardedStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.cancelled {
            return Poll::Ready(None);
        }
        if self.guard.is_cancelled() {
            self.cancelled = true;
            self.state = ReadState::Failed;
            return Poll::Ready(Some(Err(std::io::Error::other(
                "download cut by server shutdown",
            ))));
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                crate::metrics::bytes_sent(bytes.len());
                self.bytes += bytes.len() as u64;
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.state = ReadState::Failed;
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(None) => {
                if self.state == ReadState::Reading {
                    self.state = ReadState::Done;
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
