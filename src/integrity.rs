//! What the gateway knows about an object's content: the digests computed
//! while an upload streams, the metadata they are stored under, the
//! `Content-Type` guessed from the name, and digests computed on demand for
//! objects that carry none.
//!
//! Invariant: a stored digest always covers the object's whole content as
//! committed — REST+STOR and APPE hash the kept head and the new bytes
//! together — so a checksum answered from metadata equals one computed by
//! reading the object back.
//!
//! Cost, measured on this project's 2-core build machine (one core, 64 KiB
//! updates, 256 MiB): SHA-256 1.6 GiB/s (SHA-NI), CRC32 20 GiB/s, MD5
//! 0.55 GiB/s. An upload therefore computes SHA-256 and CRC32 (together
//! ~0.65 ns/byte) but not MD5, which would triple the hashing cost of every
//! upload for a digest only `SITE MD5`/`XMD5` ask for; those compute it on
//! demand.

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::{Attribute, AttributeValue, Attributes};
use sha2::Digest as _;
use std::fmt;
use std::str::FromStr;

/// User-metadata key of the SHA-256 (64 lowercase hex digits) of the whole
/// object. S3 shows it as `x-amz-meta-sha256`, Azure `x-ms-meta-sha256`,
/// GCS `x-goog-meta-sha256`, `file://` as the `user.bucketftp.sha256` xattr.
pub(crate) const SHA256_KEY: &str = "sha256";
/// User-metadata key of the CRC-32 (ISO-HDLC, as `crc32`/zlib; 8 hex digits).
pub(crate) const CRC32_KEY: &str = "crc32";

/// A checksum algorithm a client can ask for (HASH, X*, SITE MD5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    /// SHA-256: stored with every upload.
    Sha256,
    /// SHA-1: computed on demand.
    Sha1,
    /// MD5: computed on demand.
    Md5,
    /// CRC-32 (ISO-HDLC): stored with every upload.
    Crc32,
}

impl Algorithm {
    /// The name HASH uses (draft-bryan-ftpext-hash §3).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha1 => "SHA-1",
            Algorithm::Md5 => "MD5",
            Algorithm::Crc32 => "CRC32",
        }
    }

    /// The metadata key the value is stored under, for algorithms computed
    /// during uploads.
    pub(crate) fn stored_key(self) -> Option<&'static str> {
        match self {
            Algorithm::Sha256 => Some(SHA256_KEY),
            Algorithm::Crc32 => Some(CRC32_KEY),
            Algorithm::Sha1 | Algorithm::Md5 => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An algorithm name no one implements here.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown hash algorithm {0:?} (SHA-256, SHA-1, MD5 or CRC32)")]
pub(crate) struct UnknownAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnknownAlgorithm;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "SHA-256" | "SHA256" => Ok(Algorithm::Sha256),
            "SHA-1" | "SHA1" => Ok(Algorithm::Sha1),
            "MD5" => Ok(Algorithm::Md5),
            "CRC32" | "CRC" => Ok(Algorithm::Crc32),
            _ => Err(UnknownAlgorithm(s.to_string())),
        }
    }
}

/// Digests of everything written to an upload, in order. SHA-256 is
/// optional (`storage.upload_sha256`): it is the one digest here whose cost
/// shows next to the transfer itself; CRC-32 is always computed.
pub(crate) struct UploadDigests {
    sha256: Option<sha2::Sha256>,
    crc32: crc_fast::Digest,
    len: u64,
}

impl UploadDigests {
    /// Digests of nothing yet; SHA-256 only when `sha256`.
    pub(crate) fn new(sha256: bool) -> Self {
        Self {
            sha256: sha256.then(sha2::Sha256::new),
            crc32: crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32IsoHdlc),
            len: 0,
        }
    }

    /// Adds the next bytes of the object.
    pub(crate) fn update(&mut self, data: &[u8]) {
        if let Some(sha256) = &mut self.sha256 {
            sha256.update(data);
        }
        self.crc32.update(data);
        self.len += data.len() as u64;
    }

    /// The digests of the whole object.
    pub(crate) fn finish(self) -> ContentDigests {
        ContentDigests {
            sha256: self.sha256.map(|sha256| hex::encode(sha256.finalize())),
            crc32: format!("{:08x}", self.crc32.finalize() as u32),
            size: self.len,
        }
    }
}

