//! Streaming downloads: object → client, from any REST offset.

use crate::memory_budget::{MemoryBudget, Reservation};
use crate::transfers::TransferGuard;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use sync_wrapper::SyncStream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};
use tokio_util::io::{ReaderStream, StreamReader};

/// The reader libunftp copies to the data connection.
pub(crate) type DownloadReader = Box<dyn AsyncRead + Send + Sync + Unpin>;

/// Opens `key` at `offset` (a ranged GET when non-zero) as a byte stream.
pub(crate) async fn open_range(
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
pub(crate) struct DownloadSettings {
    /// Bytes per ranged GET (`storage.part_size`, the upload part size
    /// too); each is streamed, not held whole ([`READ_AHEAD`]).
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
pub(crate) async fn open_parallel(
    store: &Arc<dyn ObjectStore>,
    key: &ObjectPath,
    offset: u64,
    read_ahead: DownloadSettings,
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
    if first_end >= size {
        // All of it in one range: keep only what that range needs.
        let len = usize::try_from(first_end.saturating_sub(offset)).unwrap_or(usize::MAX);
        memory.shrink_to(len.saturating_add(crate::memory_budget::DATA_PATH_BYTES));
        let whole = async move { first.bytes().await }.boxed();
        return Ok(hold(futures::stream::once(whole).boxed(), memory));
    }
    // The base reservation was one part; a streamed range holds at most
    // its read-ahead, so the rest goes back to the budget now.
    memory.shrink_to(RANGE_BUFFER.saturating_add(crate::memory_budget::DATA_PATH_BYTES));
    let (store, key) = (store.clone(), key.clone());
    let fetch: FetchRange = Box::new(move |range| {
        let (store, key, etag) = (store.clone(), key.clone(), etag.clone());
        async move {
            let options = GetOptions {
                range: Some(GetRange::Bounded(range)),
                if_match: etag,
                ..GetOptions::default()
            };
            Ok(store.get_opts(&key, options).await?.into_stream())
        }
        .boxed()
    });
    let mut open = VecDeque::new();
    open.push_back(RangeBody::streaming(first.into_stream()));
    Ok(Ranges {
        fetch,
        next: first_end,
        size,
        open,
        range_len: chunk,
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
pub(crate) fn hold(
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

/// Bytes of a range body read ahead of the client, in user space. The rest
/// of a range waits in the kernel's socket buffers and, once they are full,
/// at the store (TCP flow control): collecting every 8 MiB range whole kept
/// 8 × 8 MiB buffers alive per download and made a single S3 RETR's peak
/// RSS higher than rclone's (issue #18). 1 MiB, then 512 KiB, then 256 KiB:
/// each halving cut a single S3 RETR's peak RSS (76, 56, 46 MiB) at the
/// same throughput, since the kernel's socket buffers keep the stream
/// moving (docs/benchmarks.md).
const READ_AHEAD: usize = 256 << 10;

/// What one open range may hold, paid from the budget: its read-ahead plus
/// the one frame that may cross it (hyper's read buffer, at most ~400 KiB).
const RANGE_BUFFER: usize = READ_AHEAD + (512 << 10);

/// Issues one ranged GET and answers with its body.
type FetchRange = Box<
    dyn Fn(
            std::ops::Range<u64>,
        ) -> BoxFuture<
            'static,
            object_store::Result<BoxStream<'static, object_store::Result<Bytes>>>,
        > + Send,
>;

/// One range of a download: its request, then its body, of which at most
/// [`READ_AHEAD`] bytes are read before the client asks for them.
struct RangeBody {
    opening: Option<
        BoxFuture<'static, object_store::Result<BoxStream<'static, object_store::Result<Bytes>>>>,
    >,
    body: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    queue: VecDeque<Bytes>,
    queued: usize,
    /// Bytes this range has delivered to the reader.
    delivered: u64,
    ended: bool,
    /// Kept until the range is the one being delivered, so an error stays
    /// in order with the bytes before it.
    failed: Option<object_store::Error>,
}

impl RangeBody {
    fn opening(
        request: BoxFuture<
            'static,
            object_store::Result<BoxStream<'static, object_store::Result<Bytes>>>,
        >,
    ) -> Self {
        Self {
            opening: Some(request),
            ..Self::streaming(futures::stream::empty().boxed())
        }
    }

    fn streaming(body: BoxStream<'static, object_store::Result<Bytes>>) -> Self {
        Self {
            opening: None,
            body: Some(body),
            queue: VecDeque::new(),
            queued: 0,
            delivered: 0,
            ended: false,
            failed: None,
        }
    }

    /// Moves the request on and reads the body until [`READ_AHEAD`] bytes
    /// wait, the body has nothing ready, or it ends. Every branch that
    /// stops on `Pending` has registered `cx`'s waker.
    fn fill(&mut self, cx: &mut Context<'_>) {
        if self.failed.is_some() || self.ended {
            return;
        }
        if let Some(request) = self.opening.as_mut() {
            match request.poll_unpin(cx) {
                Poll::Ready(Ok(body)) => {
                    self.opening = None;
                    self.body = Some(body);
                }
                Poll::Ready(Err(e)) => {
                    self.opening = None;
                    self.failed = Some(e);
                    return;
                }
                Poll::Pending => return,
            }
        }
        let Some(body) = self.body.as_mut() else {
            return;
        };
        while self.queued < READ_AHEAD {
            match body.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    self.queued += bytes.len();
                    self.queue.push_back(bytes);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.failed = Some(e);
                    self.body = None;
                    return;
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    self.body = None;
                    return;
                }
                Poll::Pending => return,
            }
        }
    }
}

/// The ranges of one download, open at once and delivered in order.
///
/// Memory: each open range holds at most [`RANGE_BUFFER`] bytes, a part of
/// that size paid for by `memory`; new ranges open only while
/// `open < parts`. `parts` starts at one (within the base reservation),
/// grows by [`MemoryBudget::try_reserve`] up to `target`, and gives parts
/// back while a new transfer waits for one. `target` starts at
/// [`INITIAL_RANGES`] and doubles, up to `max_ranges`, after each window of
/// `target` ranges in which the reader had to wait for the store (the next
/// bytes were not there when asked for) and that came [`GROWTH`] times
/// faster than the window before. So a download served faster with more
/// ranges gets more, one limited by its client holds no more open than it
/// can use, and one limited by the store stops growing when more ranges
/// stop helping.
struct Ranges {
    fetch: FetchRange,
    /// Start of the next range to request.
    next: u64,
    size: u64,
    /// Open ranges in object order; the front one is being delivered.
    open: VecDeque<RangeBody>,
    /// Bytes per ranged GET.
    range_len: u64,
    parts: usize,
    memory: Reservation,
    target: usize,
    read_ahead: DownloadSettings,
    window: Window,
    /// Bytes per second of the previous window.
    last_rate: f64,
}

/// Ranges delivered since the window began.
struct Window {
    started: std::time::Instant,
    ranges: usize,
    bytes: u64,
    /// The reader asked for bytes that had not arrived yet.
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
        let busy = self.open.len();
        if self.read_ahead.budget.contended() {
            if self.parts > 1 && busy < self.parts && self.memory.release(RANGE_BUFFER) {
                self.parts -= 1;
                self.target = self.target.min(self.parts).max(1);
            }
            return;
        }
        if busy >= self.parts && self.parts < self.target {
            if let Some(more) = self.read_ahead.budget.try_reserve(RANGE_BUFFER) {
                self.memory.merge(more);
                self.parts += 1;
            }
        }
    }

    /// Opens ranges while the parts held allow.
    fn issue(&mut self) {
        while self.next < self.size {
            self.adjust_parts();
            if self.open.len() >= self.parts.min(self.target) {
                break;
            }
            let end = self.next.saturating_add(self.range_len).min(self.size);
            self.open
                .push_back(RangeBody::opening((self.fetch)(self.next..end)));
            self.next = end;
        }
    }

    /// Counts a delivered range; at the end of a window, grows the target
    /// if the window was faster than the one before.
    fn measure(&mut self, bytes: u64) {
        self.window.ranges += 1;
        self.window.bytes += bytes;
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
        loop {
            self.issue();
            for range in self.open.iter_mut() {
                range.fill(cx);
            }
            let Some(head) = self.open.front_mut() else {
                return Poll::Ready(None);
            };
            if let Some(bytes) = head.queue.pop_front() {
                head.queued -= bytes.len();
                head.delivered += bytes.len() as u64;
                return Poll::Ready(Some(Ok(bytes)));
            }
            if let Some(e) = head.failed.take() {
                self.open.clear();
                self.next = self.size;
                return Poll::Ready(Some(Err(e)));
            }
            if !head.ended {
                self.window.waited_for_store = true;
                return Poll::Pending;
            }
            let delivered = head.delivered;
            self.open.pop_front();
            self.measure(delivered);
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
pub(crate) fn reader(
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

    /// Opens `key` from `offset` with up to 8 ranges of [`PART`] read
    /// ahead, the base reservation taken from `budget` first.
    async fn open_with(
        store: &Arc<dyn ObjectStore>,
        key: &ObjectPath,
        offset: u64,
        budget: &Arc<MemoryBudget>,
    ) -> BoxStream<'static, object_store::Result<Bytes>> {
        let memory = budget
            .reserve(part_reservation(PART), std::future::pending())
            .await
            .unwrap();
        let settings = DownloadSettings {
            chunk: PART as u64,
            max_ranges: 8,
            budget: budget.clone(),
        };
        open_parallel(store, key, offset, settings, memory)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_download_with_one_part_of_budget_still_finishes() {
        let (store, key, data) = object(4 * PART + 123).await;
        // Room for the base reservation only: no range can be read ahead.
        let budget = MemoryBudget::new(part_reservation(PART) as u64, Duration::from_secs(1));
        let stream = open_with(&store, &key, 0, &budget).await;
        assert_eq!(read_all(stream, &budget).await, data);
        assert_eq!(budget.in_use(), 0, "everything given back");
    }

    #[tokio::test]
    async fn a_download_reads_ahead_within_the_budget_from_any_offset() {
        let (store, key, data) = object(6 * PART + 7).await;
        let budget = MemoryBudget::new(64 << 20, Duration::from_secs(1));
        let stream = open_with(&store, &key, 1000, &budget).await;
        assert_eq!(read_all(stream, &budget).await, &data[1000..]);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn a_small_object_keeps_only_its_size() {
        let (store, key, data) = object(1000).await;
        let budget = MemoryBudget::new(64 << 20, Duration::from_secs(1));
        let stream = open_with(&store, &key, 0, &budget).await;
        assert!(
            budget.in_use()
                <= crate::memory_budget::DATA_PATH_BYTES + crate::memory_budget::GRANULE,
            "a 1000-byte object holds {} bytes of budget",
            budget.in_use()
        );
        assert_eq!(read_all(stream, &budget).await, data);
    }

    #[tokio::test]
    async fn open_ranges_read_ahead_a_bounded_number_of_bytes() {
        use std::sync::atomic::{AtomicU64, Ordering};
        const FRAME: usize = 64 << 10;
        const SIZE: u64 = 64 << 20;
        let pulled = Arc::new(AtomicU64::new(0));
        let counted = pulled.clone();
        // Each range's body arrives in 64 KiB frames and counts what was
        // taken from it, as a socket would.
        let fetch: FetchRange = Box::new(move |range: std::ops::Range<u64>| {
            let counted = counted.clone();
            async move {
                let frames = (range.end - range.start).div_ceil(FRAME as u64);
                let body = futures::stream::iter(0..frames).map(move |_| {
                    counted.fetch_add(FRAME as u64, Ordering::SeqCst);
                    Ok(Bytes::from(vec![7u8; FRAME]))
                });
                Ok(body.boxed())
            }
            .boxed()
        });
        let budget = MemoryBudget::new(64 << 20, Duration::from_secs(1));
        let memory = budget
            .reserve(RANGE_BUFFER, std::future::pending())
            .await
            .unwrap();
        let max_ranges = 8;
        let mut ranges = Ranges {
            fetch,
            next: 0,
            size: SIZE,
            open: VecDeque::new(),
            range_len: 8 << 20,
            parts: 1,
            memory,
            target: max_ranges,
            read_ahead: DownloadSettings {
                chunk: 8 << 20,
                max_ranges,
                budget: budget.clone(),
            },
            window: Window::new(),
            last_rate: 0.0,
        };
        let mut received = 0u64;
        while let Some(frame) = ranges.next().await {
            received += frame.unwrap().len() as u64;
            let ahead = pulled.load(Ordering::SeqCst) - received;
            assert!(
                ahead <= (max_ranges * (READ_AHEAD + FRAME)) as u64,
                "{ahead} bytes read ahead of the reader"
            );
        }
        assert_eq!(received, SIZE);
        assert_eq!(pulled.load(Ordering::SeqCst), SIZE);
    }
}
