//! The FTP listener: accepts control connections itself, applies the
//! session limits, and hands each connection to libunftp.
//!
//! We accept rather than let libunftp bind, so that the listener can be
//! bound by the caller (tests use port 0), a connection over a limit gets a
//! proper `421`, each session's storage back-end knows its client, and
//! shutdown can wait for transfers instead of cutting control connections
//! (libunftp's own shutdown closes them at once), then close the sessions
//! still open with a `421` each, as the login deadline does (sent by
//! libunftp's control loop, so in TLS after AUTH TLS: engine patch 0312).
//!
//! Connections that have not logged in are held to less: a login deadline
//! (`server.login_timeout`, never extended by NOOP or any other command)
//! and their own caps in total and per address, at most half of
//! `max_sessions`, so clients that never log in cannot take every place.
//! Client addresses are canonical (`::ffff:a.b.c.d` → `a.b.c.d`) before
//! they are counted, compared or logged, so a dual-stack `[::]` listener
//! treats IPv4 clients as IPv4.
//!
//! With `tls.implicit_listen` a second listener serves implicit FTPS (TLS
//! from the first byte) through the same accept loop, limits and metrics;
//! its refusals are a plain close, since a TLS client cannot read a
//! plaintext `421`.

use crate::auth::Accounts;
use crate::backend::SessionUser;
use crate::backend::{BackendSettings, ObjectBackend};
use crate::config::{Config, PassiveHost, ProxyProtocol, TlsRequired};
use crate::proxy_protocol::ProxiedAddress;
use crate::tls::TlsCertificates;
use crate::transfers::{SessionContext, Transfers};
use futures::future::Either;
use libunftp::options::{ActivePassiveMode, DataConnectionSource, FtpsRequired};
use libunftp::ServerBuilder;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Why a session could not be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// libunftp refused the server options.
    #[error("cannot configure ftp session")]
    Build(#[source] libunftp::ServerError),
    /// TLS is required but no valid certificate is loaded.
    #[error("tls is required but no valid certificate is loaded")]
    NoTls,
}

/// Everything a session needs, shared by all sessions.
#[derive(Debug)]
pub(crate) struct FtpService {
    config: Arc<Config>,
    accounts: Arc<Accounts>,
    settings: Arc<BackendSettings>,
    transfers: Arc<Transfers>,
    limits: SessionLimits,
    /// Places for connections that have not logged in yet.
    unauthenticated: SessionLimits,
    /// The FTPS configuration, when `[tls]` is set.
    tls: Option<Arc<TlsCertificates>>,
    greeting: &'static str,
    /// Turns true when shutdown closes the sessions still open after the
    /// transfers drained: each says `421` and ends.
    closing: tokio::sync::watch::Sender<bool>,
}