/// The most bytes gathered before a batch is hashed off the receiving task.
/// Each hand-off to the blocking pool costs two thread wake-ups; with
/// 256 KiB batches those took as much CPU as a third of the hashing, and
/// 1 GiB STOR to `file://` ran at 679 MiB/s against 882–917 with 4 MiB
/// (docs/benchmarks.md, "The engine patches against the build before
/// them, and what SHA-256 costs"). Larger batches gained nothing.
const MAX_DIGEST_BATCH: usize = 4 << 20;
/// The least: below this a hand-off costs more than hashing inline.
const MIN_DIGEST_BATCH: usize = 256 * 1024;

/// [`UploadDigests`] computed beside the transfer instead of in its way.
///
/// SHA-256 runs at about 2 GB/s on one core here (SHA-NI), far slower than
/// reading a loopback socket; hashed inline, the task receiving an upload
/// spent as long hashing as receiving. Chunks (shared `Bytes`, never copied)
/// are gathered into batches, and each batch is hashed on the blocking pool
/// while the next one is received; no thread is held between batches. An
/// upload shorter than a batch (most small files) is hashed once, inline,
/// at [`Self::finish`].
///
/// Memory: at most one batch is being hashed and one gathered, and they
/// are the latest bytes received. A batch is at most half a part, so those
/// two batches are either still in the part being filled or, for the part
/// before it, within the room the filling part has not used yet: the
/// upload's reservation (one part beyond those in flight, see
/// [`crate::memory_budget::part_reservation`]) covers them.
pub(crate) struct DigestPipe {
    /// The digests so far, when no batch is being hashed.
    idle: Option<UploadDigests>,
    /// The batch being hashed; it hands the digests back.
    hashing: Option<tokio::task::JoinHandle<UploadDigests>>,
    batch: Vec<bytes::Bytes>,
    batched: usize,
    /// Bytes per batch: half a part, within the bounds above.
    batch_size: usize,
    /// Whether SHA-256 is computed; without it only CRC-32 is (~20 GiB/s),
    /// which costs less inline than a hand-off to the blocking pool.
    sha256: bool,
}

/// The runtime shut down before a batch could be hashed.
#[derive(Debug, thiserror::Error)]
#[error("hashing the upload was cut by the runtime's shutdown")]
pub struct DigestCut;

impl DigestPipe {
    /// A pipe for one upload in parts of `part_size`; SHA-256 only when
    /// `sha256`.
    pub(crate) fn new(sha256: bool, part_size: usize) -> Self {
        Self {
            idle: Some(UploadDigests::new(sha256)),
            hashing: None,
            batch: Vec::new(),
            batched: 0,
            batch_size: (part_size / 2).clamp(MIN_DIGEST_BATCH, MAX_DIGEST_BATCH),
            sha256,
        }
    }

    /// Adds the next bytes of the object.
    pub(crate) async fn update(&mut self, chunk: bytes::Bytes) -> Result<(), DigestCut> {
        if !self.sha256 {
            if let Some(digests) = &mut self.idle {
                digests.update(&chunk);
                return Ok(());
            }
        }
        self.batched += chunk.len();
        self.batch.push(chunk);
        if self.batched >= self.batch_size {
            let mut digests = self.settled().await?;
            let batch = std::mem::take(&mut self.batch);
            self.batched = 0;
            self.hashing = Some(tokio::task::spawn_blocking(move || {
                for chunk in &batch {
                    digests.update(chunk);
                }
                digests
            }));
        }
        Ok(())
    }

    /// Goes on without SHA-256 (CRC-32 only): the store computes it after
    /// the upload ([`crate::local_attributes::DeferredSha256`]).
    pub(crate) async fn stop_sha256(&mut self) -> Result<(), DigestCut> {
        if !self.sha256 {
            return Ok(());
        }
        let mut digests = self.settled().await?;
        digests.sha256 = None;
        for chunk in std::mem::take(&mut self.batch) {
            digests.update(&chunk);
        }
        self.batched = 0;
        self.idle = Some(digests);
        self.sha256 = false;
        Ok(())
    }

    /// The digests of the whole object.
    pub(crate) async fn finish(mut self) -> Result<ContentDigests, DigestCut> {
        let mut digests = self.settled().await?;
        for chunk in &self.batch {
            digests.update(chunk);
        }
        Ok(digests.finish())
    }

