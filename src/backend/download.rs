//! Streaming downloads: object → client, from any REST offset.

use crate::memory_budget::{MemoryBudget, Reservation};
use crate::transfers::TransferGuard;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{BoxStream, FuturesOrdered};
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

/// How a cloud download reads ahead.
#[derive(Debug, Clone)]
pub struct ReadAhead {
    /// Bytes per ranged GET (the upload part size).
    pub chunk: u64,
    /// Most ranged GETs in flight (`storage.download_concurrency`).
    pub max_ranges: usize,
    /// Where range buffers are paid from.
    pub budget: Arc<MemoryBudget>,
}

/// Opens a cloud object from `offset` as ranged GETs of `chunk` bytes,
/// several in flight, delivered in order: one GET stream is limited by a
/// single connection, where S3's own clients read several ranges in
/// parallel. How many run at once adapts ([`Ranges`]): it starts at two,
/// grows while the download gets faster for it, and never spends more of
/// the memory budget than it holds; `memory` is the download's base
/// reservation ([`crate::memory_budget::part_reservation`]).
///
/// The first range is requested blind and its answer stands in for a HEAD:
/// it carries the object's size and ETag, so an object within one chunk
/// (most small files) costs one request, not two, and keeps only its size
/// of the budget. Every later range is read with `If-Match` on that ETag,
/// so an object replaced mid-download fails the transfer instead of mixing
/// versions.
pub async fn open_parallel(
    store: &Arc<dyn ObjectStore>,
    key: &ObjectPath,
    offset: u64,
    read_ahead: ReadAhead,
    mut memory: Reservation,
) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
    let chunk = read_ahead.chunk;
    if read_ahead.max_ranges <= 1 || chunk == 0 {
        memory.shrink_to(crate::memory_budget::STREAM_RESERVATION);
        return Ok(hold(open_range(store, key, offset, None).await?, memory));
    }
    let first_options = GetOptions {
        range: Some(GetRange::Bounded(offset..offset.saturating_add(chunk))),
        ..GetOptions::default()
    };
    let first = match store.get_opts(key, first_options).await {
        Ok(first) => first,
        // A zero-byte object has no range to serve (416), and a store
        // that ignores ranges answers 200: a plain GET handles both.
        Err(e) if range_not_served(&e) => {
            memory.shrink_to(crate::memory_budget::STREAM_RESERVATION);
            return Ok(hold(open_range(store, key, offset, None).await?, memory));
        }
        Err(e) => return Err(e),
    };
    let (size, etag, first_end) = (first.meta.size, first.meta.e_tag.clone(), first.range.end);
    let first_part = async move { first.bytes().await }.boxed();
    if first_end >= size {
        // All of it in one range: keep only what that range needs.
        let len = usize::try_from(first_end.saturating_sub(offset)).unwrap_or(usize::MAX);
        memory.shrink_to(len.saturating_add(crate::memory_budget::DATA_PATH_BYTES));
        return Ok(hold(futures::stream::once(first_part).boxed(), memory));
    }
    let (store, key) = (store.clone(), key.clone());
    let fetch: FetchRange = Box::new(move |range| {
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
    });
    let mut in_flight = FuturesOrdered::new();
    in_flight.push_back(first_part);
    Ok(Ranges {
        fetch,
        next: first_end,
        size,
        in_flight,
        delivered: false,
        part_bytes: usize::try_from(chunk).unwrap_or(usize::MAX),
        parts: 1,
        memory,
        target: INITIAL_RANGES.min(read_ahead.max_ranges),
        read_ahead,
        window: Window::new(),
        last_rate: 0.0,
    }
    .boxed())
}

/// Keeps `memory` reserved for as long as `stream` lives.
pub fn hold(
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    memory: Reservation,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    stream
        .map(move |item| {
            let _held = &memory;
            item
        })
        .boxed()
}

/// Ranges a download starts with: two, so the next range is on its way
/// while one is written to the client, without paying for more before the
/// download has shown it gains from them.
const INITIAL_RANGES: usize = 2;

