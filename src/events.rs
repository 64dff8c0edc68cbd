//! Upload events: one CloudEvents 1.0 JSON document POSTed to a webhook for
//! every committed upload.
//!
//! The event is queued by the upload's commit ([`crate::backend::upload`]),
//! after the store confirmed the object and never for an aborted or failed
//! upload. Queueing never waits: the queue is bounded
//! (`events.queue_size`), and an event that finds it full is dropped,
//! counted (`bucketftp_events_dropped_total{reason="queue_full"}`) and
//! logged, so a slow or dead receiver can neither slow nor fail an upload,
//! nor grow memory without bound.
//!
//! Delivery guarantees:
//! - **At least once** while the process runs: an event is retried with
//!   exponential backoff (100 ms doubling to 30 s) until the receiver answers
//!   2xx or `events.retry_for` has passed. A POST whose answer was lost is
//!   sent again, so receivers deduplicate by the event `id`. Events still
//!   queued when the process stops after its shutdown grace (or crashes) are
//!   lost: the queue lives in memory.
//! - **In commit order**: one sender delivers one event at a time, so the
//!   receiver sees them in the order the uploads committed in this process
//!   (an event being retried holds back the ones behind it). Across several
//!   gateway replicas there is no order.
//! - A 4xx answer other than 408/429 is the receiver refusing the event: it
//!   is dropped at once (`reason="rejected"`), not retried.

use crate::config::EventsConfig;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// CloudEvents `type` of an upload event.
pub(crate) const OBJECT_CREATED: &str = "dev.bucketftp.object.created";
/// First retry delay.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Longest delay between two attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Why the event sender could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The HTTP client could not be built (TLS roots).
    #[error("cannot build the webhook HTTP client")]
    Client(#[source] reqwest::Error),
}

/// A committed upload, as the event's `data` reports it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ObjectCreated {
    /// The store's URL, credentials removed.
    pub store_url: String,
    /// The object's full key in the store.
    pub key: String,
    /// Bytes in the object.
    pub size: u64,
    /// SHA-256 of the object (64 hex digits); `null` when
    /// `storage.upload_sha256 = false`.
    pub sha256: Option<String>,
    /// The FTP login.
    pub user: String,
    /// The client's address.
    pub client: SocketAddr,
    /// The FTP session number (as in the audit log).
    pub session: u64,
    /// `STOR` or `APPE` (also REST+STOR).
    pub command: &'static str,
}

/// A CloudEvents 1.0 envelope (structured content mode).
#[derive(Debug, Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    source: &'a str,
    id: String,
    time: String,
    subject: &'a str,
    datacontenttype: &'static str,
    data: &'a ObjectCreated,
}

impl ObjectCreated {
    /// The JSON document POSTed for this upload.
    fn to_cloud_event(&self) -> Vec<u8> {
        let event = CloudEvent {
            specversion: "1.0",
            kind: OBJECT_CREATED,
            source: &self.store_url,
            id: random_uuid(),
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            subject: &self.key,
            datacontenttype: "application/json",
            data: self,
        };
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_vec(&event).unwrap_or_default()
    }
}

/// A random (version 4) UUID: the event `id` receivers deduplicate on.
fn random_uuid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The sending side of the event queue: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub(crate) struct Events {
    queue: mpsc::Sender<Vec<u8>>,
    depth: Arc<std::sync::atomic::AtomicUsize>,
}

