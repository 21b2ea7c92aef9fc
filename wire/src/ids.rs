//! Validated ids: a raw string or integer never stands for a device, a
//! contributor, an upload or a frame.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a text is not a valid id of its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Device ids are the hex of an ed25519 public key.
    #[error("device id must be 64 lowercase hex digits (an ed25519 public key), got {0:?}")]
    Device(String),
    /// Contributor ids are account names of a restricted alphabet.
    #[error("contributor id must be 1-128 characters of [A-Za-z0-9-_.:@], got {0:?}")]
    Contributor(String),
    /// Upload and frame ids are UUIDs in their hyphenated form.
    #[error("{what} id must be a UUID, got {text:?}")]
    Uuid { what: &'static str, text: String },
}

/// A device's identity: the lowercase hex of its ed25519 public key.
///
/// Deriving the id from the key means a device cannot claim another's id: the
/// key that signs its requests *is* the id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

impl DeviceId {
    /// The id of the device holding this public key.
    pub fn from_public_key(key: &[u8; 32]) -> Self {
        Self(hex_lower(key))
    }

    /// The public key bytes this id names.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            // Valid by construction: 64 lowercase hex digits.
            *byte = u8::from_str_radix(&self.0[2 * i..2 * i + 2], 16).unwrap_or_default();
        }
        out
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s))
        } else {
            Err(IdError::Device(s))
        }
    }
}

impl std::str::FromStr for DeviceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::try_from(s.to_owned())
    }
}

impl From<DeviceId> for String {
    fn from(id: DeviceId) -> String {
        id.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who is paid for a device's coverage: an opaque, non-empty account name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContributorId(String);

impl ContributorId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ContributorId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b));
        if ok {
            Ok(Self(s))
        } else {
            Err(IdError::Contributor(s))
        }
    }
}

impl std::str::FromStr for ContributorId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::try_from(s.to_owned())
    }
}

impl From<ContributorId> for String {
    fn from(id: ContributorId) -> String {
        id.0
    }
}

impl fmt::Display for ContributorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One upload, as the ingest service named it when the device created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UploadId(pub uuid::Uuid);

impl UploadId {
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl std::str::FromStr for UploadId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| IdError::Uuid {
                what: "upload",
                text: s.to_owned(),
            })
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// One sampled frame: derived from its upload and its index in it, so a
/// retry names the same frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FrameId(uuid::Uuid);

impl FrameId {
    /// The id made of these 16 bytes (a digest's prefix).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(bytes))
    }

    /// Where the frame's anonymized JPEG is stored once published. Derived
    /// from the id alone, so serving a frame reads no table, and an id
    /// nobody published costs one object-store miss, however large the
    /// `frames` table grows.
    pub fn image_key(&self) -> String {
        format!("frames/{self}.jpg")
    }
}

impl std::str::FromStr for FrameId {
    type Err = IdError;
    /// Only the lowercase hyphenated form hexroad writes is accepted, so a
    /// frame has exactly one name (and one image URL).
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::Uuid {
            what: "frame",
            text: s.to_owned(),
        };
        let id = uuid::Uuid::try_parse(s).map_err(|_| bad())?;
        if id.hyphenated().to_string() != s {
            return Err(bad());
        }
        Ok(Self(id))
    }
}

impl TryFrom<String> for FrameId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

impl From<FrameId> for String {
    fn from(id: FrameId) -> String {
        id.to_string()
    }
}

impl fmt::Display for FrameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_id_round_trips_its_key() {
        let key = [7u8; 32];
        let id = DeviceId::from_public_key(&key);
        assert_eq!(id.public_key(), key);
        assert_eq!(id.as_str().parse::<DeviceId>().unwrap(), id);
    }

    #[test]
    fn device_id_refuses_non_hex() {
        assert!("xyz".parse::<DeviceId>().is_err());
        assert!("A".repeat(64).parse::<DeviceId>().is_err());
    }

    #[test]
    fn frame_id_has_one_spelling() {
        let id = FrameId::from_bytes([0xab; 16]);
        let text = id.to_string();
        assert_eq!(text.parse::<FrameId>().unwrap(), id);
        assert!(text.to_ascii_uppercase().parse::<FrameId>().is_err());
        assert!(text.replace('-', "").parse::<FrameId>().is_err());
        assert!("../raw/x".parse::<FrameId>().is_err());
    }

    #[test]
    fn contributor_id_refuses_empty_and_spaces() {
        assert!("".parse::<ContributorId>().is_err());
        assert!("a b".parse::<ContributorId>().is_err());
        assert!("alice@example".parse::<ContributorId>().is_ok());
    }
}