impl FtpService {
    /// Prepares the service; nothing is bound or spawned yet.
    pub(crate) fn new(
        config: Arc<Config>,
        accounts: Arc<Accounts>,
        settings: Arc<BackendSettings>,
        transfers: Arc<Transfers>,
        tls: Option<Arc<TlsCertificates>>,
    ) -> Self {
        // libunftp wants a `&'static str` greeting. It is leaked once per
        // process start, not per connection.
        let greeting: &'static str = Box::leak(config.server.greeting.clone().into_boxed_str());
        let limits = SessionLimits::new(
            config.server.max_sessions,
            config.server.max_sessions_per_ip,
        );
        let unauthenticated = SessionLimits::new(
            config.server.max_unauthenticated,
            config.server.max_unauthenticated_per_ip,
        );
        Self {
            config,
            accounts,
            settings,
            transfers,
            limits,
            unauthenticated,
            tls,
            greeting,
            closing: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Accepts on `listener` (and on `implicit`, implicit FTPS, when set)
    /// until `shutdown` resolves, then stops accepting and waits for
    /// transfers (up to the configured grace period). Sessions still open
    /// after that are closed when the returned future's caller exits. Both
    /// listeners share the session limits, metrics and shutdown.
    pub(crate) async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        implicit: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut sessions = JoinSet::new();
        let mut backoff = Duration::from_millis(5);
        loop {
            let (accepted, implicit_tls) = tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
                accepted = listener.accept() => (accepted, false),
                accepted = accept_on(implicit.as_ref()) => (accepted, true),
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    let service = self.clone();
                    sessions
                        .spawn(async move { service.session(stream, peer, implicit_tls).await });
                }
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::error!(cause = %e, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        drop(listener);
        drop(implicit);
        tracing::info!(
            transfers = self.transfers.active(),
            grace = ?self.config.server.shutdown_grace,
            "shutting down: no new sessions, waiting for transfers"
        );
        let cut = self
            .transfers
            .drain(self.config.server.shutdown_grace)
            .await;
        tracing::info!(cut, "transfers drained");
        // A transfer counts as finished when the storage call returns; its
        // 226/4xx reply is written by libunftp just after. Give sessions a
        // moment to send those replies (or to end on their own) before
        // closing them, so a client whose upload was stored hears so.
        let _ = tokio::time::timeout(REPLY_FLUSH, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        // The rest (idle, or with a transfer just cut) hear 421 and end.
        self.closing.send_replace(true);
        let _ = tokio::time::timeout(FAREWELL_WAIT, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        sessions.abort_all();
    }

    async fn session(self: Arc<Self>, mut stream: TcpStream, peer: SocketAddr, implicit_tls: bool) {
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let peer = match self.config.server.proxy_protocol() {
            None => peer,
            Some(proxy) => match proxied_client(proxy, &mut stream, peer).await {
                Ok(client) => client,
                Err(reason) => {
                    crate::metrics::session_rejected("proxy_protocol");
                    tracing::warn!(proxy_ip = %peer.ip(), reason, "connection refused: PROXY protocol");
                    // No reply: the sender is not speaking FTP to us (a
                    // balancer misconfigured, or a client going around it).
                    let _ = stream.shutdown().await;
                    return;
                }
            },
        };
        let Some(_slot) = self.limits.admit(peer.ip()) else {
            crate::metrics::session_rejected("limit");
            tracing::warn!(client_ip = %peer.ip(), "session refused: too many connections");
            // An implicit FTPS client expects a TLS handshake: a plaintext
            // reply would only garble it, so it is just closed.
            if !implicit_tls {
                let _ = stream
                    .write_all(b"421 Too many connections, try again later\r\n")
                    .await;
            }
            let _ = stream.shutdown().await;
            return;
        };
        let Some(waiting) = self.unauthenticated.admit(peer.ip()) else {
            crate::metrics::session_rejected("unauthenticated");
            tracing::warn!(client_ip = %peer.ip(), "session refused: too many connections not logged in");
            if !implicit_tls {
                let _ = stream
                    .write_all(b"421 Too many connections waiting to log in, try again later\r\n")
                    .await;
            }
            let _ = stream.shutdown().await;
            return;
        };
        if self.transfers.closing() {
            if !implicit_tls {
                let _ = stream.write_all(b"421 Server shutting down\r\n").await;
            }
            return;
        }
        crate::metrics::session_delta(1);
        if let Err(e) = self.run_session(stream, peer, waiting, implicit_tls).await {
            tracing::error!(client_ip = %peer.ip(), cause = %crate::errors::error_chain(&e), "session failed");
        }
        crate::metrics::session_delta(-1);
    }

    async fn run_session(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        waiting: SessionSlot,
        implicit_tls: bool,
    ) -> Result<(), SessionError> {
        let _ = stream.set_nodelay(true);
        // libunftp takes the stream and holds the only strong reference
        // (engine patch 0311); the context watches the socket through a weak
        // one, so a session costs one descriptor.
        let stream = Arc::new(stream);
        let context = Arc::new(SessionContext::new(peer, Some(Arc::downgrade(&stream))));
        tracing::debug!(session = context.id, client_ip = %peer.ip(), "session start");
        let (farewell, farewell_text) = tokio::sync::oneshot::channel();
        let server = match self.build_server(context.clone(), implicit_tls, farewell_text) {
            Ok(server) => server,
            Err(e @ SessionError::NoTls) => {
                // An implicit FTPS client expects a TLS handshake: plaintext
                // would only garble it.
                context.hang_up(if implicit_tls {
                    &[]
                } else {
                    b"421 TLS is required but not available, try again later\r\n"
                });
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let service = match self.config.server.proxy_protocol() {
            // The control connection's header is read; libunftp takes the
            // client from us and reads the data connections' headers
            // through us (engine patch 0310).
            Some(proxy) => Either::Left(server.service_proxied(
                stream,
                peer,
                data_connection_source(proxy),
                implicit_tls,
            )),
            None if implicit_tls => {
                Either::Right(Either::Left(server.service_implicit_tls(stream)))
            }
            None => Either::Right(Either::Right(server.service(stream))),
        };
        tokio::pin!(service);
        let login_timeout = self.config.server.login_timeout;
        let deadline = async {
            tokio::select! {
                _ = context.logged_in() => {
                    drop(waiting);
                    std::future::pending::<()>().await
                }
                _ = tokio::time::sleep(login_timeout) => {}
            }
        };
        let mut closing = self.closing.subscribe();
        /// How the session comes to an end.
        enum End<T> {
            /// Its control loop ended (the client quit or went away).
            Ended(T),
            /// The gateway closes it with this 421 text.
            Farewell(&'static str),
        }
        let end = tokio::select! {
            ended = &mut service => End::Ended(ended),
            _ = deadline => {
                crate::metrics::session_rejected("login_timeout");
                tracing::info!(session = context.id, client_ip = %peer.ip(), timeout = ?login_timeout, "closing connection: no login in time");
                End::Farewell("Login timeout, closing control connection")
            }
            _ = closing.wait_for(|closing| *closing) => {
                tracing::debug!(session = context.id, "closing session: server shutting down");
                End::Farewell("Server shutting down, closing control connection")
            }
        };
        let ended = match end {
            End::Ended(ended) => ended,
            End::Farewell(text) => {
                // libunftp's control loop (a task of its own) sends the 421,
                // in TLS when the session is (engine patch 0312), and ends.
                // One that cannot (its client stalled a TLS handshake, or
                // does not read) is cut: shutting the socket down ends it.
                let _ = farewell.send(text);
                match tokio::time::timeout(FAREWELL_WAIT, &mut service).await {
                    Ok(ended) => ended,
                    Err(_) => {
                        context.hang_up(&[]);
                        service.await
                    }
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(session = context.id, cause = ?e, "control channel ended with error");
        }
        tracing::debug!(session = context.id, "session end");
        Ok(())
    }

    /// One session's libunftp server. When `farewell` gives a text, the
    /// session answers `421 <text>` and ends (engine patch 0312); until
    /// then, and if the sender is dropped, nothing happens.
    fn build_server(
        &self,
        context: Arc<SessionContext>,
        implicit_tls: bool,
        farewell: tokio::sync::oneshot::Receiver<&'static str>,
    ) -> Result<libunftp::Server<ObjectBackend, SessionUser>, SessionError> {
        let backend = ObjectBackend::new(context, self.settings.clone(), self.transfers.clone());
        let server = &self.config.server;
        let mut builder = ServerBuilder::<ObjectBackend, SessionUser>::with_user_detail_provider(
            Box::new(move || backend.clone()),
            self.accounts.clone(),
        )
        .authenticator(self.accounts.clone())
        .greeting(self.greeting)
        .passive_ports(server.passive_ports.clone())
        .idle_session_timeout(server.idle_timeout.as_secs())
        .active_passive_mode(if server.active_mode {
            ActivePassiveMode::ActiveAndPassive
        } else {
            ActivePassiveMode::PassiveOnly
        })
        .metrics()
        .shutdown_indicator(async move {
            match farewell.await {
                Ok(text) => libunftp::options::Shutdown::new().farewell(text),
                Err(_) => std::future::pending().await,
            }
        });
        builder = match &server.passive_host {
            PassiveHost::FromConnection => {
                builder.passive_host(libunftp::options::PassiveHost::FromConnection)
            }
            PassiveHost::Ip(ip) => builder.passive_host(*ip),
            PassiveHost::Dns(name) => builder.passive_host(name.as_str()),
        };
        if let (Some(tls), Some(certificates)) = (&self.config.tls, &self.tls) {
            let required = match tls.required {
                TlsRequired::None => FtpsRequired::None,
                TlsRequired::Accounts => FtpsRequired::Accounts,
                TlsRequired::All => FtpsRequired::All,
            };
            match certificates.current() {
                // Parsed once and shared; replaced files take effect for the
                // next connection (src/tls.rs).
                Some(config) => {
                    builder = builder
                        .ftps_manual::<std::path::PathBuf>(config)
                        .ftps_required(required, required);
                }
                None if tls.required != TlsRequired::None || implicit_tls => {
                    return Err(SessionError::NoTls);
                }
                // TLS optional and no certificate: plain FTP only (readiness
                // reports the missing certificate).
                None => {}
            }
        }
        let mfmt_listed = self.config.storage.engine != crate::config::StorageEngine::UnftpSbeGcs;
        crate::extension_commands::register(builder, mfmt_listed)
            .build()
            .map_err(SessionError::Build)
    }
}

/// Accepts on `listener`, or never when there is none.
async fn accept_on(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// How long a connection may take to send its PROXY header. Balancers send
/// it at once with the connection; this only bounds a stray client.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The client behind a balancer's connection, from its PROXY header; the
/// connection's own address for a `LOCAL` header (the balancer's health
/// check). `Err` says why the connection is refused.
async fn proxied_client(
    proxy: &ProxyProtocol,
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Result<SocketAddr, String> {
    if !proxy.trusts(peer.ip()) {
        return Err("not from server.proxy_protocol_from".into());
    }
    match crate::proxy_protocol::read_header(stream, PROXY_HEADER_TIMEOUT).await {
        Ok(ProxiedAddress::Client { source, .. }) => {
            Ok(SocketAddr::new(source.ip().to_canonical(), source.port()))
        }
        Ok(ProxiedAddress::Local) => Ok(peer),
        Err(e) => Err(e.to_string()),
    }
}

/// How passive data connections through the balancer name their client:
/// by the same header, from the same trusted networks. A connection without
/// a valid header is dropped (the client's own is still awaited).
fn data_connection_source(proxy: &ProxyProtocol) -> DataConnectionSource {
    let proxy = proxy.clone();
    DataConnectionSource(Arc::new(move |mut stream: TcpStream| {
        let proxy = proxy.clone();
        Box::pin(async move {
            let peer = stream.peer_addr().ok()?;
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            match proxied_client(&proxy, &mut stream, peer).await {
                Ok(client) => Some((stream, client)),
                Err(reason) => {
                    tracing::warn!(proxy_ip = %peer.ip(), reason, "data connection refused: PROXY protocol");
                    None
                }
            }
        })
    }))
}

/// How long sessions get, after the transfers drained, to send their last
/// replies before they are closed.
const REPLY_FLUSH: Duration = Duration::from_secs(1);

/// How long a session told to close (login deadline, shutdown) gets to
/// send its `421` and end before its socket is shut down.
const FAREWELL_WAIT: Duration = Duration::from_secs(2);

/// Caps sessions in total and per client address.
#[derive(Debug)]
struct SessionLimits {
    max_total: usize,
    max_per_ip: usize,
    counts: Arc<Mutex<Counts>>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A session's place under the limits; freed on drop.
struct SessionSlot {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl SessionLimits {
    fn new(max_total: usize, max_per_ip: usize) -> Self {
        Self {
            max_total,
            max_per_ip,
            counts: Arc::default(),
        }
    }

    fn admit(&self, ip: IpAddr) -> Option<SessionSlot> {
        // A poisoned lock means a panic mid-update of two integers; the
        // counts are still the best information we have.
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let here = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if counts.total >= self.max_total || here >= self.max_per_ip {
            return None;
        }
        counts.total += 1;
        counts.per_ip.insert(ip, here + 1);
        Some(SessionSlot {
            ip,
            counts: self.counts.clone(),
        })
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_total_and_per_ip() {
        let limits = SessionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = limits.admit(a).unwrap();
        let _s2 = limits.admit(a).unwrap();
        assert!(limits.admit(a).is_none(), "per-ip cap");
        let _s3 = limits.admit(b).unwrap();
        assert!(limits.admit(b).is_none(), "total cap");
        drop(s1);
        assert!(limits.admit(a).is_some());
    }
}