    /// The digests once the batch being hashed (if any) is done.
    async fn settled(&mut self) -> Result<UploadDigests, DigestCut> {
        match self.hashing.take() {
            Some(hashing) => match hashing.await {
                Ok(digests) => Ok(digests),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => Err(DigestCut),
            },
            None => Ok(self
                .idle
                .take()
                .unwrap_or_else(|| UploadDigests::new(self.sha256))),
        }
    }
}

/// What an upload committed: its size and digests (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContentDigests {
    /// SHA-256, 64 hex digits; `None` when `storage.upload_sha256` is off.
    pub sha256: Option<String>,
    /// CRC-32, 8 hex digits.
    pub crc32: String,
    /// Bytes in the object.
    pub size: u64,
}

impl ContentDigests {
    /// Adds the digests to an object's attributes as user metadata.
    pub(crate) fn add_to(&self, attributes: &mut Attributes) {
        if let Some(sha256) = &self.sha256 {
            attributes.insert(
                Attribute::Metadata(SHA256_KEY.into()),
                sha256.clone().into(),
            );
        }
        attributes.insert(
            Attribute::Metadata(CRC32_KEY.into()),
            self.crc32.clone().into(),
        );
    }
}

/// The value stored for `algorithm` in an object's attributes, if any and
/// well-formed (a value another tool wrote under the same name is only
/// trusted when it looks like a digest of the right length).
pub(crate) fn stored(attributes: &Attributes, algorithm: Algorithm) -> Option<String> {
    let key = algorithm.stored_key()?;
    let value: &AttributeValue = attributes.get(&Attribute::Metadata(key.into()))?;
    let value = value.as_ref().trim().to_ascii_lowercase();
    let expected = match algorithm {
        Algorithm::Sha256 => 64,
        Algorithm::Crc32 => 8,
        Algorithm::Sha1 | Algorithm::Md5 => return None,
    };
    (value.len() == expected && value.bytes().all(|b| b.is_ascii_hexdigit())).then_some(value)
}

/// Whether to set `Content-Type` on new objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentTypes {
    /// From the file name's extension (the `mime_guess` table); unknown
    /// extensions get none (the store's default).
    #[default]
    Auto,
    /// Never set one.
    None,
}

impl ContentTypes {
    /// The `Content-Type` for a new object named `key`.
    pub fn for_key(self, key: &str) -> Option<&'static str> {
        match self {
            ContentTypes::None => None,
            ContentTypes::Auto => mime_guess::from_path(key).first_raw(),
        }
    }
}

/// Why a digest could not be computed on demand.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DigestError {
    /// The object is larger than the on-demand limit.
    #[error("object of {size} bytes is larger than the {limit}-byte limit for computing a checksum on demand")]
    TooLarge {
        /// The object's size.
        size: u64,
        limit: u64,
    },
    /// Reading the object failed.
    #[error("reading the object failed")]
    Read(#[source] object_store::Error),
}

/// Computes `algorithm` over an object's bytes as they stream in (constant
/// memory).
pub(crate) async fn compute(
    algorithm: Algorithm,
    mut body: BoxStream<'static, object_store::Result<Bytes>>,
) -> Result<String, DigestError> {
    let mut hasher = Hasher::new(algorithm);
    while let Some(chunk) = body.next().await {
        hasher.update(&chunk.map_err(DigestError::Read)?);
    }
    Ok(hasher.finish())
}

/// One running digest of any supported algorithm.
enum Hasher {
    Sha256(sha2::Sha256),
    Sha1(sha1::Sha1),
    Md5(md5::Md5),
    Crc32(crc_fast::Digest),
}

