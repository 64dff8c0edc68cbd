//! bucketftp's own Prometheus metrics, in the process's default registry.
//!
//! The default registry is also where libunftp registers its `ftp_*`
//! metrics, so one `/metrics` handler serves both; [`render`] renames or
//! leaves out those of libunftp's that break Prometheus' naming rules
//! ([`LIBUNFTP_NAMES`]), so the whole exposition passes `promtool check
//! metrics`. Labels carry only bounded values (direction, outcome,
//! operation), never a path or a user name.

use prometheus::proto::MetricFamily;
use prometheus::{
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};
use std::sync::LazyLock;
use std::time::Duration;

/// Which way the bytes flow, for limits and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Client to store (STOR, APPE, STOU).
    Upload,
    /// Store to client (RETR).
    Download,
}

impl Direction {
    /// Bounded label for metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Direction::Upload => "upload",
            Direction::Download => "download",
        }
    }
}

/// Buckets for transfer sizes: 1 KiB … 16 GiB.
const SIZE_BUCKETS: [f64; 9] = [
    1024.0,
    16384.0,
    262144.0,
    1048576.0,
    16777216.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
    17179869184.0,
];

/// Buckets for transfer durations: 10 ms … 1 h.
const TRANSFER_SECONDS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0];

/// Buckets for single storage requests: 1 ms … 60 s.
const STORAGE_SECONDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 60.0,
];

// The `register_*!` macros fail only for an invalid or duplicate metric
// name; every name below is a constant registered exactly once (LazyLock),
// so `expect` documents an impossible state.
macro_rules! lazy {
    ($name:ident: $ty:ty = $init:expr) => {
        static $name: LazyLock<$ty> =
            LazyLock::new(|| $init.expect("metric names are constant and registered once"));
    };
}

