//! Metadata written onto committed objects: the digests of multipart
//! uploads on S3, Azure and GCS, and the client's modification time that
//! `MFMT` sets ([`crate::backend`]'s `modified_time`).
//!
//! A cloud fixes an object's user metadata when the multipart upload
//! *starts* (S3 `CreateMultipartUpload`; object_store passes Azure's at
//! `Put Block List` but takes them at creation), before the content — and
//! so its SHA-256 — is known. [`CloudAttributesStore`] wraps the typed store
//! and, when a multipart upload completes with [`CompletionAttributes`] set,
//! writes them on the committed object in one request, conditional on the
//! ETag the completion returned (so a concurrent overwrite never receives
//! another upload's digest):
//!
//! - **S3**: `CopyObject` of the object onto itself with
//!   `x-amz-metadata-directive: REPLACE` (the only way S3 changes metadata),
//!   through a presigned URL whose signature covers every header. It is a
//!   server-side copy: no byte passes through the gateway, but S3 refuses it
//!   above 5 GiB, and the ETag changes. `Content-Type` and storage class are
//!   re-sent because REPLACE resets them.
//! - **Azure**: `Set Blob Metadata` (no copy), through a SAS URL. It
//!   replaces the whole user metadata set, so every key is re-sent.
//! - **GCS**: a JSON API `PATCH` of the object resource (no copy), with the
//!   store's own OAuth token, conditional on the generation
//!   (`ifGenerationMatch`). A PATCH merges metadata keys, so only the new
//!   ones are sent.
//!
//! Failure never fails the upload (it is already committed): it is logged,
//! and the checksum of that object is computed on demand instead. `MFMT`
//! uses the same [`MetadataWriter`] and reports a failure to the client.

mod gcs_listing;

use crate::local_attributes::CompletionAttributes;
use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3;
use object_store::azure::MicrosoftAzure;
use object_store::gcp::GoogleCloudStorage;
use object_store::path::Path;
use object_store::signer::{SignedUrlOptions, Signer};
use object_store::{
    Attribute, Attributes, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    Result, UploadPart,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Lifetime of the one-request URLs.
const URL_LIFETIME: Duration = Duration::from_secs(300);

/// Characters S3 wants percent-encoded in `x-amz-copy-source` (all but
/// RFC 3986 unreserved characters and the `/` between segments).
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// The typed store and what a metadata update needs.
#[derive(Debug)]
pub(crate) enum Cloud {
    /// S3 and its bucket name.
    S3(Arc<AmazonS3>, String),
    /// Azure Blob.
    Azure(Arc<MicrosoftAzure>),
    /// GCS, its bucket, and the base URL of its JSON API (the XML API's
    /// host serves it too: `https://storage.googleapis.com`, or an
    /// emulator's address).
    Gcs(Arc<GoogleCloudStorage>, String, String),
}

/// Which version of an object a metadata write applies to: the write is
/// refused (412) when the object changed in between, so one upload's digest
/// or time never lands on another upload's bytes.
#[derive(Debug, Clone, Default)]
pub struct Precondition {
    /// The ETag (S3, Azure).
    pub e_tag: Option<String>,
    /// The generation (GCS).
    pub version: Option<String>,
}

/// Why a metadata write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The request could not be built or sent.
    #[error("metadata request failed: {0}")]
    Request(String),
    /// The store answered with an error.
    #[error("store answered HTTP {status}: {body}")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The start of the error document.
        body: String,
    },
}

impl WriteError {
    /// The object changed or vanished since it was looked at.
    pub fn precondition_failed(&self) -> bool {
        matches!(self, WriteError::Refused { status, .. } if *status == StatusCode::PRECONDITION_FAILED)
    }

    /// The object does not exist (any more).
    pub fn not_found(&self) -> bool {
        matches!(self, WriteError::Refused { status, .. } if *status == StatusCode::NOT_FOUND)
    }

    /// A bounded label for metrics, as [`crate::instrumented::error_kind`].
    pub fn kind(&self) -> &'static str {
        if self.precondition_failed() {
            "precondition"
        } else if self.not_found() {
            "not_found"
        } else if self.transient() {
            "transient"
        } else {
            "other"
        }
    }

    /// The store may accept the same request later.
    pub fn transient(&self) -> bool {
        match self {
            WriteError::Request(_) => true,
            WriteError::Refused { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
        }
    }
}

