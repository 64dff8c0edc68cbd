//! One code path from a storage URL plus options to an object store.
//!
//! `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`,
//! `file:///abs/dir` and `memory://` all go through [`open_store`]. Option
//! keys are object_store's own names (`aws_endpoint`, `google_service_account`,
//! `azure_storage_use_emulator`, client keys such as `timeout`), checked here
//! so a typo fails start-up instead of being silently ignored. The standard
//! cloud environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`) are honoured as
//! object_store's `from_env` builders do; explicit options win over them.

pub(crate) mod preflight;
pub(crate) mod probe;

use crate::cloud_attributes::{Cloud, CloudAttributesStore, HttpSettings, MetadataWriter};
use object_store::aws::AmazonS3ConfigKey;
use object_store::azure::AzureConfigKey;
use object_store::gcp::GoogleConfigKey;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use thiserror::Error;
use url::Url;

/// Why a storage URL could not be turned into a store.
#[derive(Debug, Error)]
pub enum StoreUrlError {
    /// The scheme is not one we serve.
    #[error(
        "unsupported storage scheme {scheme:?} (use s3://, gs://, az://, file:// or memory://)"
    )]
    UnsupportedScheme {
        /// The scheme found in the URL.
        scheme: String,
    },
    /// An option key is not one object_store knows for this scheme.
    #[error("unknown storage option {key:?} for {scheme}:// storage")]
    UnknownOption {
        /// The scheme the option was given for.
        scheme: String,
        /// The unknown key.
        key: String,
    },
    /// `file://` URLs must name an absolute directory.
    #[error("file:// storage needs an absolute directory, e.g. file:///var/lib/bucketftp")]
    NotAbsolute,
    /// The local root directory could not be created or opened.
    #[error("cannot use local directory {dir}")]
    LocalDir {
        dir: PathBuf,
        /// The file system error.
        #[source]
        source: std::io::Error,
    },
    /// The prefix part of the URL is not a valid object path.
    #[error("invalid prefix in storage url")]
    Prefix(#[source] object_store::path::Error),
    /// The options cannot work (no credentials, plain http not allowed).
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    /// object_store refused the configuration (bad bucket, bad option value).
    #[error("invalid storage configuration")]
    Build(#[source] object_store::Error),
}

/// Which family a store belongs to. Directories behave differently on a
/// file system (they exist on their own) than on object stores (they are
/// prefixes or marker objects), so the back-end needs to know.
#[derive(Debug, Clone)]
pub(crate) enum StoreKind {
    /// `memory://`: per-process, for tests and trials.
    Memory,
    /// `file://`: a directory on a local (or mounted) file system.
    Local {
        /// The absolute directory all keys live under.
        root: PathBuf,
        /// The same store, typed, for its key → file-path mapping.
        fs: Arc<LocalFileSystem>,
        /// The store uploads write into directly (`crate::backend::spliced`).
        xattrs: Arc<crate::local_attributes::XattrStore>,
    },
    /// `s3://`, `gs://`, `az://`.
    Cloud {
        /// The URL scheme, for logs and metrics labels.
        scheme: &'static str,
    },
}

/// A store ready for use: the client, the key prefix from the URL, and what
/// kind of store it is.
#[derive(Debug, Clone)]
pub struct OpenedStore {
    /// The object store client, shared by every session.
    pub store: Arc<dyn ObjectStore>,
    /// Every key the gateway writes starts with this (from the URL's path).
    pub base: ObjectPath,
    /// File system or object store.
    pub(crate) kind: StoreKind,
    /// The URL, with any credentials removed, for logs.
    pub(crate) display_url: String,
    /// The endpoint a cloud store talks to (for start-up messages).
    pub(crate) endpoint: Option<String>,
    /// The bucket or container of a cloud store (for start-up messages).
    pub(crate) bucket: Option<String>,
    /// Writes metadata onto committed objects (clouds only; `MFMT`).
    pub metadata_writer: Option<Arc<MetadataWriter>>,
}

/// Options we set unless the operator does: object_store's 30 s default
/// timeout covers the whole request *including the body*, which would cut a
/// RETR to a slow FTP client; we bound connecting instead and leave long
/// bodies alone.
const DEFAULT_CLIENT_OPTIONS: &[(&str, &str)] = &[("timeout", "6h"), ("connect_timeout", "10s")];

/// Every store is wrapped so its requests are timed and counted.
fn instrumented(store: Arc<dyn ObjectStore>, backend: &'static str) -> Arc<dyn ObjectStore> {
    Arc::new(crate::instrumented::InstrumentedStore::new(store, backend))
}

/// Opens the store a URL names. `env` is the process environment (passed in
/// so tests can control it).
pub(crate) fn open_store(
    url: &Url,
    options: &BTreeMap<String, String>,
    env: &BTreeMap<String, String>,
    retry: &Retry,
) -> Result<OpenedStore, StoreUrlError> {
    let display_url = redact(url);
    match url.scheme() {
        "memory" => {
            reject_options("memory", options)?;
            Ok(OpenedStore {
                store: instrumented(Arc::new(InMemory::new()), "memory"),
                base: ObjectPath::ROOT,
                kind: StoreKind::Memory,
                display_url,
                endpoint: None,
                bucket: None,
                metadata_writer: None,
            })
        }
        "file" => {
            reject_options("file", options)?;
            let dir = url
                .to_file_path()
                .map_err(|()| StoreUrlError::NotAbsolute)?;
            std::fs::create_dir_all(&dir).map_err(|source| StoreUrlError::LocalDir {
                dir: dir.clone(),
                source,
            })?;
            let root = dir
                .canonicalize()
                .map_err(|source| StoreUrlError::LocalDir {
                    dir: dir.clone(),
                    source,
                })?;
            let fs =
                Arc::new(LocalFileSystem::new_with_prefix(&root).map_err(StoreUrlError::Build)?);
            let xattrs = Arc::new(crate::local_attributes::XattrStore::new(fs.clone()));
            Ok(OpenedStore {
                store: instrumented(xattrs.clone(), "file"),
                base: ObjectPath::ROOT,
                kind: StoreKind::Local { root, fs, xattrs },
                display_url,
                endpoint: None,
                bucket: None,
                metadata_writer: None,
            })
        }
        scheme @ ("s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss") => {
            let (family, env_prefix, check): (&'static str, &str, fn(&str) -> bool) = match scheme {
                "s3" | "s3a" => ("s3", "AWS_", |k| AmazonS3ConfigKey::from_str(k).is_ok()),
                "gs" => ("gs", "GOOGLE_", |k| GoogleConfigKey::from_str(k).is_ok()),
                _ => ("az", "AZURE_", |k| AzureConfigKey::from_str(k).is_ok()),
            };
            let mut merged: BTreeMap<String, String> = BTreeMap::new();
            for (key, value) in DEFAULT_CLIENT_OPTIONS {
                merged.insert((*key).to_string(), (*value).to_string());
            }
            for (key, value) in env {
                let lower = key.to_ascii_lowercase();
                if key.starts_with(env_prefix) && check(&lower) {
                    merged.insert(lower, value.clone());
                }
            }
            for (key, value) in options {
                let lower = key.to_ascii_lowercase();
                if !check(&lower) {
                    return Err(StoreUrlError::UnknownOption {
                        scheme: family.to_string(),
                        key: key.clone(),
                    });
                }
                merged.insert(lower, value.clone());
            }
            preflight::preflight(family, &merged)?;
            let endpoint = preflight::endpoint_of(family, &merged, env);
            if family == "s3" {
                unsigned_payload_over_https(&mut merged, &endpoint);
            }
            let (store, metadata_writer) =
                build_cloud(family, url, merged, retry).map_err(StoreUrlError::Build)?;
            let base = url_prefix(url)?;
            let what = if family == "az" {
                "container"
            } else {
                "bucket"
            };
            Ok(OpenedStore {
                store: instrumented(store, family),
                base,
                kind: StoreKind::Cloud { scheme: family },
                display_url,
                endpoint: Some(endpoint),
                bucket: url.host_str().map(|b| format!("{what} {b}")),
                metadata_writer: Some(metadata_writer),
            })
        }
        other => Err(StoreUrlError::UnsupportedScheme {
            scheme: other.to_string(),
        }),
    }
}

/// How long object_store keeps retrying a failing request (throttling,
/// 5xx, timeouts, connection errors) before the FTP client gets its 4xx.
/// object_store's own default of three minutes is longer than most devices
/// wait for a reply. Set by `storage.retry_max` and `storage.retry_timeout`
/// ([`crate::config::StorageConfig::retry`], where the defaults are).
#[derive(Debug, Clone)]
pub(crate) struct Retry {
    /// Most retries of one request.
    pub max_retries: usize,
    /// Give up retrying once this much time has passed since the first try.
    pub timeout: std::time::Duration,
}

/// One builder per cloud, configured key by key (the keys were checked
/// above), with our retry policy, which `parse_url_opts` cannot set; and
/// the metadata writer that shares its client.
fn build_cloud(
    family: &str,
    url: &Url,
    options: BTreeMap<String, String>,
    retry: &Retry,
) -> object_store::Result<(Arc<dyn ObjectStore>, Arc<MetadataWriter>)> {
    let retry = object_store::RetryConfig {
        max_retries: retry.max_retries,
        retry_timeout: retry.timeout,
        ..Default::default()
    };
    let http = HttpSettings::from_options(&options);
    // `from_str` cannot fail here: every key passed `check` above.
    Ok(match family {
        "s3" => {
            let mut b = object_store::aws::AmazonS3Builder::new().with_url(url.as_str());
            for (k, v) in options {
                if let Ok(key) = AmazonS3ConfigKey::from_str(&k) {
                    b = b.with_config(key, v);
                }
            }
            let bucket = url.host_str().unwrap_or_default().to_string();
            cloud_attributes(
                Cloud::S3(Arc::new(b.with_retry(retry).build()?), bucket),
                &http,
            )?
        }
        "gs" => {
            let json_base = gcs_json_base(&options);
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::new().with_url(url.as_str());
            for (k, v) in options {
                if let Ok(key) = GoogleConfigKey::from_str(&k) {
                    b = b.with_config(key, v);
                }
            }
            let bucket = url.host_str().unwrap_or_default().to_string();
            cloud_attributes(
                Cloud::Gcs(Arc::new(b.with_retry(retry).build()?), bucket, json_base),
                &http,
            )?
        }
        _ => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::new().with_url(url.as_str());
            for (k, v) in options {
                if let Ok(key) = AzureConfigKey::from_str(&k) {
                    b = b.with_config(key, v);
                }
            }
            cloud_attributes(Cloud::Azure(Arc::new(b.with_retry(retry).build()?)), &http)?
        }
    })
}