lazy!(SESSIONS: IntGauge = register_int_gauge!("bucketftp_sessions_active", "FTP control connections currently open"));
lazy!(SESSIONS_REJECTED: IntCounterVec = register_int_counter_vec!("bucketftp_sessions_rejected_total", "Connections refused with 421, by reason", &["reason"]));
lazy!(LOGINS: IntCounterVec = register_int_counter_vec!("bucketftp_logins_total", "Login attempts by outcome", &["outcome"]));
lazy!(LOCKOUT_FAILURES: IntCounter = register_int_counter!("bucketftp_login_failures_counted_total", "Failed logins counted towards lockout"));
lazy!(BYTES_RECEIVED: IntCounter = register_int_counter!("bucketftp_received_bytes_total", "Bytes received from FTP clients on data connections"));
lazy!(BYTES_SENT: IntCounter = register_int_counter!("bucketftp_sent_bytes_total", "Bytes sent to FTP clients on data connections"));
lazy!(TRANSFERS_ACTIVE: IntGaugeVec = register_int_gauge_vec!("bucketftp_transfers_in_flight", "Transfers running now, by direction", &["direction"]));
lazy!(TRANSFERS: IntCounterVec = register_int_counter_vec!("bucketftp_transfers_total", "Finished transfers by direction and outcome", &["direction", "outcome"]));
lazy!(TRANSFER_SECONDS_H: HistogramVec = register_histogram_vec!("bucketftp_transfer_duration_seconds", "Duration of finished transfers", &["direction", "outcome"], TRANSFER_SECONDS.to_vec()));
lazy!(TRANSFER_BYTES_H: HistogramVec = register_histogram_vec!("bucketftp_transfer_size_bytes", "Size of finished transfers", &["direction", "outcome"], SIZE_BUCKETS.to_vec()));
lazy!(MULTIPART: IntCounter = register_int_counter!("bucketftp_multipart_uploads_total", "Uploads that became multipart uploads"));
lazy!(PARTS: IntCounter = register_int_counter!("bucketftp_multipart_parts_total", "Multipart parts uploaded"));
lazy!(SPLICED: IntCounter = register_int_counter!("bucketftp_spliced_uploads_total", "Uploads spliced from the data socket into a file (file:// over plain TCP)"));
lazy!(STORAGE_SECONDS_H: HistogramVec = register_histogram_vec!("bucketftp_storage_operation_duration_seconds", "Latency of object-store requests by operation and outcome", &["backend", "operation", "outcome"], STORAGE_SECONDS.to_vec()));
lazy!(STORAGE_ERRORS: IntCounterVec = register_int_counter_vec!("bucketftp_storage_errors_total", "Object-store errors by operation and kind", &["backend", "operation", "kind"]));
lazy!(EVENTS_QUEUED: IntGauge = register_int_gauge!("bucketftp_events_queue_depth", "Upload events waiting for or in webhook delivery"));
lazy!(EVENTS_DELIVERED: IntCounter = register_int_counter!("bucketftp_events_delivered_total", "Upload events the webhook accepted (2xx)"));
lazy!(EVENTS_FAILED: IntCounter = register_int_counter!("bucketftp_events_delivery_failures_total", "Webhook delivery attempts that failed and will be retried"));
lazy!(EVENTS_DROPPED: IntCounterVec = register_int_counter_vec!("bucketftp_events_dropped_total", "Upload events never delivered, by reason (queue_full, expired, rejected)", &["reason"]));
lazy!(BUDGET_TOTAL: IntGauge = register_int_gauge!("bucketftp_memory_budget_bytes", "Bytes of transfer buffers the process may hold (storage.memory_budget)"));
lazy!(BUDGET_IN_USE: IntGauge = register_int_gauge!("bucketftp_memory_budget_in_use_bytes", "Bytes of the memory budget reserved by running transfers"));
lazy!(BUDGET_WAITS: IntCounter = register_int_counter!("bucketftp_memory_budget_waits_total", "Transfers that had to wait for their buffers"));
lazy!(BUDGET_REFUSALS: IntCounter = register_int_counter!("bucketftp_memory_budget_refusals_total", "Transfers refused with 451 because no buffer was free within storage.memory_wait"));
lazy!(READY: IntGauge = register_int_gauge!("bucketftp_ready", "1 when the storage is reachable and the server accepts sessions"));

/// Touches every metric so the exposition lists them from the start (a
/// dashboard should show 0, not "no data").
pub(crate) fn init() {
    LazyLock::force(&SESSIONS);
    LazyLock::force(&SESSIONS_REJECTED);
    LazyLock::force(&LOGINS);
    LazyLock::force(&LOCKOUT_FAILURES);
    LazyLock::force(&BYTES_RECEIVED);
    LazyLock::force(&BYTES_SENT);
    LazyLock::force(&MULTIPART);
    LazyLock::force(&PARTS);
    LazyLock::force(&SPLICED);
    LazyLock::force(&READY);
    LazyLock::force(&BUDGET_TOTAL);
    LazyLock::force(&BUDGET_IN_USE);
    LazyLock::force(&BUDGET_WAITS);
    LazyLock::force(&BUDGET_REFUSALS);
    LazyLock::force(&EVENTS_QUEUED);
    LazyLock::force(&EVENTS_DELIVERED);
    LazyLock::force(&EVENTS_FAILED);
    for reason in ["queue_full", "expired", "rejected"] {
        EVENTS_DROPPED.with_label_values(&[reason]);
    }
    for d in ["upload", "download"] {
        TRANSFERS_ACTIVE.with_label_values(&[d]);
        for o in ["success", "failure"] {
            TRANSFERS.with_label_values(&[d, o]);
            TRANSFER_SECONDS_H.with_label_values(&[d, o]);
            TRANSFER_BYTES_H.with_label_values(&[d, o]);
        }
    }
    for o in ["success", "failure"] {
        LOGINS.with_label_values(&[o]);
    }
}

/// A control connection opened (`+1`) or closed (`-1`).
pub(crate) fn session_delta(delta: i64) {
    SESSIONS.add(delta);
}