impl Cloud {
    fn store(&self) -> &dyn ObjectStore {
        match self {
            Cloud::S3(store, _) => store.as_ref(),
            Cloud::Azure(store) => store.as_ref(),
            Cloud::Gcs(store, _, _) => store.as_ref(),
        }
    }

    /// Writes `attributes` on the committed object `location`.
    ///
    /// On S3 and Azure `attributes` is the object's whole new set (what is
    /// not named is dropped); on GCS the metadata keys named are merged in.
    async fn write(
        &self,
        http: &reqwest::Client,
        location: &Path,
        precondition: &Precondition,
        attributes: &Attributes,
    ) -> std::result::Result<(), WriteError> {
        let request_error = |e: String| WriteError::Request(e);
        let mut headers = HeaderMap::new();
        let mut add = |name: String, value: &str| -> std::result::Result<(), WriteError> {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| request_error(e.to_string()))?;
            let value = HeaderValue::from_str(value).map_err(|e| request_error(e.to_string()))?;
            headers.insert(name, value);
            Ok(())
        };
        let request = match self {
            Cloud::S3(store, bucket) => {
                let key: String =
                    percent_encoding::utf8_percent_encode(location.as_ref(), COPY_SOURCE).collect();
                add("x-amz-copy-source".into(), &format!("/{bucket}/{key}"))?;
                add("x-amz-metadata-directive".into(), "REPLACE")?;
                if let Some(etag) = &precondition.e_tag {
                    add("x-amz-copy-source-if-match".into(), etag)?;
                }
                for (attribute, value) in attributes.iter() {
                    let name = match attribute {
                        Attribute::ContentType => "content-type".to_string(),
                        Attribute::ContentEncoding => "content-encoding".to_string(),
                        Attribute::ContentDisposition => "content-disposition".to_string(),
                        Attribute::ContentLanguage => "content-language".to_string(),
                        Attribute::CacheControl => "cache-control".to_string(),
                        Attribute::StorageClass => "x-amz-storage-class".to_string(),
                        Attribute::Metadata(key) => format!("x-amz-meta-{key}"),
                        _ => continue,
                    };
                    add(name, value.as_ref())?;
                }
                let options =
                    headers
                        .iter()
                        .fold(SignedUrlOptions::new(), |options, (name, value)| {
                            options.with_signed_header(name.clone(), value.clone())
                        });
                let url = store
                    .signed_url_opts(Method::PUT, location, URL_LIFETIME, &options)
                    .await
                    .map_err(|e| request_error(crate::errors::error_chain(&e)))?;
                http.put(url).header("content-length", "0")
            }
            Cloud::Azure(store) => {
                add("x-ms-version".into(), "2023-11-03")?;
                if let Some(etag) = &precondition.e_tag {
                    add("if-match".into(), etag)?;
                }
                for (attribute, value) in attributes.iter() {
                    if let Attribute::Metadata(key) = attribute {
                        add(format!("x-ms-meta-{key}"), value.as_ref())?;
                    }
                }
                let mut url = store
                    .signed_url(Method::PUT, location, URL_LIFETIME)
                    .await
                    .map_err(|e| request_error(crate::errors::error_chain(&e)))?;
                url.query_pairs_mut().append_pair("comp", "metadata");
                http.put(url).header("content-length", "0")
            }
            Cloud::Gcs(store, bucket, base) => {
                let metadata: serde_json::Map<String, serde_json::Value> = attributes
                    .iter()
                    .filter_map(|(attribute, value)| match attribute {
                        Attribute::Metadata(key) => Some((
                            key.to_string(),
                            serde_json::Value::String(value.to_string()),
                        )),
                        _ => None,
                    })
                    .collect();
                let object: String = percent_encoding::utf8_percent_encode(
                    location.as_ref(),
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .collect();
                let mut url = reqwest::Url::parse(&format!(
                    "{}/storage/v1/b/{bucket}/o/{object}",
                    base.trim_end_matches('/')
                ))
                .map_err(|e| request_error(e.to_string()))?;
                if let Some(generation) = &precondition.version {
                    url.query_pairs_mut()
                        .append_pair("ifGenerationMatch", generation);
                }
                let body = serde_json::to_vec(&serde_json::json!({ "metadata": metadata }))
                    .map_err(|e| request_error(e.to_string()))?;
                let request = http
                    .patch(url)
                    .header("content-type", "application/json")
                    .body(body);
                with_gcs_token(store, request).await?
            }
        };
        let response = request
            .headers(headers)
            .send()
            .await
            // The URL carries a signature: never in a log line.
            .map_err(|e| request_error(crate::errors::error_chain(&e.without_url())))?;
        let status = response.status();
        // S3 may answer a copy 200 with an error document.
        let body = response.text().await.unwrap_or_default();
        if status.is_success() && !body.contains("<Error>") {
            Ok(())
        } else {
            Err(WriteError::Refused {
                // An error document inside a 200: S3's copy failed late.
                status: if status.is_success() {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    status
                },
                body: clipped(&body),
            })
        }
    }
}