/// Over https, S3 request bodies are not hashed for the signature
/// (`UNSIGNED-PAYLOAD`, what the AWS SDKs send there): TLS already protects
/// them in transit, and SigV4's SHA-256 of every part cost as much CPU as
/// the object's own digest (~0.5 s per GiB, docs/benchmarks.md). Over
/// plain http the signature is the only protection of the body, so it
/// stays signed. `aws_unsigned_payload` set by the operator wins.
fn unsigned_payload_over_https(options: &mut BTreeMap<String, String>, endpoint: &str) {
    let chosen = ["aws_unsigned_payload", "unsigned_payload"]
        .iter()
        .any(|key| options.contains_key(*key));
    let https = endpoint
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
    if !chosen && https {
        options.insert("aws_unsigned_payload".into(), "true".into());
    }
}

/// Cloud stores are wrapped so multipart uploads get their digests once
/// committed (see [`crate::cloud_attributes`]).
fn cloud_attributes(
    cloud: Cloud,
    http: &HttpSettings,
) -> object_store::Result<(Arc<dyn ObjectStore>, Arc<MetadataWriter>)> {
    CloudAttributesStore::new(cloud, http)
        .map(|store| {
            let writer = store.writer();
            (Arc::new(store) as Arc<dyn ObjectStore>, writer)
        })
        .map_err(|e| object_store::Error::Generic {
            store: "bucketftp",
            source: Box::new(e),
        })
}