impl Events {
    /// Starts the sender task posting to `url` (`config.webhook_url`,
    /// checked by the caller: without one there are no events) with the
    /// rest of `config`; must run inside a tokio runtime.
    pub(crate) fn start(url: &url::Url, config: &EventsConfig) -> Result<Self, EventsError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(EventsError::Client)?;
        let (queue, rx) = mpsc::channel(config.queue_size);
        let depth = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sender = Sender {
            client,
            url: url.clone(),
            auth: config
                .credential()
                .map(|(name, value)| (name.to_string(), value.to_string())),
            retry_for: config.retry_for,
            depth: depth.clone(),
        };
        tokio::spawn(sender.run(rx));
        Ok(Self { queue, depth })
    }

    /// Queues the event for a committed upload; drops it (counted, logged)
    /// when the queue is full.
    pub(crate) fn object_created(&self, event: ObjectCreated) {
        let body = event.to_cloud_event();
        // Counted before it is sent: the sender may take it at once.
        self.depth.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        crate::metrics::events_queued(1);
        match self.queue.try_send(body) {
            Ok(()) => {}
            Err(_) => {
                self.depth.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                crate::metrics::events_queued(-1);
                crate::metrics::event_dropped("queue_full");
                tracing::warn!(key = %event.key, session = event.session, "upload event dropped: the webhook queue is full");
            }
        }
    }

    /// Events queued or being delivered.
    pub(crate) fn pending(&self) -> usize {
        self.depth.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until every queued event was delivered or given up, at most
    /// `deadline` (used at shutdown, after the FTP sessions have drained).
    pub(crate) async fn drain(&self, deadline: Duration) {
        let started = Instant::now();
        while self.pending() > 0 && started.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.pending();
        if left > 0 {
            tracing::warn!(
                events = left,
                "upload events still undelivered at shutdown are lost"
            );
        }
    }
}

/// The one task that POSTs events, in order.
struct Sender {
    client: reqwest::Client,
    url: url::Url,
    auth: Option<(String, String)>,
    retry_for: Duration,
    depth: Arc<std::sync::atomic::AtomicUsize>,
}

/// What one POST attempt came to.
enum Attempt {
    Delivered,
    /// Worth retrying: connection failure, timeout, 5xx, 408, 429.
    Failed(String),
    /// The receiver refused this event (other 4xx).
    Rejected(u16),
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Vec<u8>>) {
        while let Some(body) = rx.recv().await {
            self.deliver(body).await;
            self.depth.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            crate::metrics::events_queued(-1);
        }
    }

    async fn deliver(&self, body: Vec<u8>) {
        let started = Instant::now();
        let mut delay = FIRST_RETRY;
        loop {
            match self.attempt(&body).await {
                Attempt::Delivered => {
                    crate::metrics::event_delivered();
                    return;
                }
                Attempt::Rejected(status) => {
                    crate::metrics::event_dropped("rejected");
                    tracing::warn!(status, "upload event dropped: the webhook refused it");
                    return;
                }
                Attempt::Failed(cause) => {
                    crate::metrics::event_attempt_failed();
                    if started.elapsed() + delay > self.retry_for {
                        crate::metrics::event_dropped("expired");
                        tracing::warn!(%cause, retried_for = ?started.elapsed(), "upload event dropped: the webhook did not accept it in time");
                        return;
                    }
                    tracing::debug!(%cause, ?delay, "webhook delivery failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            }
        }
    }

    async fn attempt(&self, body: &[u8]) -> Attempt {
        let mut request = self
            .client
            .post(self.url.clone())
            .header("content-type", "application/cloudevents+json")
            .body(body.to_vec());
        if let Some((name, value)) = &self.auth {
            request = request.header(name.as_str(), value.as_str());
        }
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    Attempt::Delivered
                } else if status.is_client_error() && status != 408 && status != 429 {
                    Attempt::Rejected(status.as_u16())
                } else {
                    Attempt::Failed(format!("HTTP {status}"))
                }
            }
            // reqwest's error text carries the URL but never the headers.
            Err(e) => Attempt::Failed(crate::errors::error_chain(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_event_shape() {
        let event = ObjectCreated {
            store_url: "s3://bucket/prefix".into(),
            key: "prefix/cams/a.jpg".into(),
            size: 3,
            sha256: Some("ab".repeat(32)),
            user: "cam".into(),
            client: "127.0.0.1:4000".parse().unwrap(),
            session: 7,
            command: "STOR",
        };
        let json: serde_json::Value = serde_json::from_slice(&event.to_cloud_event()).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], OBJECT_CREATED);
        assert_eq!(json["source"], "s3://bucket/prefix");
        assert_eq!(json["subject"], "prefix/cams/a.jpg");
        assert_eq!(json["data"]["size"], 3);
        assert_eq!(json["data"]["user"], "cam");
        assert_eq!(json["data"]["client"], "127.0.0.1:4000");
        let id = json["id"].as_str().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(chrono::DateTime::parse_from_rfc3339(json["time"].as_str().unwrap()).is_ok());
    }
}
