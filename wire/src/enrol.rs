//! What a manufacturer and a contributor sign when a device joins: the
//! exact bytes, shared by the server that checks and the devices (and the
//! simulator) that sign. Each message starts with its own context line, so
//! a signature made for one purpose is never valid for another.

use crate::{ContributorId, DeviceId};

/// A manufacturer's statement that it made the device holding this key,
/// with this serial number.
pub fn attestation_message(device: &DeviceId, serial: &str) -> Vec<u8> {
    format!("hexroad device attestation v1\n{device}\n{serial}").into_bytes()
}

/// A contributor's consent that this device's coverage is theirs.
pub fn binding_message(contributor: &ContributorId, device: &DeviceId) -> Vec<u8> {
    format!("hexroad device binding v1\n{contributor}\n{device}").into_bytes()
}

/// A contributor's key handing the account over to `new_key` (hex).
pub fn rotation_message(contributor: &ContributorId, old_key: &str, new_key: &str) -> Vec<u8> {
    format!("hexroad contributor key rotation v1\n{contributor}\n{old_key}\n{new_key}").into_bytes()
}

/// A manufacturer serial: printable ASCII without spaces, 1 to 64 bytes.
pub fn valid_serial(serial: &str) -> bool {
    (1..=64).contains(&serial.len()) && serial.bytes().all(|b| b.is_ascii_graphic())
}

/// 64 lowercase hex digits as the 32 bytes of an ed25519 public key.
pub fn public_key_from_hex(text: &str) -> Option<[u8; 32]> {
    let id: DeviceId = text.parse().ok()?;
    Some(id.public_key())
}

/// An ed25519 public key as the 64 lowercase hex digits the messages and
/// tables carry (a device id's form, for any key).
pub fn public_key_hex(key: &[u8; 32]) -> String {
    DeviceId::from_public_key(key).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_differ_by_purpose_and_field() {
        let d = DeviceId::from_public_key(&[1; 32]);
        let c: ContributorId = "alice".parse().unwrap();
        let a = attestation_message(&d, "SN1");
        let b = binding_message(&c, &d);
        assert_ne!(a, b);
        assert_ne!(attestation_message(&d, "SN2"), a);
        assert!(String::from_utf8(b).unwrap().ends_with(d.as_str()));
        assert!(valid_serial("SN-0001"));
        assert!(!valid_serial("SN 1") && !valid_serial("") && !valid_serial("é"));
        assert_eq!(public_key_from_hex(d.as_str()), Some([1; 32]));
        assert_eq!(public_key_from_hex("xyz"), None);
        assert_eq!(
            public_key_from_hex(&public_key_hex(&[7; 32])),
            Some([7; 32])
        );
    }
}
