//! The start-up storage check, worded for the person who just typed the
//! command: one line naming the store, the endpoint it talked to, what went
//! wrong and what to change.
//!
//! Options that cannot work are refused before any request
//! ([`crate::store_url::preflight`]); everything else shows in the probe
//! request ([`crate::store_url::probe`]). A probe that fails or gets no
//! answer is worded here, diagnosed with one TCP connection to the endpoint
//! so "connection refused" and "nothing answers" are told apart.

use crate::store_url::probe::ProbeFailure;
use crate::store_url::{OpenedStore, StoreKind};
use std::time::Duration;

/// The option that names a store's endpoint, for the "check …" hints.
fn endpoint_option(store: &OpenedStore) -> &'static str {
    match store.kind {
        StoreKind::Cloud { scheme: "s3" } => "aws_endpoint",
        StoreKind::Cloud { scheme: "gs" } => "the service account's gcs_base_url",
        StoreKind::Cloud { .. } => "azure_storage_endpoint",
        _ => "the storage URL",
    }
}

/// The credential options of a store, for the "check …" hints.
fn credential_options(store: &OpenedStore) -> &'static str {
    match store.kind {
        StoreKind::Cloud { scheme: "s3" } => "aws_access_key_id and aws_secret_access_key",
        StoreKind::Cloud { scheme: "gs" } => "google_service_account",
        StoreKind::Cloud { .. } => "azure_storage_account_name and azure_storage_account_key",
        _ => "the directory's permissions",
    }
}

/// How long the diagnosing TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Words a failed probe: what happened at which endpoint, and the fix.
pub(crate) async fn explain(store: &OpenedStore, failure: ProbeFailure) -> String {
    let endpoint = store.endpoint.as_deref();
    let at = endpoint.map(|e| format!(" at {e}")).unwrap_or_default();
    let cannot_connect = |endpoint: &str, reason: String| {
        format!(
            "cannot connect to {endpoint} ({reason}): check {} and that the service is running and reachable",
            endpoint_option(store)
        )
    };
    match failure {
        ProbeFailure::Local(reason) => reason,
        ProbeFailure::Timeout(after) => match endpoint {
            Some(endpoint) => match connect(endpoint).await {
                Err(reason) => cannot_connect(endpoint, reason),
                Ok(()) => format!(
                    "{endpoint} accepts connections but did not answer within {after:?}: check {} (is it an object store?) and any proxy in between",
                    endpoint_option(store)
                ),
            },
            None => format!("no answer within {after:?}"),
        },
        ProbeFailure::Store { reason, detail } => {
            // No HTTP status: the request never got an answer (the store
            // gave up retrying before our deadline).
            if let (Some(endpoint), false) = (endpoint, reason.contains("(HTTP ")) {
                if let Err(why) = connect(endpoint).await {
                    return cannot_connect(endpoint, why);
                }
            }
            classify(store, &reason, &detail, &at)
        }
    }
}

/// The fix for an answer the store gave.
fn classify(store: &OpenedStore, reason: &str, detail: &str, at: &str) -> String {
    let has = |needle: &str| detail.contains(needle);
    let bucket = store.bucket.as_deref().unwrap_or("the bucket");
    if has("169.254.169.254") || (has("metadata") && has("credential")) {
        format!(
            "no credentials{at}: the instance-metadata service gave none ({reason}); set {}",
            credential_options(store)
        )
    } else if has("NoSuchBucket") || has("ContainerNotFound") || has("NoSuchContainer") {
        format!("{bucket} does not exist{at} ({reason}): create it, or correct the storage URL")
    } else if has("PermanentRedirect")
        || has("AuthorizationHeaderMalformed")
        || has("IllegalLocationConstraint")
        || has("301 Moved Permanently")
    {
        let region = between(detail, "<Region>", "</Region>")
            .map(|r| format!("aws_region={r}"))
            .unwrap_or_else(|| "aws_region to the bucket's region".into());
        format!("{bucket} is in another region{at} ({reason}): set {region}")
    } else if has("AccessDenied")
        || has("AuthorizationFailure")
        || has("AuthenticationFailed")
        || has("InvalidAccessKeyId")
        || has("SignatureDoesNotMatch")
        || has("403 Forbidden")
        || has("401 Unauthorized")
    {
        format!(
            "access denied{at} ({reason}): check {} and that they may list {bucket}",
            credential_options(store)
        )
    } else {
        format!("{reason}{at}")
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(&text[start..end])
}

/// One TCP connection to the endpoint's host and port.
async fn connect(endpoint: &str) -> Result<(), String> {
    let Ok(url) = url::Url::parse(endpoint) else {
        return Ok(());
    };
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Ok(());
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err("connection refused".into())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer to a connection within {CONNECT_TIMEOUT:?}"
        )),
    }
}