/// A connection was refused with 421.
pub(crate) fn session_rejected(reason: &'static str) {
    SESSIONS_REJECTED.with_label_values(&[reason]).inc();
}

/// A login attempt finished.
pub(crate) fn login(outcome: &'static str) {
    LOGINS.with_label_values(&[outcome]).inc();
}

/// A failed login counted towards lockout.
pub(crate) fn login_failure() {
    LOCKOUT_FAILURES.inc();
}

/// Bytes arrived on a data connection.
pub(crate) fn bytes_received(n: usize) {
    BYTES_RECEIVED.inc_by(n as u64);
}

/// Bytes left on a data connection.
pub(crate) fn bytes_sent(n: usize) {
    BYTES_SENT.inc_by(n as u64);
}

/// A transfer began.
pub(crate) fn transfer_started(direction: Direction) {
    TRANSFERS_ACTIVE
        .with_label_values(&[direction.label()])
        .inc();
}

/// A transfer ended (either way).
pub(crate) fn transfer_finished(direction: Direction) {
    TRANSFERS_ACTIVE
        .with_label_values(&[direction.label()])
        .dec();
}

/// An upload finished: count, duration and size by outcome.
pub(crate) fn upload_finished(ok: bool, took: Duration, bytes: u64) {
    transfer_outcome(Direction::Upload, ok, took, bytes);
}

/// A transfer's outcome, duration and size.
pub(crate) fn transfer_outcome(direction: Direction, ok: bool, took: Duration, bytes: u64) {
    let labels = [direction.label(), if ok { "success" } else { "failure" }];
    TRANSFERS.with_label_values(&labels).inc();
    TRANSFER_SECONDS_H
        .with_label_values(&labels)
        .observe(took.as_secs_f64());
    TRANSFER_BYTES_H
        .with_label_values(&labels)
        .observe(bytes as f64);
}

/// An upload outgrew one part and became a multipart upload.
pub(crate) fn multipart_started() {
    MULTIPART.inc();
}

/// An upload is received by `splice(2)` (`crate::backend::spliced`).
pub(crate) fn splice_started() {
    SPLICED.inc();
}

/// One multipart part was uploaded.
pub(crate) fn part_uploaded() {
    PARTS.inc();
}

/// One object-store request finished.
pub(crate) fn storage_op(
    backend: &'static str,
    operation: &'static str,
    took: Duration,
    error_kind: Option<&'static str>,
) {
    let outcome = if error_kind.is_some() {
        "error"
    } else {
        "success"
    };
    STORAGE_SECONDS_H
        .with_label_values(&[backend, operation, outcome])
        .observe(took.as_secs_f64());
    if let Some(kind) = error_kind {
        STORAGE_ERRORS
            .with_label_values(&[backend, operation, kind])
            .inc();
    }
}

/// An upload event entered (`+1`) or left (`-1`) the webhook queue.
pub(crate) fn events_queued(delta: i64) {
    EVENTS_QUEUED.add(delta);
}

/// The webhook accepted an event.
pub(crate) fn event_delivered() {
    EVENTS_DELIVERED.inc();
}

/// A webhook delivery attempt failed (it will be retried).
pub(crate) fn event_attempt_failed() {
    EVENTS_FAILED.inc();
}

/// An event will never be delivered.
pub(crate) fn event_dropped(reason: &'static str) {
    EVENTS_DROPPED.with_label_values(&[reason]).inc();
}

