//! The operations endpoint: `/metrics`, `/healthz`, `/readyz`.
//!
//! Liveness says the process and its FTP accept loop run; readiness says the
//! storage answers (checked at most every [`READY_CACHE`], so a scrape storm
//! cannot become a request storm on the bucket) and turns 503 as soon as
//! shutdown starts, so a load balancer stops sending new sessions.

use crate::store_url::{OpenedStore, StoreKind};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// How long a readiness answer is reused.
pub const READY_CACHE: Duration = Duration::from_secs(2);

/// Longest a readiness probe waits for the storage.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shared health state, written by the server and read by the endpoint.
#[derive(Debug)]
pub struct Health {
    accepting: AtomicBool,
    shutting_down: AtomicBool,
    stores: Vec<OpenedStore>,
    cache: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Health {
    /// Health over every distinct store the accounts use.
    pub fn new(stores: Vec<OpenedStore>) -> Arc<Self> {
        Arc::new(Self {
            accepting: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            stores,
            cache: Mutex::new(None),
        })
    }

    /// The FTP accept loop started or stopped.
    pub fn set_accepting(&self, accepting: bool) {
        self.accepting.store(accepting, Ordering::SeqCst);
    }

    /// Shutdown began: readiness fails from now on.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        crate::metrics::set_ready(false);
    }

    /// Whether the FTP listener is accepting.
    pub fn live(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// `Ok` when every store answers; the error names the store and cause.
    pub async fn ready(&self) -> Result<(), String> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err("shutting down".into());
        }
        let mut cache = self.cache.lock().await;
        if let Some((at, result)) = cache.as_ref() {
            if at.elapsed() < READY_CACHE {
                return result.clone();
            }
        }
        let mut result = Ok(());
        for store in &self.stores {
            if let Err(e) = probe(store).await {
                tracing::warn!(store = %store.display_url, cause = %e, "storage not reachable");
                result = Err(format!("{}: {e}", store.display_url));
                break;
            }
        }
        crate::metrics::set_ready(result.is_ok());
        *cache = Some((Instant::now(), result.clone()));
        result
    }
}

/// One cheap request: HEAD of a key that need not exist. "Not found" proves
/// the bucket answered with our credentials; anything else is a failure.
pub async fn probe(store: &OpenedStore) -> Result<(), String> {
    if let StoreKind::Local { fs, .. } = &store.kind {
        let root = fs
            .path_to_filesystem(&ObjectPath::from("probe"))
            .map_err(|e| e.to_string())?;
        let dir = root.parent().map(|p| p.to_path_buf()).unwrap_or_default();
        return match tokio::fs::read_dir(&dir).await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
        };
    }
    let key = store.base.clone().join(".bucketftp-readiness-probe");
    match tokio::time::timeout(PROBE_TIMEOUT, store.store.head(&key)).await {
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
        Ok(Ok(_)) | Ok(Err(object_store::Error::NotFound { .. })) => Ok(()),
        Ok(Err(e)) => Err(crate::error_chain(&e)),
    }
}

/// Serves the endpoint until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(cause = %e, "http endpoint failed");
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
}

async fn healthz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if health.live() {
        (StatusCode::OK, "ok\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "ftp listener not accepting\n".to_string(),
        )
    }
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    match health.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
