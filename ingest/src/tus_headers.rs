//! The tus 1.0 request headers a device sends, read without trusting them:
//! `Upload-Metadata` (creation) and `Upload-Checksum` (checksum extension).

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The checksum algorithms offered in `Tus-Checksum-Algorithm`; tus 1.0
/// requires servers to support `sha1`.
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";

/// Why a tus header cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TusHeaderError {
    /// A metadata value is not base64 of UTF-8 text.
    #[error("Upload-Metadata value of {key:?} is not base64 UTF-8")]
    MetadataValue { key: String },
    /// A metadata key is empty or repeated.
    #[error("Upload-Metadata key {key:?} is empty or given twice")]
    MetadataKey { key: String },
    /// `Upload-Checksum` names an algorithm hexroad does not offer.
    #[error("Upload-Checksum must use sha1 or sha256, got {algorithm:?}")]
    ChecksumAlgorithm { algorithm: String },
    /// `Upload-Checksum`'s value is not base64 of a digest of that algorithm.
    #[error("Upload-Checksum is not a base64 {algorithm} digest")]
    ChecksumValue { algorithm: &'static str },
}

/// Reads `Upload-Metadata`: comma-separated `key base64value` pairs (the
/// value may be absent).
///
/// ```
/// let meta = hexroad_ingest::tus_headers::parse_metadata("kind dmlkZW8=,flag").unwrap();
/// assert_eq!(meta["kind"], "video");
/// assert_eq!(meta["flag"], "");
/// ```
pub fn parse_metadata(value: &str) -> Result<HashMap<String, String>, TusHeaderError> {
    let mut out = HashMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, b64) = pair.split_once(' ').unwrap_or((pair, ""));
        let decoded = STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| TusHeaderError::MetadataValue {
                key: key.to_owned(),
            })?;
        if key.is_empty() || out.insert(key.to_owned(), decoded).is_some() {
            return Err(TusHeaderError::MetadataKey {
                key: key.to_owned(),
            });
        }
    }
    Ok(out)
}

/// What a `PATCH`'s `Upload-Checksum` promises about its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkChecksum {
    Sha1([u8; 20]),
    Sha256([u8; 32]),
}

impl ChunkChecksum {
    /// Reads `Upload-Checksum: <algorithm> <base64 digest>`.
    ///
    /// ```
    /// use hexroad_ingest::tus_headers::ChunkChecksum;
    /// // sha1 of the empty body
    /// let c = ChunkChecksum::parse("sha1 2jmj7l5rSw0yVb/vlWAYkK/YBwk=").unwrap();
    /// assert!(c.hasher().matches());
    /// ```
    pub fn parse(value: &str) -> Result<Self, TusHeaderError> {
        let (algorithm, b64) = value.trim().split_once(' ').unwrap_or((value, ""));
        let bytes = || STANDARD.decode(b64.trim()).ok();
        match algorithm {
            "sha1" => bytes()
                .and_then(|b| <[u8; 20]>::try_from(b).ok())
                .map(Self::Sha1)
                .ok_or(TusHeaderError::ChecksumValue { algorithm: "sha1" }),
            "sha256" => bytes()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(Self::Sha256)
                .ok_or(TusHeaderError::ChecksumValue {
                    algorithm: "sha256",
                }),
            other => Err(TusHeaderError::ChecksumAlgorithm {
                algorithm: other.to_owned(),
            }),
        }
    }

    /// A hasher that checks a body against this checksum as it streams in.
    pub fn hasher(self) -> ChunkHasher {
        match self {
            Self::Sha1(want) => ChunkHasher::Sha1(Sha1::new(), want),
            Self::Sha256(want) => ChunkHasher::Sha256(Sha256::new(), want),
        }
    }
}

/// A body's digest in progress, and what it must come to.
pub enum ChunkHasher {
    Sha1(Sha1, [u8; 20]),
    Sha256(Sha256, [u8; 32]),
}

impl ChunkHasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha1(h, _) => h.update(data),
            Self::Sha256(h, _) => h.update(data),
        }
    }

    /// The sha256 state so far, when this checksum is a sha256 (a chunk
    /// that starts an upload then gives the upload's running hash too).
    pub fn sha256(&self) -> Option<&Sha256> {
        match self {
            Self::Sha1(..) => None,
            Self::Sha256(h, _) => Some(h),
        }
    }

    /// Whether what was hashed matches the promised checksum.
    pub fn matches(self) -> bool {
        match self {
            Self::Sha1(h, want) => h.finalize().as_slice() == want,
            Self::Sha256(h, want) => h.finalize().as_slice() == want,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn checksums_are_refused_by_name() {
        assert_eq!(
            ChunkChecksum::parse("md5 AAAA"),
            Err(TusHeaderError::ChecksumAlgorithm {
                algorithm: "md5".into()
            })
        );
        assert_eq!(
            ChunkChecksum::parse("sha256 AAAA"),
            Err(TusHeaderError::ChecksumValue {
                algorithm: "sha256"
            })
        );
    }

    #[test]
    fn a_body_matches_its_sha256() {
        let body = b"hello";
        let header = format!("sha256 {}", STANDARD.encode(Sha256::digest(body)));
        let mut h = ChunkChecksum::parse(&header).unwrap().hasher();
        h.update(body);
        assert!(h.matches());
        let mut h = ChunkChecksum::parse(&header).unwrap().hasher();
        h.update(b"hellO");
        assert!(!h.matches());
    }

    #[test]
    fn metadata_refuses_a_repeated_key() {
        assert!(matches!(
            parse_metadata("kind dmlkZW8=,kind Z25zcw=="),
            Err(TusHeaderError::MetadataKey { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_metadata_text_is_read_or_refused(value in ".{0,400}") {
            let _ = parse_metadata(&value);
        }

        #[test]
        fn metadata_round_trips(
            pairs in proptest::collection::hash_map("[a-z_]{1,12}", ".{0,40}", 0..8),
        ) {
            let header: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
                .collect();
            let parsed = parse_metadata(&header.join(",")).unwrap();
            prop_assert_eq!(parsed, pairs);
        }

        #[test]
        fn any_checksum_text_is_read_or_refused(value in ".{0,120}") {
            let _ = ChunkChecksum::parse(&value);
        }
    }
}