/// The memory budget's size.
pub(crate) fn memory_budget_configured(bytes: usize) {
    BUDGET_TOTAL.set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

/// Bytes reserved from the memory budget (`+`) or given back (`-`).
pub(crate) fn memory_budget_in_use(delta: i64) {
    BUDGET_IN_USE.add(delta);
}

/// A transfer had to wait for its buffers.
pub(crate) fn memory_budget_waited() {
    BUDGET_WAITS.inc();
}

/// A transfer was refused: no buffer within the wait.
pub(crate) fn memory_budget_refused() {
    BUDGET_REFUSALS.inc();
}

/// Readiness as a gauge, for alerting.
pub(crate) fn set_ready(ready: bool) {
    READY.set(i64::from(ready));
}

/// What [`render`] does with libunftp 0.24's metric families whose names
/// break Prometheus' rules: counters without `_total`, a counter ending in
/// `_count` (a suffix reserved for histograms and summaries) and a gauge
/// ending in `_total`. `Some(name)` serves the family under that name, `None`
/// leaves it out because one of ours measures the same. libunftp's other
/// families (`ftp_command_total`, `ftp_reply_total`, `ftp_error_total`,
/// `ftp_transferred_total`) are served as they are. We rename here rather
/// than patch libunftp: the names are its public interface, ours is this
/// exposition.
pub const LIBUNFTP_NAMES: [(&str, Option<&str>); 9] = [
    // Open sessions, a gauge: bucketftp_sessions_active.
    ("ftp_sessions_total", None),
    // Sessions libunftp served since start, a counter: no equivalent.
    ("ftp_sessions_count", Some("ftp_sessions_started_total")),
    // bucketftp_logins_total{outcome="failure"}.
    ("ftp_auth_failures", None),
    // bucketftp_transfers_total and bucketftp_transfer_size_bytes_sum with
    // outcome="success", by direction.
    ("ftp_backend_write_bytes", None),
    ("ftp_backend_read_bytes", None),
    ("ftp_backend_write_files", None),
    ("ftp_backend_read_files", None),
    // Data-connection bytes by command (listings included): ours count
    // transfers only, without the command.
    ("ftp_sent_bytes", Some("ftp_sent_bytes_total")),
    ("ftp_received_bytes", Some("ftp_received_bytes_total")),
];

/// The families as `/metrics` serves them: libunftp's renamed or left out
/// per [`LIBUNFTP_NAMES`], the rest unchanged, sorted by name.
fn exposed(mut families: Vec<MetricFamily>) -> Vec<MetricFamily> {
    families.retain_mut(|family| {
        match LIBUNFTP_NAMES.iter().find(|(old, _)| *old == family.name()) {
            None => true,
            Some((_, None)) => false,
            Some((_, Some(new))) => {
                family.set_name((*new).to_string());
                true
            }
        }
    });
    families.sort_by(|a, b| a.name().cmp(b.name()));
    families
}

/// The whole default registry in Prometheus text format, libunftp's
/// families under the names of [`LIBUNFTP_NAMES`].
pub(crate) fn render() -> String {
    use prometheus::Encoder;
    let mut out = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&exposed(prometheus::gather()), &mut out) {
        tracing::error!(cause = %e, "could not encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, IntCounter, IntGauge, Opts, Registry};

    #[test]
    fn libunftp_families_are_renamed_or_left_out() {
        let registry = Registry::new();
        for (name, _) in LIBUNFTP_NAMES {
            let help = format!("{name} as libunftp names it");
            if name == "ftp_sessions_total" {
                let gauge = IntGauge::new(name, help).unwrap();
                registry.register(Box::new(gauge)).unwrap();
            } else {
                let counter = IntCounter::with_opts(Opts::new(name, help)).unwrap();
                counter.inc();
                registry.register(Box::new(counter)).unwrap();
            }
        }
        let kept = IntCounter::new("ftp_command_total", "commands").unwrap();
        registry.register(Box::new(kept)).unwrap();

        let names: Vec<String> = exposed(registry.gather())
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "ftp_command_total",
                "ftp_received_bytes_total",
                "ftp_sent_bytes_total",
                "ftp_sessions_started_total",
            ]
        );
        let mut text = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&exposed(registry.gather()), &mut text)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text
            .contains("# TYPE ftp_sessions_started_total counter\nftp_sessions_started_total 1\n"));
    }
}
