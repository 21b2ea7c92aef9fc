use std::fmt;

use serde::{Deserialize, Serialize};

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
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s))
        } else {
            Err(format!(
                "device id must be 64 lowercase hex digits (an ed25519 public key), got {s:?}"
            ))
        }
    }
}

impl std::str::FromStr for DeviceId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
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
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b));
        if ok {
            Ok(Self(s))
        } else {
            Err(format!(
                "contributor id must be 1-128 characters of [A-Za-z0-9-_.:@], got {s:?}"
            ))
        }
    }
}

impl std::str::FromStr for ContributorId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
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
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, uuid::Error> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}

impl fmt::Display for UploadId {
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
    fn contributor_id_refuses_empty_and_spaces() {
        assert!("".parse::<ContributorId>().is_err());
        assert!("a b".parse::<ContributorId>().is_err());
        assert!("alice@example".parse::<ContributorId>().is_ok());
    }
}