/// `request` with the OAuth token object_store uses for `store` (none for
/// an emulator without OAuth, whose token is empty).
async fn with_gcs_token(
    store: &GoogleCloudStorage,
    request: reqwest::RequestBuilder,
) -> std::result::Result<reqwest::RequestBuilder, WriteError> {
    let credential = store
        .credentials()
        .get_credential()
        .await
        .map_err(|e| WriteError::Request(crate::errors::error_chain(&e)))?;
    Ok(if credential.bearer.is_empty() {
        request
    } else {
        request.bearer_auth(&credential.bearer)
    })
}

/// The start of a store's error document, on one line, for a log.
fn clipped(body: &str) -> String {
    body.chars()
        .take(600)
        .collect::<String>()
        .replace(char::is_control, " ")
}

/// Writes metadata onto committed objects of one cloud store (see the
/// module header for how each cloud does it).
#[derive(Debug)]
pub struct MetadataWriter {
    cloud: Cloud,
    http: reqwest::Client,
}

impl MetadataWriter {
    /// Whether [`Self::replace`] needs the object's whole attribute set
    /// (S3 and Azure replace; GCS merges).
    pub fn replaces_all(&self) -> bool {
        !matches!(self.cloud, Cloud::Gcs(..))
    }

    /// The URL scheme family of the cloud (`s3`, `az`, `gs`).
    pub fn family(&self) -> &'static str {
        match self.cloud {
            Cloud::S3(..) => "s3",
            Cloud::Azure(_) => "az",
            Cloud::Gcs(..) => "gs",
        }
    }

    /// Writes `attributes` on `location` if it is still the version
    /// `precondition` names.
    /// Timed and counted like the store's own requests (operation
    /// `set_metadata`).
    pub async fn replace(
        &self,
        location: &Path,
        precondition: &Precondition,
        attributes: &Attributes,
    ) -> std::result::Result<(), WriteError> {
        self.timed(
            "set_metadata",
            self.cloud
                .write(&self.http, location, precondition, attributes),
        )
        .await
    }

    /// Runs `request`, timed and counted like the store's own requests
    /// under `operation`.
    async fn timed<T>(
        &self,
        operation: &'static str,
        request: impl std::future::Future<Output = std::result::Result<T, WriteError>>,
    ) -> std::result::Result<T, WriteError> {
        let started = std::time::Instant::now();
        let result = request.await;
        crate::metrics::storage_op(
            self.family(),
            operation,
            started.elapsed(),
            result.as_ref().err().map(WriteError::kind),
        );
        result
    }

    /// The storage class of an S3 object (`None`: STANDARD, or not S3).
    /// object_store's HEAD does not return it, and a metadata REPLACE
    /// would otherwise move the object to STANDARD.
    pub async fn storage_class(
        &self,
        location: &Path,
    ) -> std::result::Result<Option<String>, WriteError> {
        let Cloud::S3(store, _) = &self.cloud else {
            return Ok(None);
        };
        let url = store
            .signed_url(Method::HEAD, location, URL_LIFETIME)
            .await
            .map_err(|e| WriteError::Request(crate::errors::error_chain(&e)))?;
        let response = self
            .http
            .head(url)
            .send()
            .await
            .map_err(|e| WriteError::Request(crate::errors::error_chain(&e.without_url())))?;
        let status = response.status();
        if !status.is_success() {
            return Err(WriteError::Refused {
                status,
                body: String::new(),
            });
        }
        Ok(response
            .headers()
            .get("x-amz-storage-class")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }
}

/// A cloud store that completes multipart uploads with their late attributes.
#[derive(Debug)]
pub(crate) struct CloudAttributesStore {
    writer: Arc<MetadataWriter>,
}

