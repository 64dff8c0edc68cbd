//! The one cheap request that proves a store works, shared by start-up
//! ([`crate::check_storage`]) and readiness (`/readyz`), and the one-line
//! reason made of a failing store's answer (S3's and Azure's XML error
//! bodies are read here, beside the stores that send them).

use super::{OpenedStore, StoreKind};
use object_store::path::Path as ObjectPath;
use std::time::Duration;

/// Longest a readiness probe waits for the storage.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a probe failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ProbeFailure {
    /// The store did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The store answered with an error.
    #[error("{reason}")]
    Store {
        /// One line, see [`concise_reason`].
        reason: String,
        /// The whole error chain (the store's XML answer included).
        detail: String,
    },
    /// The local directory cannot be read.
    #[error("{0}")]
    Local(String),
}

/// One cheap request that proves the bucket exists and takes our
/// credentials: a listing of a prefix that holds nothing.
pub(crate) async fn probe(store: &OpenedStore) -> Result<(), String> {
    probe_store(store).await.map_err(|e| e.to_string())
}

/// [`probe`], with the kind of failure kept for the start-up message.
pub(crate) async fn probe_store(store: &OpenedStore) -> Result<(), ProbeFailure> {
    if let StoreKind::Local { fs, .. } = &store.kind {
        let root = fs
            .path_to_filesystem(&ObjectPath::from("probe"))
            .map_err(|e| ProbeFailure::Local(e.to_string()))?;
        let dir = root.parent().map(|p| p.to_path_buf()).unwrap_or_default();
        return match tokio::fs::read_dir(&dir).await {
            Ok(_) => Ok(()),
            Err(e) => Err(ProbeFailure::Local(format!(
                "cannot read {}: {e}",
                dir.display()
            ))),
        };
    }
    // A listing, not a HEAD: a HEAD in a bucket that does not exist also
    // answers 404, which would pass for "key not found" and hide the
    // missing bucket. Listing a prefix that holds nothing is as cheap.
    let prefix = store.base.clone().join(".bucketftp-readiness-probe");
    match tokio::time::timeout(
        PROBE_TIMEOUT,
        store.store.list_with_delimiter(Some(&prefix)),
    )
    .await
    {
        Err(_) => Err(ProbeFailure::Timeout(PROBE_TIMEOUT)),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            let detail = crate::errors::error_chain(&e);
            Err(ProbeFailure::Store {
                reason: concise_reason(&detail),
                detail,
            })
        }
    }
}

/// One line an operator can act on, from a storage error chain whose HTTP
/// bodies (S3's and Azure's XML) span lines and repeat at every level:
/// `NoSuchBucket: The specified bucket does not exist (HTTP 404 Not Found)`.
pub(crate) fn concise_reason(chain: &str) -> String {
    let between = |open: &str, close: &str| {
        let start = chain.find(open)? + open.len();
        let end = chain[start..].find(close)? + start;
        Some(chain[start..end].trim().to_string())
    };
    let status = chain
        .split("status code: ")
        .nth(1)
        .map(|rest| rest.split(':').next().unwrap_or(rest).trim().to_string());
    let code = between("<Code>", "</Code>");
    let message = between("<Message>", "</Message>")
        .map(|m| m.lines().next().unwrap_or("").trim().to_string());
    match (code, message, status) {
        (Some(code), Some(message), Some(status)) => {
            format!("{code}: {message} (HTTP {status})")
        }
        (Some(code), _, Some(status)) => format!("{code} (HTTP {status})"),
        (None, _, Some(status)) => {
            let first = chain.split(": ").next().unwrap_or(chain);
            format!("{first} (HTTP {status})")
        }
        _ => {
            let flat: String = chain.split_whitespace().collect::<Vec<_>>().join(" ");
            flat.chars().take(300).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_become_one_actionable_line() {
        let s3 = "Generic S3 error: Error performing list request: Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>: again";
        assert_eq!(
            concise_reason(s3),
            "NoSuchBucket: The specified bucket does not exist (HTTP 404 Not Found)"
        );
        let azure = "Generic MicrosoftAzure error: Server returned non-2xx status code: 403 Forbidden: <?xml?><Error><Code>AuthorizationFailure</Code><Message>Server failed to authenticate the request.\nRequestId:x</Message></Error>";
        assert_eq!(
            concise_reason(azure),
            "AuthorizationFailure: Server failed to authenticate the request. (HTTP 403 Forbidden)"
        );
        assert_eq!(
            concise_reason("connection refused\n  by peer"),
            "connection refused by peer"
        );
    }
}
