//! Streaming uploads: client bytes → object, all or nothing.
//!
//! Bytes are gathered into parts of `part_size`. A file that fits in one part
//! becomes a single PUT (one request, which matters for thousands of small
//! files); anything larger becomes a multipart upload with at most
//! `concurrency` parts in flight or filling, each paid for from the process's
//! [`MemoryBudget`], so memory stays below `concurrency × part_size` (plus
//! 1 MiB of read buffers) whatever the file size, and all uploads together
//! stay within the budget. The object appears
//! only when the multipart upload (or the PUT) completes, and every failure
//! path — client gone, back-end error, shutdown, or the future being dropped —
//! aborts the multipart upload so no orphaned parts remain.
//!
//! Every byte written (the kept head of a REST/APPE included) also goes
//! through [`DigestPipe`], so the SHA-256 and CRC-32 of the whole object
//! are known at commit: a single PUT carries them as user metadata; a
//! multipart upload hands them to the store at completion through
//! [`CompletionAttributes`] (honoured on `file://`, see
//! [`crate::local_attributes`]). (On `file://` an upload over plain TCP does
//! not come here: it is spliced into its file, see [`super::spliced`].)
//! Except on `file://`: there a multipart
//! upload stops hashing SHA-256 once it goes multipart and the store
//! computes it after the commit ([`DeferredSha256`]), because a disk takes
//! bytes faster than one core hashes them. The commit is also the one place
//! an upload event is emitted ([`crate::events`]): after the store confirmed
//! it (and, when deferred, once its SHA-256 is known), never for an aborted
//! or failed upload.

use crate::events::{Events, ObjectCreated};
use crate::integrity::{ContentDigests, ContentTypes, DigestPipe};
use crate::local_attributes::{CompletionAttributes, DeferredSha256};
use crate::memory_budget::{MemoryBudget, Reservation};
use crate::read_buffers;
use crate::transfers::{SessionContext, TransferGuard};
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How uploads are cut into parts.
#[derive(Debug, Clone)]
pub(crate) struct UploadSettings {
    /// Bytes per multipart part (≥ 5 MiB for S3, except the last).
    pub part_size: usize,
    /// Most parts uploaded concurrently while the next one fills; fewer
    /// when the memory budget has no more to give.
    pub concurrency: usize,
    /// Where part buffers are paid from.
    pub budget: Arc<MemoryBudget>,
    /// A data connection silent this long is treated as dead.
    pub idle_timeout: Duration,
    /// Storage class for new objects (`STANDARD_IA`, `NEARLINE`, `Cool`, …),
    /// passed to the store as is; `None` = the bucket's default.
    pub storage_class: Option<String>,
    /// Whether new objects get a `Content-Type` from their name.
    pub content_types: ContentTypes,
    /// Whether uploads compute and store SHA-256 (CRC-32 always).
    pub sha256: bool,
    /// Whether an upload larger than a part leaves its SHA-256 to the
    /// store, which computes it after completion (`file://`, see
    /// [`crate::local_attributes::DeferredSha256`]). Set per store.
    pub defer_sha256: bool,
    /// Where upload events go (`None`: no webhook configured).
    pub events: Option<Events>,
}

impl UploadSettings {
    /// Attributes every new object named `key` gets before its content is
    /// known.
    pub(crate) fn attributes(&self, key: &ObjectPath) -> object_store::Attributes {
        let mut attributes = object_store::Attributes::new();
        if let Some(class) = &self.storage_class {
            attributes.insert(object_store::Attribute::StorageClass, class.clone().into());
        }
        if let Some(mime) = self.content_types.for_key(key.as_ref()) {
            attributes.insert(object_store::Attribute::ContentType, mime.into());
        }
        attributes
    }
}

/// Where an upload goes and on whose behalf (for its event).
#[derive(Debug, Clone)]
pub(crate) struct UploadTarget {
    pub store: Arc<dyn ObjectStore>,
    /// The object's key.
    pub key: ObjectPath,
    /// The store's URL without credentials.
    pub store_url: String,
    /// The login name.
    pub user: String,
}

/// Below this much spare room, the buffer is handed on as one chunk and
/// reads go into another ([`crate::read_buffers`]). Reads are gathered in
/// place until then: a client that sends one byte per TCP segment would
/// otherwise make every byte its own chunk (~116 bytes of bookkeeping
/// each), so memory per upload depends on its part size, never on how the
/// client segments its data.
const MIN_READ: usize = 16 * 1024;

