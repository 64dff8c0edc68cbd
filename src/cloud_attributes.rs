//! Digests of multipart uploads on S3 and Azure, written onto the object
//! once it is committed.
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
//! - **Azure**: `Set Blob Metadata` (no copy), through a SAS URL.
//!
//! Failure never fails the upload (it is already committed): it is logged,
//! and the checksum of that object is computed on demand instead. GCS is
//! not covered (no emulator here accepts object_store's XML writes).

use crate::local_attributes::CompletionAttributes;
use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3;
use object_store::azure::MicrosoftAzure;
use object_store::path::Path;
use object_store::signer::{SignedUrlOptions, Signer};
use object_store::{
    Attribute, Attributes, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    Result, UploadPart,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
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
pub enum Cloud {
    /// S3 and its bucket name.
    S3(Arc<AmazonS3>, String),
    /// Azure Blob.
    Azure(Arc<MicrosoftAzure>),
}

impl Cloud {
    fn store(&self) -> &dyn ObjectStore {
        match self {
            Cloud::S3(store, _) => store.as_ref(),
            Cloud::Azure(store) => store.as_ref(),
        }
    }

    /// Writes `attributes` on the committed object `location` (`etag`).
    async fn write(
        &self,
        http: &reqwest::Client,
        location: &Path,
        etag: Option<&str>,
        attributes: &Attributes,
    ) -> std::result::Result<(), String> {
        let mut headers = HeaderMap::new();
        let mut add = |name: String, value: &str| -> std::result::Result<(), String> {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            headers.insert(name, value);
            Ok(())
        };
        let request = match self {
            Cloud::S3(store, bucket) => {
                let key: String =
                    percent_encoding::utf8_percent_encode(location.as_ref(), COPY_SOURCE).collect();
                add("x-amz-copy-source".into(), &format!("/{bucket}/{key}"))?;
                add("x-amz-metadata-directive".into(), "REPLACE")?;
                if let Some(etag) = etag {
                    add("x-amz-copy-source-if-match".into(), etag)?;
                }
                for (attribute, value) in attributes.iter() {
                    let name = match attribute {
                        Attribute::ContentType => "content-type".to_string(),
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
                    .map_err(|e| crate::error_chain(&e))?;
                http.put(url)
            }
            Cloud::Azure(store) => {
                add("x-ms-version".into(), "2023-11-03")?;
                if let Some(etag) = etag {
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
                    .map_err(|e| crate::error_chain(&e))?;
                url.query_pairs_mut().append_pair("comp", "metadata");
                http.put(url)
            }
        };
        let response = request
            .headers(headers)
            .header("content-length", "0")
            .send()
            .await
            // The URL carries a signature: never in a log line.
            .map_err(|e| crate::error_chain(&e.without_url()))?;
        let status = response.status();
        // S3 may answer a copy 200 with an error document.
        let body = response.text().await.unwrap_or_default();
        if status.is_success() && !body.contains("<Error>") {
            Ok(())
        } else {
            Err(format!(
                "HTTP {status}: {}",
                body.chars()
                    .take(600)
                    .collect::<String>()
                    .replace(char::is_control, " ")
            ))
        }
    }
}

/// A cloud store that completes multipart uploads with their late attributes.
#[derive(Debug)]
pub struct CloudAttributesStore {
    cloud: Arc<Cloud>,
    http: reqwest::Client,
}

impl CloudAttributesStore {
    /// Wraps the typed store.
    pub fn new(cloud: Cloud) -> std::result::Result<Self, reqwest::Error> {
        Ok(Self {
            cloud: Arc::new(cloud),
            // A self-copy of up to 5 GiB runs server-side within one request.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .build()?,
        })
    }
}

impl fmt::Display for CloudAttributesStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloudAttributes({})", self.cloud.store())
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
        self.cloud.store().put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let late = opts.extensions.get::<CompletionAttributes>().cloned();
        let attributes = opts.attributes.clone();
        let inner = self
            .cloud
            .store()
            .put_multipart_opts(location, opts)
            .await?;
        Ok(Box::new(LateUpload {
            inner,
            location: location.clone(),
            attributes,
            late,
            cloud: self.cloud.clone(),
            http: self.http.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.cloud.store().get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.cloud.store().get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.cloud.store().delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.cloud.store().list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.cloud.store().list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.cloud.store().list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.cloud.store().copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.cloud.store().rename_opts(from, to, options).await
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
    cloud: Arc<Cloud>,
    http: reqwest::Client,
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
        let mut attributes = self.attributes.clone();
        for (attribute, value) in late.iter() {
            attributes.insert(attribute.clone(), value.clone());
        }
        if let Err(cause) = self
            .cloud
            .write(
                &self.http,
                &self.location,
                result.e_tag.as_deref(),
                &attributes,
            )
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