/// The store's client options that the metadata requests must follow too:
/// they go to the same endpoint as object_store's own, so an endpoint with
/// a self-signed certificate (`allow_invalid_certificates`) or one reached
/// through a proxy (`proxy_url`, `proxy_ca_certificate`, `proxy_excludes`)
/// served uploads while every digest write failed (logged, then computed
/// on demand).
#[derive(Debug)]
pub(crate) struct HttpSettings {
    accept_invalid_certs: bool,
    proxy_url: Option<String>,
    proxy_ca_certificate: Option<String>,
    proxy_excludes: Option<String>,
}

impl HttpSettings {
    /// Reads the keys above from a store's options (lower-case, as
    /// object_store names them); a boolean is read as object_store reads it.
    pub(crate) fn from_options(options: &std::collections::BTreeMap<String, String>) -> Self {
        let text = |key: &str| options.get(key).cloned().filter(|v| !v.is_empty());
        Self {
            accept_invalid_certs: options.get("allow_invalid_certificates").is_some_and(|v| {
                matches!(
                    v.to_ascii_lowercase().as_str(),
                    "1" | "true" | "on" | "yes" | "y"
                )
            }),
            proxy_url: text("proxy_url"),
            proxy_ca_certificate: text("proxy_ca_certificate"),
            proxy_excludes: text("proxy_excludes"),
        }
    }

    fn client(&self) -> std::result::Result<reqwest::Client, reqwest::Error> {
        // A self-copy of up to 5 GiB runs server-side within one request.
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .danger_accept_invalid_certs(self.accept_invalid_certs);
        if let Some(url) = &self.proxy_url {
            let mut proxy = reqwest::Proxy::all(url)?;
            if let Some(pem) = &self.proxy_ca_certificate {
                let certificate = reqwest::tls::Certificate::from_pem(pem.as_bytes())?;
                builder = builder.tls_certs_merge(std::iter::once(certificate));
            }
            if let Some(excludes) = &self.proxy_excludes {
                proxy = proxy.no_proxy(reqwest::NoProxy::from_string(excludes));
            }
            builder = builder.proxy(proxy);
        }
        builder.build()
    }
}

impl CloudAttributesStore {
    /// Wraps the typed store; its metadata requests follow `http`.
    pub(crate) fn new(
        cloud: Cloud,
        http: &HttpSettings,
    ) -> std::result::Result<Self, reqwest::Error> {
        Ok(Self {
            writer: Arc::new(MetadataWriter {
                cloud,
                http: http.client()?,
            }),
        })
    }

    /// The writer, shared with `MFMT`.
    pub(crate) fn writer(&self) -> Arc<MetadataWriter> {
        self.writer.clone()
    }

    fn inner(&self) -> &dyn ObjectStore {
        self.writer.cloud.store()
    }
}

impl fmt::Display for CloudAttributesStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloudAttributes({})", self.inner())
    }
}

#[async_trait]
impl ObjectStore for CloudAttributesStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner().put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let late = opts.extensions.get::<CompletionAttributes>().cloned();
        let attributes = opts.attributes.clone();
        let inner = self.inner().put_multipart_opts(location, opts).await?;
        Ok(Box::new(LateUpload {
            inner,
            location: location.clone(),
            attributes,
            late,
            writer: self.writer.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner().get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.inner().get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner().delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner().list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner().list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner().list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner().copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner().rename_opts(from, to, options).await
    }
}

/// A multipart upload that writes its late attributes after completing.
#[derive(Debug)]
struct LateUpload {
    inner: Box<dyn MultipartUpload>,
    location: Path,
    /// The attributes given at creation (REPLACE on S3 must repeat them).
    attributes: Attributes,
    late: Option<CompletionAttributes>,
    writer: Arc<MetadataWriter>,
}

#[async_trait]
impl MultipartUpload for LateUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let result = self.inner.complete().await?;
        let Some(late) = self.late.as_ref().and_then(CompletionAttributes::get) else {
            return Ok(result);
        };
        let mut attributes = if self.writer.replaces_all() {
            self.attributes.clone()
        } else {
            Attributes::new()
        };
        for (attribute, value) in late.iter() {
            attributes.insert(attribute.clone(), value.clone());
        }
        let precondition = Precondition {
            e_tag: result.e_tag.clone(),
            version: result.version.clone(),
        };
        if let Err(cause) = self
            .writer
            .replace(&self.location, &precondition, &attributes)
            .await
        {
            tracing::warn!(key = %self.location, %cause, "could not store the digest of a multipart upload; its checksum will be computed on demand");
        }
        // The committed object's ETag changed on S3 (a copy); callers only
        // use the result to know the upload committed.
        Ok(result)
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}