/// Why an upload did not complete (it left nothing behind in every case).
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Reading from the client's data connection failed, or the commit rule
    /// cut it ([`super::commit_rule`]: ABOR, client gone, idle, shutdown).
    #[error("data connection failed")]
    Client(#[source] std::io::Error),
    /// Shutdown's grace period ended while the store was being written.
    #[error("upload cut by server shutdown")]
    Shutdown,
    /// The object store failed.
    #[error("storage failed")]
    Store(#[source] object_store::Error),
    /// Reading the existing object's head (for REST/APPE) failed.
    #[error("reading the existing object failed")]
    Existing(#[source] object_store::Error),
}

/// Client failures are 426; shutdown passes (450); the store's own
/// failures are classed by [`super::reply_codes`].
impl From<UploadError> for unftp_core::storage::Error {
    fn from(err: UploadError) -> Self {
        use unftp_core::storage::ErrorKind;
        let kind = match &err {
            UploadError::Client(_) => ErrorKind::ConnectionClosed,
            UploadError::Shutdown => ErrorKind::TransientFileNotAvailable,
            UploadError::Store(e) | UploadError::Existing(e) => super::reply_codes::kind_for(e),
        };
        Self::new(kind, err)
    }
}

/// The runtime shuts down only when the server does.
impl From<crate::integrity::DigestCut> for UploadError {
    fn from(_: crate::integrity::DigestCut) -> Self {
        UploadError::Shutdown
    }
}

/// Where the bytes go: a list of chunks until they outgrow one part, then a
/// multipart upload. Chunks are handed on as they were read (`Bytes` are
/// reference-counted), so no byte is copied between the socket and the
/// store client.
///
/// Memory: a multipart upload keeps at most `parts` parts in flight or
/// filling (`wait_for_capacity(parts)` before each write), and `memory`
/// pays for exactly that many from the budget. `parts` starts at one (the
/// base reservation the upload was admitted with, never given back), grows
/// towards `concurrency` while the budget has parts free, and shrinks again
/// while a new transfer waits for one.
struct PartSink {
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    settings: UploadSettings,
    state: Option<SinkState>,
    /// Filled with the digests just before a multipart upload completes.
    late: CompletionAttributes,
    /// The budget this upload holds: its base reservation plus one part per
    /// part beyond the first.
    memory: Reservation,
    /// Parts `memory` pays for.
    parts: usize,
    /// Set once the upload went multipart with its SHA-256 left to the
    /// store: the digest to wait for.
    deferred: Option<DeferredSha256>,
}

enum SinkState {
    /// Chunks and their total length, all within one part.
    Buffering(Vec<Bytes>, usize),
    Multipart(WriteMultipart),
}

impl PartSink {
    fn new(
        store: Arc<dyn ObjectStore>,
        key: ObjectPath,
        settings: UploadSettings,
        memory: Reservation,
    ) -> Self {
        Self {
            store,
            key,
            settings,
            state: Some(SinkState::Buffering(Vec::new(), 0)),
            late: CompletionAttributes::default(),
            memory,
            parts: 1,
            deferred: None,
        }
    }

    async fn write(&mut self, data: Bytes) -> Result<(), object_store::Error> {
        match self.state.take() {
            Some(SinkState::Buffering(mut chunks, len))
                if len + data.len() <= self.settings.part_size =>
            {
                let len = len + data.len();
                chunks.push(data);
                self.state = Some(SinkState::Buffering(chunks, len));
                Ok(())
            }
            Some(SinkState::Buffering(chunks, _)) => {
                let mut options = object_store::PutMultipartOptions {
                    attributes: self.settings.attributes(&self.key),
                    ..Default::default()
                };
                options.extensions.insert(self.late.clone());
                if self.settings.sha256 && self.settings.defer_sha256 {
                    let deferred = DeferredSha256::default();
                    options.extensions.insert(deferred.clone());
                    self.deferred = Some(deferred);
                }
                let upload = self.store.put_multipart_opts(&self.key, options).await?;
                crate::metrics::multipart_started();
                let mut writer =
                    WriteMultipart::new_with_chunk_size(upload, self.settings.part_size);
                for chunk in chunks {
                    writer.put(chunk);
                }
                self.state = Some(SinkState::Multipart(writer));
                self.write_multipart(data).await
            }
            Some(SinkState::Multipart(writer)) => {
                self.state = Some(SinkState::Multipart(writer));
                self.write_multipart(data).await
            }
            None => Ok(()),
        }
    }

    async fn write_multipart(&mut self, data: Bytes) -> Result<(), object_store::Error> {
        if let Some(SinkState::Multipart(writer)) = self.state.as_mut() {
            let part = self.settings.part_size;
            let budget = &self.settings.budget;
            if self.parts > 1 && budget.contended() {
                // A new transfer waits for its first part: give one of
                // ours back as soon as it is no longer in flight.
                writer.wait_for_capacity(self.parts - 1).await?;
                if self.memory.release(part) {
                    self.parts -= 1;
                }
            } else if self.parts < self.settings.concurrency {
                if let Some(more) = budget.try_reserve(part) {
                    self.memory.merge(more);
                    self.parts += 1;
                }
            }
            writer.wait_for_capacity(self.parts).await?;
            writer.put(data);
        }
        Ok(())
    }

    /// Commits the object with its digests as user metadata.
    async fn finish(mut self, digests: &ContentDigests) -> Result<(), object_store::Error> {
        match self.state.take() {
            Some(SinkState::Buffering(chunks, _)) => {
                let mut attributes = self.settings.attributes(&self.key);
                digests.add_to(&mut attributes);
                self.store
                    .put_opts(
                        &self.key,
                        PutPayload::from_iter(chunks),
                        object_store::PutOptions {
                            attributes,
                            ..Default::default()
                        },
                    )
                    .await?;
            }
            Some(SinkState::Multipart(writer)) => {
                let mut attributes = object_store::Attributes::new();
                digests.add_to(&mut attributes);
                self.late.set(attributes);
                writer.finish().await?;
            }
            None => {}
        }
        Ok(())
    }

    async fn abort(mut self) {
        if let Some(SinkState::Multipart(writer)) = self.state.take() {
            if let Err(e) = writer.abort().await {
                tracing::error!(key = %self.key, cause = %e, "could not abort multipart upload; parts may remain until the bucket's lifecycle rule removes them");
            }
        }
    }
}

impl Drop for PartSink {
    /// The upload future was dropped mid-way (its task aborted): abort the
    /// multipart upload in the background rather than leave parts behind.
    fn drop(&mut self) {
        if let Some(SinkState::Multipart(writer)) = self.state.take() {
            let key = self.key.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(e) = writer.abort().await {
                        tracing::error!(%key, cause = %e, "could not abort dropped multipart upload");
                    }
                });
            }
        }
    }
}

