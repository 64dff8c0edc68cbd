//! Cloud store options that cannot work, refused before any request: an S3
//! endpoint with no credentials (object_store would otherwise ask the
//! instance-metadata service at 169.254.169.254 and fail minutes later with
//! a message about it) and a plain-`http` endpoint without the option that
//! allows it. Also the endpoint a store talks to, for messages.

use object_store::aws::AmazonS3ConfigKey;
use object_store::ClientConfigKey;
use std::collections::BTreeMap;
use std::str::FromStr;
use thiserror::Error;

/// A cloud store's options that cannot work, found before any request.
#[derive(Debug, Error)]
pub enum PreflightError {
    /// A custom S3 endpoint and nothing that gives credentials.
    #[error(
        "no credentials for {endpoint}: set aws_access_key_id and aws_secret_access_key \
         (storage options, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment), \
         aws_skip_signature=true for a public bucket, or aws_metadata_endpoint to take them \
         from an instance-metadata service"
    )]
    NoCredentials {
        /// The endpoint the store would talk to.
        endpoint: String,
    },
    /// An `http://` endpoint without the option that allows plain HTTP.
    #[error(
        "endpoint {endpoint} is plain http: add the storage option {option}=true, or use https"
    )]
    PlainHttp {
        endpoint: String,
        /// The option that allows it (`aws_allow_http`, …).
        option: &'static str,
    },
}

/// Checks the merged options of a cloud store (`family` is `s3`, `gs` or
/// `az`; keys are lower-case object_store names).
pub(crate) fn preflight(
    family: &str,
    options: &BTreeMap<String, String>,
) -> Result<(), PreflightError> {
    if family != "s3" {
        return Ok(());
    }
    let get = |wanted: AmazonS3ConfigKey| {
        options
            .iter()
            .find(|(k, _)| AmazonS3ConfigKey::from_str(k).ok() == Some(wanted))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let truthy = |v: Option<&str>| v.is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let Some(endpoint) = get(AmazonS3ConfigKey::Endpoint) else {
        // Real AWS: the metadata service is how EC2, ECS and EKS hand out
        // credentials, so it stays the fallback there.
        return Ok(());
    };
    let allow_http = truthy(get(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)));
    if endpoint.starts_with("http://") && !allow_http {
        return Err(PreflightError::PlainHttp {
            endpoint: endpoint.to_string(),
            option: "aws_allow_http",
        });
    }
    let has_credentials = get(AmazonS3ConfigKey::AccessKeyId).is_some()
        || truthy(get(AmazonS3ConfigKey::SkipSignature))
        || get(AmazonS3ConfigKey::MetadataEndpoint).is_some()
        || get(AmazonS3ConfigKey::ContainerCredentialsRelativeUri).is_some()
        || get(AmazonS3ConfigKey::ContainerCredentialsFullUri).is_some()
        || get(AmazonS3ConfigKey::WebIdentityTokenFile).is_some();
    if !has_credentials {
        return Err(PreflightError::NoCredentials {
            endpoint: endpoint.to_string(),
        });
    }
    Ok(())
}

/// The endpoint a cloud store talks to, for messages: the configured one,
/// else the cloud's public one.
pub(crate) fn endpoint_of(
    family: &str,
    options: &BTreeMap<String, String>,
    env: &BTreeMap<String, String>,
) -> String {
    let option = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| options.get(*n))
            .map(|v| v.trim().trim_end_matches('/').to_string())
            .filter(|v| !v.is_empty())
    };
    match family {
        "s3" => option(&[
            "aws_endpoint",
            "aws_endpoint_url",
            "endpoint",
            "endpoint_url",
        ])
        .unwrap_or_else(|| {
            let region = option(&["aws_region", "region", "aws_default_region"])
                .unwrap_or_else(|| "us-east-1".into());
            format!("https://s3.{region}.amazonaws.com")
        }),
        "gs" => option(&["google_service_account", "service_account"])
            .and_then(|file| std::fs::read_to_string(file).ok())
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|json| json.get("gcs_base_url")?.as_str().map(String::from))
            .unwrap_or_else(|| "https://storage.googleapis.com".into()),
        _ => {
            if option(&["azure_storage_use_emulator", "use_emulator"])
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            {
                return env
                    .get("AZURITE_BLOB_STORAGE_URL")
                    .map(|u| u.trim_end_matches('/').to_string())
                    .unwrap_or_else(|| "http://127.0.0.1:10000".into());
            }
            option(&["azure_storage_endpoint", "azure_endpoint", "endpoint"]).unwrap_or_else(|| {
                let account = option(&["azure_storage_account_name", "account_name"])
                    .unwrap_or_else(|| "ACCOUNT".into());
                format!("https://{account}.blob.core.windows.net")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn custom_endpoint_needs_credentials_or_an_explicit_metadata_service() {
        let base = [
            ("aws_endpoint", "https://minio.example:9000"),
            ("aws_region", "us-east-1"),
        ];
        let err = preflight("s3", &opts(&base)).unwrap_err().to_string();
        assert!(err.contains("https://minio.example:9000"), "{err}");
        assert!(err.contains("aws_access_key_id"), "{err}");
        for extra in [
            ("aws_access_key_id", "k"),
            ("aws_skip_signature", "true"),
            ("aws_metadata_endpoint", "http://169.254.169.254"),
        ] {
            let mut o = opts(&base);
            o.insert(extra.0.into(), extra.1.into());
            assert!(preflight("s3", &o).is_ok(), "{extra:?}");
        }
        // Real AWS keeps the metadata service (EC2, ECS, EKS).
        assert!(preflight("s3", &opts(&[("aws_region", "eu-west-1")])).is_ok());
    }

    #[test]
    fn plain_http_names_the_option() {
        let o = opts(&[
            ("aws_endpoint", "http://127.0.0.1:9000"),
            ("aws_access_key_id", "k"),
        ]);
        let err = preflight("s3", &o).unwrap_err().to_string();
        assert!(
            err.contains("aws_allow_http=true") && err.contains("http://127.0.0.1:9000"),
            "{err}"
        );
        let mut ok = o.clone();
        ok.insert("aws_allow_http".into(), "true".into());
        assert!(preflight("s3", &ok).is_ok());
        let mut alias = o;
        alias.insert("allow_http".into(), "TRUE".into());
        assert!(preflight("s3", &alias).is_ok());
    }

    #[test]
    fn endpoints_for_messages() {
        let env = BTreeMap::new();
        assert_eq!(
            endpoint_of("s3", &opts(&[("aws_region", "eu-west-1")]), &env),
            "https://s3.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            endpoint_of("s3", &opts(&[("aws_endpoint", "http://h:9/")]), &env),
            "http://h:9"
        );
        assert_eq!(
            endpoint_of("az", &opts(&[("azure_storage_account_name", "acct")]), &env),
            "https://acct.blob.core.windows.net"
        );
        assert_eq!(
            endpoint_of("gs", &opts(&[]), &env),
            "https://storage.googleapis.com"
        );
    }
}