/// Where GCS's JSON API answers (metadata PATCH): the XML API's base URL,
/// which serves both, as object_store chooses it: the `google_base_url`
/// option, else the key file's `gcs_base_url` (emulators), else Google's.
fn gcs_json_base(options: &BTreeMap<String, String>) -> String {
    const DEFAULT: &str = "https://storage.googleapis.com";
    if let Some(base) = options
        .get("google_base_url")
        .or_else(|| options.get("base_url"))
    {
        return base.clone();
    }
    let key_json = ["google_service_account_key", "service_account_key"]
        .iter()
        .find_map(|k| options.get(*k).cloned())
        .or_else(|| {
            [
                "google_service_account",
                "service_account",
                "google_service_account_path",
                "service_account_path",
            ]
            .iter()
            .find_map(|k| options.get(*k))
            .and_then(|path| std::fs::read_to_string(path).ok())
        });
    key_json
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|json| json.get("gcs_base_url")?.as_str().map(str::to_string))
        .unwrap_or_else(|| DEFAULT.to_string())
}

/// The key prefix in a cloud URL (`s3://bucket/a/b` → `a/b`).
///
/// `parse_url_opts` returns a prefix too, but interprets some Azure URL forms
/// specially; for the `scheme://bucket/prefix` form we document, the path is
/// the prefix.
fn url_prefix(url: &Url) -> Result<ObjectPath, StoreUrlError> {
    let decoded = percent_decode(url.path());
    ObjectPath::parse(decoded).map_err(StoreUrlError::Prefix)
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn reject_options(scheme: &str, options: &BTreeMap<String, String>) -> Result<(), StoreUrlError> {
    match options.keys().next() {
        Some(key) => Err(StoreUrlError::UnknownOption {
            scheme: scheme.to_string(),
            key: key.clone(),
        }),
        None => Ok(()),
    }
}

/// The URL without user info or query (which may carry a SAS token).
fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(url: &str, opts: &[(&str, &str)]) -> Result<OpenedStore, StoreUrlError> {
        let options = opts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        open_store(
            &Url::parse(url).unwrap(),
            &options,
            &BTreeMap::new(),
            // Nothing here reaches a store that fails.
            &Retry {
                max_retries: 0,
                timeout: std::time::Duration::ZERO,
            },
        )
    }

    #[test]
    fn memory_and_file() {
        assert!(matches!(
            open("memory://", &[]).unwrap().kind,
            StoreKind::Memory
        ));
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/sub", dir.path().display());
        let opened = open(&url, &[]).unwrap();
        assert!(matches!(opened.kind, StoreKind::Local { .. }));
        assert!(dir.path().join("sub").is_dir());
    }

    #[test]
    fn cloud_urls_build_with_prefix() {
        let s3 = open(
            "s3://bucket/some/prefix",
            &[
                ("aws_endpoint", "http://127.0.0.1:9"),
                ("aws_allow_http", "true"),
                ("aws_region", "us-east-1"),
                ("aws_access_key_id", "k"),
                ("aws_secret_access_key", "s"),
            ],
        )
        .unwrap();
        assert_eq!(s3.base.as_ref(), "some/prefix");
        assert!(matches!(s3.kind, StoreKind::Cloud { scheme: "s3" }));
        let az = open(
            "az://container/p",
            &[("azure_storage_use_emulator", "true")],
        )
        .unwrap();
        assert_eq!(az.base.as_ref(), "p");
        let gs = open("gs://bucket", &[("google_bucket", "bucket")]).unwrap();
        assert_eq!(gs.base, ObjectPath::ROOT);
    }

    #[test]
    fn s3_bodies_are_signed_over_http_only() {
        let decide = |endpoint: &str, given: &[(&str, &str)]| {
            let mut options: BTreeMap<String, String> = given
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            unsigned_payload_over_https(&mut options, endpoint);
            options
                .get("aws_unsigned_payload")
                .or_else(|| options.get("unsigned_payload"))
                .cloned()
        };
        assert_eq!(
            decide("https://s3.eu-west-1.amazonaws.com", &[]).as_deref(),
            Some("true")
        );
        assert_eq!(
            decide("HTTPS://minio.internal:9000", &[]).as_deref(),
            Some("true")
        );
        assert_eq!(decide("http://127.0.0.1:9000", &[]), None);
        assert_eq!(
            decide(
                "https://s3.amazonaws.com",
                &[("aws_unsigned_payload", "false")]
            )
            .as_deref(),
            Some("false"),
            "the operator's choice wins"
        );
        assert_eq!(
            decide("https://s3.amazonaws.com", &[("unsigned_payload", "false")]).as_deref(),
            Some("false")
        );
    }

    #[test]
    fn typos_are_refused() {
        let err = open("s3://bucket", &[("aws_endpont", "x")]).unwrap_err();
        assert!(err.to_string().contains("aws_endpont"), "{err}");
        assert!(open("memory://", &[("x", "y")]).is_err());
        assert!(matches!(
            open("ftp://x", &[]),
            Err(StoreUrlError::UnsupportedScheme { .. })
        ));
    }

    #[test]
    fn secrets_stay_out_of_the_display_url() {
        let url = Url::parse("s3://key:secret@bucket/p?sig=abc").unwrap();
        let shown = redact(&url);
        assert!(
            !shown.contains("secret") && !shown.contains("abc"),
            "{shown}"
        );
    }
}