/// Uploads `existing` (bytes kept from the current object for REST/APPE)
/// followed by everything the client sends, then commits — or aborts.
/// End-of-file on `input` is the end of a complete file: the session reads
/// the client through [`super::commit_rule::UploadInput`], which ends in an
/// error instead when the upload must not be committed. After the commit
/// (only then) the upload event is queued. `memory` is the upload's base
/// reservation ([`crate::memory_budget::part_reservation`]), held until it
/// ends.
pub(crate) async fn upload<R>(
    target: UploadTarget,
    existing: Option<BoxStream<'static, object_store::Result<Bytes>>>,
    mut input: R,
    settings: UploadSettings,
    memory: Reservation,
    session: &SessionContext,
    guard: &TransferGuard,
) -> Result<ContentDigests, UploadError>
where
    R: AsyncRead + Unpin,
{
    let command = if existing.is_some() { "APPE" } else { "STOR" };
    let _recycling = read_buffers::uploading();
    let events = settings.events.clone();
    let mut digests = DigestPipe::new(settings.sha256, settings.part_size);
    let mut sink = PartSink::new(target.store.clone(), target.key.clone(), settings, memory);
    let result: Result<ContentDigests, UploadError> = async {
        if let Some(mut head) = existing {
            while let Some(chunk) = head.next().await {
                let chunk = chunk.map_err(UploadError::Existing)?;
                write(&mut digests, &mut sink, chunk).await?;
            }
        }
        let mut buf = read_buffers::take();
        loop {
            let n = input
                .read_buf(&mut buf)
                .await
                .map_err(UploadError::Client)?;
            if n == 0 {
                break;
            }
            if buf.capacity() - buf.len() >= MIN_READ {
                continue;
            }
            let chunk = read_buffers::freeze(std::mem::replace(&mut buf, read_buffers::take()));
            tokio::select! {
                biased;
                _ = guard.cancelled() => return Err(UploadError::Shutdown),
                written = write(&mut digests, &mut sink, chunk) => written?,
            }
        }
        if !buf.is_empty() {
            let chunk = read_buffers::freeze(buf);
            tokio::select! {
                biased;
                _ = guard.cancelled() => return Err(UploadError::Shutdown),
                written = write(&mut digests, &mut sink, chunk) => written?,
            }
        }
        Ok(digests.finish().await?)
    }
    .await;
    match result {
        Ok(digests) => {
            let deferred = sink.deferred.clone();
            sink.finish(&digests).await.map_err(UploadError::Store)?;
            let sha256 = digests.sha256.clone();
            announce(
                events,
                target,
                session,
                command,
                digests.size,
                sha256,
                deferred,
            );
            Ok(digests)
        }
        Err(e) => {
            sink.abort().await;
            Err(e)
        }
    }
}