impl Hasher {
    fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algorithm::Md5 => Hasher::Md5(<md5::Md5 as md5::Digest>::new()),
            Algorithm::Crc32 => {
                Hasher::Crc32(crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32IsoHdlc))
            }
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Md5(h) => md5::Digest::update(h, data),
            Hasher::Crc32(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Md5(h) => hex::encode(md5::Digest::finalize(h)),
            Hasher::Crc32(h) => format!("{:08x}", h.finalize() as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pipe_hashes_what_inline_hashing_does() {
        // Across batch boundaries, with chunks of uneven sizes, and below
        // one batch; with SHA-256 and without.
        const PART: usize = 5 << 20;
        let batch = PART / 2;
        for (total, sha256) in [0usize, 10, batch - 1, batch, 3 * batch + 12_345]
            .into_iter()
            .flat_map(|total| [(total, true), (total, false)])
        {
            let data: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
            let mut inline = UploadDigests::new(sha256);
            inline.update(&data);
            let mut pipe = DigestPipe::new(sha256, PART);
            let mut at = 0;
            let mut step = 1;
            while at < total {
                let end = (at + step).min(total);
                pipe.update(bytes::Bytes::copy_from_slice(&data[at..end]))
                    .await
                    .unwrap();
                at = end;
                step = step * 7 % 100_003 + 1;
            }
            assert_eq!(
                pipe.finish().await.unwrap(),
                inline.finish(),
                "{total} bytes, sha256 {sha256}"
            );
        }
    }

    fn over(algorithm: Algorithm, data: &'static [u8]) -> String {
        let body = futures::stream::iter(data.chunks(3).map(|c| Ok(Bytes::from_static(c)))).boxed();
        futures::executor::block_on(compute(algorithm, body)).unwrap()
    }

    #[test]
    fn known_answers() {
        // Reference values from sha256sum, sha1sum, md5sum and `crc32`.
        let data = b"The quick brown fox jumps over the lazy dog";
        assert_eq!(
            over(Algorithm::Sha256, data),
            "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592"
        );
        assert_eq!(
            over(Algorithm::Sha1, data),
            "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12"
        );
        assert_eq!(
            over(Algorithm::Md5, data),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
        assert_eq!(over(Algorithm::Crc32, data), "414fa339");
        let mut upload = UploadDigests::new(true);
        upload.update(&data[..10]);
        upload.update(&data[10..]);
        let digests = upload.finish();
        assert_eq!(digests.sha256, Some(over(Algorithm::Sha256, data)));
        assert_eq!(digests.crc32, "414fa339");
        assert_eq!(digests.size, data.len() as u64);
        let mut crc_only = UploadDigests::new(false);
        crc_only.update(data);
        let digests = crc_only.finish();
        assert_eq!(digests.sha256, None);
        assert_eq!(digests.crc32, "414fa339");
        let mut attributes = Attributes::new();
        digests.add_to(&mut attributes);
        assert_eq!(
            stored(&attributes, Algorithm::Sha256),
            None,
            "nothing stored"
        );
        assert_eq!(
            stored(&attributes, Algorithm::Crc32).as_deref(),
            Some("414fa339")
        );
    }

    #[test]
    fn stored_values_are_checked() {
        let mut attributes = Attributes::new();
        assert_eq!(stored(&attributes, Algorithm::Sha256), None);
        attributes.insert(Attribute::Metadata("sha256".into()), "not-a-digest".into());
        assert_eq!(stored(&attributes, Algorithm::Sha256), None);
        let digest = "D7A8FBB307D7809469CA9ABCB0082E4F8D5651E46D3CDB762D02D0BF37C9E592";
        attributes.insert(Attribute::Metadata("sha256".into()), digest.into());
        assert_eq!(
            stored(&attributes, Algorithm::Sha256),
            Some(digest.to_ascii_lowercase())
        );
        assert_eq!(stored(&attributes, Algorithm::Md5), None);
    }

    #[test]
    fn algorithm_names() {
        for (name, algorithm) in [
            ("SHA-256", Algorithm::Sha256),
            ("sha-1", Algorithm::Sha1),
            ("MD5", Algorithm::Md5),
            ("crc32", Algorithm::Crc32),
        ] {
            assert_eq!(name.parse::<Algorithm>(), Ok(algorithm));
        }
        assert!("SHA-512".parse::<Algorithm>().is_err());
    }

    #[test]
    fn content_types_from_names() {
        assert_eq!(
            ContentTypes::Auto.for_key("cams/1/a.JPG"),
            Some("image/jpeg")
        );
        assert_eq!(
            ContentTypes::Auto.for_key("report.pdf"),
            Some("application/pdf")
        );
        assert_eq!(ContentTypes::Auto.for_key("no-extension"), None);
        assert_eq!(ContentTypes::None.for_key("a.jpg"), None);
    }
}
