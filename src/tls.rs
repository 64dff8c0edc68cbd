//! The FTPS certificate: parsed once, reloaded when its files change.
//!
//! libunftp re-reads certificate files for every session when given paths,
//! so a bad file on disk (a half-written renewal) silently broke every new
//! connection while readiness still said "ready". Here the files are parsed
//! into one rustls configuration that every session shares. Each new
//! session (and each readiness check) looks at the files' size and
//! modification time, at most once per [`RELOAD_CHECK`]; when they changed,
//! they are parsed again and, if valid, replace the configuration. A file
//! that does not parse is logged and the last good configuration stays.
//! Readiness fails while TLS is configured but no valid configuration has
//! ever been loaded.
//!
//! TLS 1.2 and 1.3, session-ID and ticket resumption. libunftp offers only
//! 1.2 by default because lftp's uploads failed over 1.3 with resumption;
//! our engine patch 0103-data-tls answers the client's close_notify at the
//! end of an upload, and lftp's FTPS mirror test runs over 1.3.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerSessionMemoryCache;
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Files are looked at no more often than this.
pub(crate) const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// TLS sessions remembered for session-ID resumption (data connections
/// resume the control connection's session).
const SESSION_CACHE: usize = 1024;

/// Why a certificate and key could not become a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("no PEM certificate in {0}")]
    NoCertificate(PathBuf),
    /// The key file holds no usable PEM private key.
    #[error("no PEM private key in {path}")]
    Key {
        path: PathBuf,
        /// What the PEM parser said.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the pair (key does not match, unsupported algorithm).
    #[error("certificate and key cannot be used together")]
    Rustls(#[source] rustls::Error),
}

/// Size and modification time of the two files: a change in either means
/// "parse again".
type Stamp = [(u64, Option<SystemTime>); 2];

#[derive(Debug)]
struct State {
    config: Option<Arc<ServerConfig>>,
    loaded: Option<Stamp>,
    checked: Option<Instant>,
}

/// The current TLS configuration and where it comes from.
#[derive(Debug)]
pub(crate) struct TlsCertificates {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<State>,
}

impl TlsCertificates {
    /// Loads the pair now; a failure is logged and leaves no configuration
    /// (readiness fails until valid files appear).
    pub(crate) fn new(cert: PathBuf, key: PathBuf) -> Arc<Self> {
        let this = Arc::new(Self {
            cert,
            key,
            state: Mutex::new(State {
                config: None,
                loaded: None,
                checked: None,
            }),
        });
        this.current();
        this
    }

    /// The configuration to hand a new session, reloaded first if the files
    /// changed; `None` while no valid pair was ever loaded.
    pub(crate) fn current(&self) -> Option<Arc<ServerConfig>> {
        // A poisoned lock means a panic while swapping an `Option`; the
        // state is still consistent.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.is_some_and(|at| at.elapsed() < RELOAD_CHECK) {
            return state.config.clone();
        }
        state.checked = Some(Instant::now());
        let stamp = self.stamp();
        if stamp.is_some() && stamp == state.loaded {
            return state.config.clone();
        }
        match load(&self.cert, &self.key) {
            Ok(config) => {
                if state.config.is_some() {
                    tracing::info!(cert = %self.cert.display(), "tls certificate reloaded");
                }
                state.config = Some(config);
                state.loaded = stamp;
            }
            Err(e) => {
                // Remember the broken files' stamp so they are not parsed
                // (and logged) again until they change once more.
                state.loaded = stamp;
                tracing::error!(
                    cert = %self.cert.display(),
                    key = %self.key.display(),
                    cause = %crate::errors::error_chain(&e),
                    keeping_previous = state.config.is_some(),
                    "tls certificate not loaded"
                );
            }
        }
        state.config.clone()
    }

    fn stamp(&self) -> Option<Stamp> {
        let one = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.len(), m.modified().ok()))
        };
        Some([one(&self.cert)?, one(&self.key)?])
    }
}

/// Parses a PEM certificate chain and private key into a server config.
pub(crate) fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_path_buf()));
    }
    let key_pem = read(key)?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::Key {
        path: key.to_path_buf(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Rustls)?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(TlsError::Rustls)?;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(TlsError::Rustls)?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, b"not a certificate").unwrap();
        std::fs::write(&key, b"not a key").unwrap();
        let err = load(&cert, &key).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate(_)), "{err}");
        let tls = TlsCertificates::new(cert, key);
        assert!(tls.current().is_none());
    }
}