/// A download doubles its ranges when a window of ranges came at least this
/// much faster than the window before (single-stream gains per added 8 MiB
/// range were 8–30 % on s3s-fs, docs/benchmarks.md).
const GROWTH: f64 = 1.05;

/// Issues one ranged GET.
type FetchRange =
    Box<dyn Fn(std::ops::Range<u64>) -> BoxFuture<'static, object_store::Result<Bytes>> + Send>;

/// The ranges of one download, in flight and delivered in order.
///
/// Memory: every range buffer in flight, and the one the client is being
/// sent (`delivered`), is a part paid for by `memory`; new ranges are
/// issued only while `in_flight + delivered < parts`. `parts` starts at one
/// (the base reservation), grows by [`MemoryBudget::try_reserve`] up to
/// `target`, and gives parts back while a new transfer waits for one.
/// `target` starts at [`INITIAL_RANGES`] and doubles, up to `max_ranges`,
/// after each window of `target` ranges in which the reader
/// had to wait for the store (the next range was not there when asked for)
/// and that came [`GROWTH`] times faster than the window before. So a
/// download served faster with more ranges gets more, one limited by its
/// client (ranges are ready before they are asked for) holds no more
/// buffers than it can use, and one limited by the store stops growing when
/// more ranges stop helping.
struct Ranges {
    fetch: FetchRange,
    /// Start of the next range to request.
    next: u64,
    size: u64,
    in_flight: FuturesOrdered<BoxFuture<'static, object_store::Result<Bytes>>>,
    /// A range was handed to the reader and its buffer is alive; the
    /// reader asks for the next item only once it has sent all of it, and
    /// drops it when it receives the empty item [`Ranges::poll_next`]
    /// answers first.
    delivered: bool,
    part_bytes: usize,
    parts: usize,
    memory: Reservation,
    target: usize,
    read_ahead: ReadAhead,
    window: Window,
    /// Bytes per second of the previous window.
    last_rate: f64,
}

/// Ranges delivered since the window began.
struct Window {
    started: std::time::Instant,
    ranges: usize,
    bytes: u64,
    /// The reader asked for a range that had not arrived yet.
    waited_for_store: bool,
}

impl Window {
    fn new() -> Self {
        Self {
            started: std::time::Instant::now(),
            ranges: 0,
            bytes: 0,
            waited_for_store: false,
        }
    }
}

impl Ranges {
    /// Gives a part back to a waiting transfer, or takes one more when the
    /// target asks for it and the budget has one free.
    fn adjust_parts(&mut self) {
        let busy = self.in_flight.len() + usize::from(self.delivered);
        if self.read_ahead.budget.contended() {
            if self.parts > 1 && busy < self.parts && self.memory.release(self.part_bytes) {
                self.parts -= 1;
                self.target = self.target.min(self.parts).max(1);
            }
            return;
        }
        if busy >= self.parts && self.parts < self.target {
            if let Some(more) = self.read_ahead.budget.try_reserve(self.part_bytes) {
                self.memory.merge(more);
                self.parts += 1;
            }
        }
    }

    /// Issues ranges while the parts held allow.
    fn issue(&mut self) {
        while self.next < self.size {
            self.adjust_parts();
            let busy = self.in_flight.len() + usize::from(self.delivered);
            if busy >= self.parts.min(self.target) {
                break;
            }
            let end = self
                .next
                .saturating_add(self.part_bytes as u64)
                .min(self.size);
            self.in_flight.push_back((self.fetch)(self.next..end));
            self.next = end;
        }
    }

