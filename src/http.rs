//! The operations endpoint: `/metrics`, `/healthz`, `/readyz`.
//!
//! Liveness says the process and its FTP accept loop run; readiness says the
//! storage answers (checked at most every [`READY_CACHE`], so a scrape storm
//! cannot become a request storm on the bucket) and turns 503 as soon as
//! shutdown starts, so a load balancer stops sending new sessions.
//!
//! [`healthcheck`] is the client side of `/readyz` for `bucketftp
//! healthcheck`: container images have no curl, and Docker's HEALTHCHECK and
//! compose's `healthcheck:` run a command inside the container.

use crate::store_url::probe::probe;
use crate::store_url::OpenedStore;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

/// How long a readiness answer is reused.
pub(crate) const READY_CACHE: Duration = Duration::from_secs(2);

/// Shared health state, written by the server and read by the endpoint.
#[derive(Debug)]
pub(crate) struct Health {
    accepting: AtomicBool,
    shutting_down: AtomicBool,
    stores: Vec<OpenedStore>,
    cache: Mutex<Option<(Instant, Result<(), String>)>>,
    refreshing: AtomicBool,
    /// Set when FTPS is configured: not ready without a valid certificate.
    tls: Option<Arc<crate::tls::TlsCertificates>>,
}

impl Health {
    /// Health over every distinct store the accounts use and, when FTPS is
    /// configured, its certificate.
    pub(crate) fn new(
        stores: Vec<OpenedStore>,
        tls: Option<Arc<crate::tls::TlsCertificates>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            accepting: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            stores,
            cache: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            tls,
        })
    }

    /// The FTP accept loop started or stopped.
    pub(crate) fn set_accepting(&self, accepting: bool) {
        self.accepting.store(accepting, Ordering::SeqCst);
    }

    /// Shutdown began: readiness fails from now on.
    pub(crate) fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        crate::metrics::set_ready(false);
    }

    /// Whether the FTP listener is accepting.
    pub(crate) fn live(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// `Ok` when every store answers; the error names the store and cause.
    ///
    /// Answers from the last probe and refreshes it in the background once
    /// it is older than [`READY_CACHE`]: a slow store then makes readiness
    /// late by one probe, never makes the endpoint itself slow (a load
    /// balancer's check timing out would take a healthy replica out).
    pub(crate) async fn ready(self: &Arc<Self>) -> Result<(), String> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err("shutting down".into());
        }
        if self.tls.as_ref().is_some_and(|t| t.current().is_none()) {
            crate::metrics::set_ready(false);
            return Err("tls is configured but no valid certificate and key are loaded".into());
        }
        let cached = self.cache.lock().await.clone();
        match cached {
            Some((at, result)) => {
                if at.elapsed() >= READY_CACHE && !self.refreshing.swap(true, Ordering::SeqCst) {
                    let health = self.clone();
                    tokio::spawn(async move {
                        let _ = health.refresh().await;
                        health.refreshing.store(false, Ordering::SeqCst);
                    });
                }
                result
            }
            None => self.refresh().await,
        }
    }

    async fn refresh(&self) -> Result<(), String> {
        let mut result = Ok(());
        for store in &self.stores {
            if let Err(e) = probe(store).await {
                tracing::warn!(store = %store.display_url, cause = %e, "storage not reachable");
                result = Err(format!("{}: {e}", store.display_url));
                break;
            }
        }
        crate::metrics::set_ready(result.is_ok());
        *self.cache.lock().await = Some((Instant::now(), result.clone()));
        result
    }
}

/// Serves the endpoint until `shutdown` resolves.
pub(crate) async fn serve(
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

/// How long `bucketftp healthcheck` waits for `/readyz`: longer than the
/// storage probe behind it ([`crate::store_url::probe::PROBE_TIMEOUT`]), shorter than the image's
/// HEALTHCHECK timeout.
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(8);

/// The most of a `/readyz` answer [`healthcheck`] reads: the status line and
/// a one-line reason fit many times over.
const HEALTHCHECK_MAX_ANSWER: u64 = 16 * 1024;

/// Why [`healthcheck`] reports the gateway unhealthy.
#[derive(Debug, Error)]
pub enum HealthcheckError {
    /// `http.listen` is `off`, so there is no `/readyz` to ask.
    #[error("the http endpoint is off (http.listen): nothing to ask")]
    Off,
    /// Nothing answered at the address (gateway not started or gone).
    #[error("cannot reach http://{addr}/readyz")]
    Unreachable {
        /// The address asked.
        addr: SocketAddr,
        /// Why the connection or the exchange failed.
        #[source]
        source: std::io::Error,
    },
    /// The endpoint did not answer in time.
    #[error("http://{addr}/readyz did not answer within {timeout:?}")]
    Timeout {
        /// The address asked.
        addr: SocketAddr,
        /// How long it waited.
        timeout: Duration,
    },
    /// It answered, but not 200: the storage is unreachable or the gateway
    /// is shutting down.
    #[error("http://{addr}/readyz answered {answer}")]
    NotReady {
        /// The address asked.
        addr: SocketAddr,
        /// The status line and first body line, e.g. `503: not ready: …`.
        answer: String,
    },
}

/// Where to ask for readiness, given `http.listen`: a wildcard listen
/// address (`0.0.0.0`, `::`) is asked on the loopback address of its family,
/// which is where a command run inside the container reaches the gateway.
pub(crate) fn local_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `Ok` when the gateway whose `http.listen` is `listen` answers `/readyz`
/// with 200 within `timeout`.
///
/// A plain HTTP/1.1 GET over a TCP stream: the endpoint is ours, answers
/// with a short body and closes the connection when asked to, so an HTTP
/// client library would add nothing but size.
pub async fn healthcheck(
    listen: Option<SocketAddr>,
    timeout: Duration,
) -> Result<(), HealthcheckError> {
    let addr = local_address(listen.ok_or(HealthcheckError::Off)?);
    let answer = tokio::time::timeout(timeout, get_readyz(addr))
        .await
        .map_err(|_| HealthcheckError::Timeout { addr, timeout })?
        .map_err(|source| HealthcheckError::Unreachable { addr, source })?;
    let mut lines = answer.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .unwrap_or("no status line")
        .to_string();
    if status == "200" {
        return Ok(());
    }
    // The body follows the first empty line.
    let reason = lines
        .skip_while(|line| !line.is_empty())
        .find(|line| !line.is_empty())
        .unwrap_or("")
        .trim();
    Err(HealthcheckError::NotReady {
        addr,
        answer: format!("{status}: {reason}"),
    })
}

/// One `GET /readyz`, its answer as (lossy) text.
async fn get_readyz(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream
        .take(HEALTHCHECK_MAX_ANSWER)
        .read_to_end(&mut answer)
        .await?;
    Ok(String::from_utf8_lossy(&answer).replace('\r', ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_asked_on_loopback() {
        let ask = |listen: &str| local_address(listen.parse().unwrap()).to_string();
        assert_eq!(ask("0.0.0.0:9090"), "127.0.0.1:9090");
        assert_eq!(ask("[::]:9090"), "[::1]:9090");
        assert_eq!(ask("10.1.2.3:9090"), "10.1.2.3:9090");
        assert_eq!(ask("127.0.0.2:9090"), "127.0.0.2:9090");
    }
}