/// Queues the event of an upload committed as `target` (`size` bytes, its
/// SHA-256 known now or, when `deferred`, once the store has it).
pub(crate) fn announce(
    events: Option<Events>,
    target: UploadTarget,
    session: &SessionContext,
    command: &'static str,
    size: u64,
    sha256: Option<String>,
    deferred: Option<DeferredSha256>,
) {
    let Some(events) = events else { return };
    let event = ObjectCreated {
        store_url: target.store_url,
        key: target.key.to_string(),
        size,
        sha256,
        user: target.user,
        client: session.peer,
        session: session.id,
        command,
    };
    match deferred {
        // The event carries the SHA-256: it goes once the store has it (the
        // client has its 226 meanwhile).
        Some(deferred) => drop(tokio::spawn(async move {
            let sha256 = deferred.digest().await;
            events.object_created(ObjectCreated { sha256, ..event });
        })),
        None => events.object_created(event),
    }
}

/// Hashes `chunk` and writes it; once the upload went multipart with its
/// SHA-256 left to the store, hashing goes on with CRC-32 only.
async fn write(
    digests: &mut DigestPipe,
    sink: &mut PartSink,
    chunk: Bytes,
) -> Result<(), UploadError> {
    digests.update(chunk.clone()).await?;
    sink.write(chunk).await.map_err(UploadError::Store)?;
    if sink.deferred.is_some() {
        digests.stop_sha256().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory_budget::part_reservation;
    use crate::metrics::Direction;
    use crate::transfers::Transfers;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    const PART: usize = 5 << 20;

    #[tokio::test]
    async fn an_upload_with_one_part_of_budget_still_finishes() {
        // Room for the base reservation only: parts go one at a time.
        let budget = MemoryBudget::new(part_reservation(PART) as u64, Duration::from_secs(1));
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let settings = UploadSettings {
            part_size: PART,
            concurrency: 4,
            budget: budget.clone(),
            idle_timeout: Duration::from_secs(30),
            storage_class: None,
            content_types: crate::integrity::ContentTypes::None,
            sha256: true,
            defer_sha256: false,
            events: None,
        };
        let data: Vec<u8> = (0..3 * PART + 99).map(|i| (i % 253) as u8).collect();
        let memory = budget
            .reserve(part_reservation(PART), std::future::pending())
            .await
            .unwrap();
        let target = UploadTarget {
            store: store.clone(),
            key: ObjectPath::from("up.bin"),
            store_url: "memory://".into(),
            user: "alice".into(),
        };
        let transfers = Transfers::new(None);
        let guard = transfers.begin(Direction::Upload).unwrap();
        let session = SessionContext::detached();
        let committed = upload(target, None, &data[..], settings, memory, &session, &guard)
            .await
            .unwrap();
        assert_eq!(committed.size, data.len() as u64);
        let stored = store.get(&ObjectPath::from("up.bin")).await.unwrap();
        assert_eq!(stored.bytes().await.unwrap(), data);
        assert_eq!(budget.in_use(), 0, "everything given back");
    }
}
