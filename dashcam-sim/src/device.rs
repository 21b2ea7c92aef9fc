//! A device's key, and RFC 9421 signing of its requests.

use ed25519_dalek::{Signer as _, SigningKey};
use hexroad_wire::DeviceId;
use hexroad_wire::signature::{self, SignatureParams};

/// A device's ed25519 identity.
pub struct DeviceKey {
    key: SigningKey,
    id: DeviceId,
}

impl DeviceKey {
    /// The key derived from 32 seed bytes (the fleet draws them from its seed).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let id = DeviceId::from_public_key(key.verifying_key().as_bytes());
        Self { key, id }
    }

    pub fn id(&self) -> &DeviceId {
        &self.id
    }

    /// Signs a request to `authority` (the server's `host[:port]`),
    /// returning the `Signature-Input` and `Signature` headers. `covered`
    /// are header names (lowercase) and values that the signature binds,
    /// besides `@method`, `@path` and `@authority`.
    pub fn sign(
        &self,
        (method, authority, path): (&str, &str, &str),
        covered: &[(&str, String)],
        created: i64,
    ) -> [(&'static str, String); 2] {
        let mut components = vec![
            "@method".to_owned(),
            "@path".to_owned(),
            "@authority".to_owned(),
        ];
        components.extend(covered.iter().map(|(name, _)| (*name).to_owned()));
        let params = SignatureParams {
            components,
            created,
            nonce: uuid::Uuid::new_v4().simple().to_string(),
            keyid: self.id.to_string(),
            alg: signature::ALG.to_owned(),
        };
        let base = signature::signature_base(&params, |c| match c {
            "@method" => Some(method.to_owned()),
            "@path" => Some(path.to_owned()),
            "@authority" => Some(authority.to_ascii_lowercase()),
            name => covered
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone()),
        })
        // Every component named above has a value, and names, nonce and key
        // are ASCII, so the base always builds.
        .unwrap_or_default();
        let sig = self.key.sign(base.as_bytes());
        [
            // Serializable for the same reason as the base.
            ("signature-input", params.header_value().unwrap_or_default()),
            ("signature", signature::signature_header(&sig.to_bytes())),
        ]
    }
}

/// A key that vouches for devices rather than uploading: a manufacturer's
/// (attesting the devices it made) or a contributor's (binding its devices
/// to its account).
#[derive(Clone)]
pub struct VouchingKey {
    key: SigningKey,
}

impl std::fmt::Debug for VouchingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret half is never printed.
        f.debug_struct("VouchingKey")
            .field("public", &self.public_hex())
            .finish()
    }
}

impl VouchingKey {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The hex of the public key, as the server is configured with it.
    pub fn public_hex(&self) -> String {
        hexroad_wire::enrol::public_key_hex(self.key.verifying_key().as_bytes())
    }

    /// Base64 of the ed25519 signature over `message`.
    pub fn sign_base64(&self, message: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(self.key.sign(message).to_bytes())
    }
}

/// A manufacturer the fleet plays: its name on the server, and its key.
#[derive(Debug, Clone)]
pub struct Manufacturer {
    pub name: String,
    pub key: VouchingKey,
}
