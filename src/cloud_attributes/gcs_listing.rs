//! A directory's user metadata in one request per 1,000 objects, on GCS.
//!
//! object_store lists GCS through the XML API, whose listing carries no
//! user metadata, so showing the client-set times of a directory's files
//! (`mtime`, see `backend::modified_time`) took one HEAD per file: a LIST of
//! 1,000 files was 1,001 requests, 0.41× unftp-sbe-gcs in the benchmark
//! (docs/benchmarks.md). The JSON API's `objects.list` returns each
//! object's `metadata` with its name, so the gateway asks it for just those
//! two fields, beside the XML listing (not after it), with the same OAuth
//! token object_store uses.

use super::{clipped, with_gcs_token, Cloud, MetadataWriter, WriteError};
use object_store::path::Path;
use object_store::{Attribute, AttributeValue, Attributes};
use serde::Deserialize;
use std::collections::HashMap;

/// Objects per page: the JSON API's maximum.
const PAGE: &str = "1000";

/// Longest wait for one page. The client's own timeout is sized for a
/// self-copy of 5 GiB; a listing that stalls should fall back to HEADs
/// (see `Directories::listed_mtimes`) rather than hold the LIST that long.
const PAGE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The fields of one page of `objects.list` that are read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    #[serde(default)]
    items: Vec<Item>,
    next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Item {
    name: String,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

/// `metadata` as object_store hands it back from a HEAD, so one parser
/// reads both.
fn attributes(metadata: HashMap<String, String>) -> Attributes {
    metadata
        .into_iter()
        .map(|(key, value)| (Attribute::Metadata(key.into()), AttributeValue::from(value)))
        .collect()
}

/// The `prefix` parameter that lists the directory `dir` (its direct
/// children only, with `delimiter=/`), `None` for the bucket's root.
fn prefix_of(dir: &Path) -> Option<String> {
    let dir = dir.as_ref();
    (!dir.is_empty()).then(|| format!("{dir}/"))
}

impl MetadataWriter {
    /// For each object directly in `dir`, what `pick` takes from its user
    /// metadata (objects for which it takes nothing are left out, so the
    /// map holds only what the caller keeps). `Ok(None)`: this cloud's
    /// listings carry no metadata (S3; Azure through object_store's SAS
    /// signer, which signs blobs, not container listings), so the caller
    /// reads it per object. Timed and counted as operation `list_metadata`.
    pub(crate) async fn listed_metadata<T>(
        &self,
        dir: &Path,
        pick: impl Fn(&Attributes) -> Option<T>,
    ) -> Result<Option<HashMap<Path, T>>, WriteError> {
        let Cloud::Gcs(store, bucket, base) = &self.cloud else {
            return Ok(None);
        };
        let listing = async {
            let mut url = reqwest::Url::parse(&format!(
                "{}/storage/v1/b/{bucket}/o",
                base.trim_end_matches('/')
            ))
            .map_err(|e| WriteError::Request(e.to_string()))?;
            url.query_pairs_mut()
                .append_pair("delimiter", "/")
                .append_pair("fields", "items(name,metadata),nextPageToken")
                .append_pair("maxResults", PAGE);
            if let Some(prefix) = prefix_of(dir) {
                url.query_pairs_mut().append_pair("prefix", &prefix);
            }
            let mut found = HashMap::new();
            let mut token: Option<String> = None;
            loop {
                let mut page_url = url.clone();
                if let Some(token) = &token {
                    page_url.query_pairs_mut().append_pair("pageToken", token);
                }
                let request = self.http.get(page_url).timeout(PAGE_WAIT);
                let response = with_gcs_token(store, request)
                    .await?
                    .send()
                    .await
                    .map_err(|e| WriteError::Request(crate::errors::error_chain(&e)))?;
                let status = response.status();
                if !status.is_success() {
                    let body = response.text().await.unwrap_or_default();
                    return Err(WriteError::Refused {
                        status,
                        body: clipped(&body),
                    });
                }
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| WriteError::Request(crate::errors::error_chain(&e)))?;
                let page: Page = serde_json::from_slice(&body)
                    .map_err(|e| WriteError::Request(format!("objects.list answer: {e}")))?;
                for item in page.items {
                    if item.metadata.is_empty() {
                        continue;
                    }
                    let Ok(key) = Path::parse(&item.name) else {
                        continue;
                    };
                    if let Some(value) = pick(&attributes(item.metadata)) {
                        found.insert(key, value);
                    }
                }
                match page.next_page_token {
                    Some(next) if !next.is_empty() => token = Some(next),
                    _ => return Ok(Some(found)),
                }
            }
        };
        self.timed("list_metadata", listing).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_reads_names_metadata_and_the_next_token() {
        let page: Page = serde_json::from_str(
            r#"{"kind":"storage#objects","nextPageToken":"abc",
                "prefixes":["d/sub/"],
                "items":[{"name":"d/a.txt","metadata":{"mtime":"2020-01-02T03:04:05Z"}},
                         {"name":"d/b.txt"}]}"#,
        )
        .unwrap();
        assert_eq!(page.next_page_token.as_deref(), Some("abc"));
        assert_eq!(page.items.len(), 2);
        let a = attributes(page.items[0].metadata.clone());
        assert_eq!(
            a.get(&Attribute::Metadata("mtime".into()))
                .map(|v| v.as_ref()),
            Some("2020-01-02T03:04:05Z")
        );
        assert!(page.items[1].metadata.is_empty());
        let last: Page = serde_json::from_str(r#"{"kind":"storage#objects"}"#).unwrap();
        assert!(last.items.is_empty() && last.next_page_token.is_none());
    }

    #[test]
    fn the_root_lists_without_a_prefix() {
        assert_eq!(prefix_of(&Path::from("")), None);
        assert_eq!(prefix_of(&Path::from("a/b")).as_deref(), Some("a/b/"));
    }
}