    /// Counts a delivered range; at the end of a window, grows the target
    /// if the window was faster than the one before.
    fn measure(&mut self, bytes: usize) {
        self.window.ranges += 1;
        self.window.bytes += bytes as u64;
        if self.window.ranges < self.target {
            return;
        }
        let seconds = self.window.started.elapsed().as_secs_f64().max(1e-6);
        let rate = self.window.bytes as f64 / seconds;
        if self.window.waited_for_store
            && rate > self.last_rate * GROWTH
            && self.parts >= self.target
            && self.target < self.read_ahead.max_ranges
        {
            self.target = (self.target * 2).min(self.read_ahead.max_ranges);
            tracing::debug!(
                ranges = self.target,
                mib_per_s = rate / f64::from(1 << 20),
                "download reads more ranges ahead"
            );
        }
        self.last_rate = rate;
        self.window = Window::new();
    }
}

impl Stream for Ranges {
    type Item = object_store::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.delivered {
            // Asked for more: the reader has sent the range it was given,
            // but tokio-util's StreamReader keeps that buffer until it
            // stores the next item. An empty item makes it drop the buffer
            // now (it skips empty items), before the next range is paid for.
            self.delivered = false;
            return Poll::Ready(Some(Ok(Bytes::new())));
        }
        self.issue();
        match self.in_flight.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                self.delivered = true;
                self.measure(bytes.len());
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Pending => {
                self.window.waited_for_store = true;
                Poll::Pending
            }
            other => other,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_budget::part_reservation;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;
    use std::time::Duration;

    const PART: usize = 5 << 20;

    async fn object(len: usize) -> (Arc<dyn ObjectStore>, ObjectPath, Vec<u8>) {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let key = ObjectPath::from("big.bin");
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        store.put(&key, data.clone().into()).await.unwrap();
        (store, key, data)
    }

    async fn read_all(
        stream: BoxStream<'static, object_store::Result<Bytes>>,
        budget: &MemoryBudget,
    ) -> Vec<u8> {
        let mut reader = StreamReader::new(stream.map_err(std::io::Error::other));
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            assert!(budget.in_use() <= budget.total());
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[tokio::test]
    async fn a_download_with_one_part_of_budget_still_finishes() {
        let (store, key, data) = object(4 * PART + 123).await;
        // Room for the base reservation only: no range can be read ahead.
        let budget = MemoryBudget::new(part_reservation(PART) as u64, Duration::from_secs(1));
        let memory = budget
            .reserve(part_reservation(PART), std::future::pending())
            .await
            .unwrap();
        let read_ahead = ReadAhead {
            chunk: PART as u64,
            max_ranges: 8,
            budget: budget.clone(),
        };
        let stream = open_parallel(&store, &key, 0, read_ahead, memory)
            .await
            .unwrap();
        assert_eq!(read_all(stream, &budget).await, data);
        assert_eq!(budget.in_use(), 0, "everything given back");
    }

    #[tokio::test]
    async fn a_download_reads_ahead_within_the_budget_from_any_offset() {
        let (store, key, data) = object(6 * PART + 7).await;
        let budget = MemoryBudget::new(64 << 20, Duration::from_secs(1));
        let memory = budget
            .reserve(part_reservation(PART), std::future::pending())
            .await
            .unwrap();
        let read_ahead = ReadAhead {
            chunk: PART as u64,
            max_ranges: 8,
            budget: budget.clone(),
        };
        let stream = open_parallel(&store, &key, 1000, read_ahead, memory)
            .await
            .unwrap();
        assert_eq!(read_all(stream, &budget).await, &data[1000..]);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_small_object_keeps_only_its_size() {
        let (store, key, data) = object(1000).await;
        let budget = MemoryBudget::new(64 << 20, Duration::from_secs(1));
        let memory = budget
            .reserve(part_reservation(PART), std::future::pending())
            .await
            .unwrap();
        let read_ahead = ReadAhead {
            chunk: PART as u64,
            max_ranges: 8,
            budget: budget.clone(),
        };
        let stream = open_parallel(&store, &key, 0, read_ahead, memory)
            .await
            .unwrap();
        assert!(
            budget.in_use()
                <= crate::memory_budget::DATA_PATH_BYTES + crate::memory_budget::GRANULE,
            "a 1000-byte object holds {} bytes of budget",
            budget.in_use()
        );
        assert_eq!(read_all(stream, &budget).await, data);
    }
}
