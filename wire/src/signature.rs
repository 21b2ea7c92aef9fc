//! RFC 9421 HTTP Message Signatures for algorithm `ed25519`: signing (what
//! a device does) and reading the `Signature-Input` / `Signature` headers a
//! signer sent (what the server does), with RFC 9530 `Content-Digest`.
//!
//! Both headers are RFC 8941 Structured Field dictionaries and are parsed as
//! such (`sfv`), so any conformant signer works: the label is the signer's
//! choice, parameters may come in any order, `alg` may be left out, and
//! parameters hexroad does not use (`tag`) are still covered, because the
//! `@signature-params` line is built from the inner list exactly as received.
//!
//! Covered components may be derived (`@method`, `@path`, `@query`,
//! `@authority`, …, resolved by the caller) or lowercase header names.
//! Component parameters (`;sf`, `;key`, `;bs`, `;req`) are refused by name.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sfv::{
    BareItem, Dictionary, FieldType as _, InnerList, Integer, Item, KeyRef, List, ListEntry,
    Parameters, Parser,
};

/// The label hexroad's own devices sign under. The server accepts any label.
pub const LABEL: &str = "sig1";
/// The only algorithm accepted.
pub const ALG: &str = "ed25519";

/// Why signature headers cannot be used; each names the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not an RFC 8941 dictionary.
    #[error("{header} is not a structured-field dictionary: {reason}")]
    Syntax {
        header: &'static str,
        reason: String,
    },
    /// `Signature-Input` has no member at all.
    #[error("Signature-Input has no signature")]
    Empty,
    /// A `Signature-Input` member is not an inner list.
    #[error("Signature-Input member {label:?} must be an inner list of components")]
    NotInnerList { label: String },
    /// A covered component is not a string.
    #[error("Signature-Input member {label:?} covers a component that is not a string")]
    ComponentNotString { label: String },
    /// A covered component carries parameters (`;sf`, `;key`, …).
    #[error("component {component:?} has parameters, which hexroad does not support")]
    ComponentParameters { component: String },
    /// Field names are lowercase in a signature (RFC 9421 §2.1).
    #[error("component {component:?} must be lowercase")]
    ComponentCase { component: String },
    /// The same component is covered twice (RFC 9421 §2.5 forbids it).
    #[error("component {component:?} is covered twice")]
    DuplicateComponent { component: String },
    /// A known parameter has the wrong type.
    #[error("signature parameter {name} must be {expected}")]
    BadParameter {
        name: &'static str,
        expected: &'static str,
    },
    /// A parameter the value cannot be expressed in (a signer-side mistake).
    #[error("signature parameter {name} cannot be serialized: {reason}")]
    Unserializable { name: &'static str, reason: String },
    /// `Signature` has no member for a label `Signature-Input` declares.
    #[error("Signature has no {label:?} member to match Signature-Input")]
    NoSignatureFor { label: String },
    /// A `Signature` member is not a byte sequence.
    #[error("Signature member {label:?} must be a byte sequence (:base64:)")]
    NotByteSequence { label: String },
    /// The message lacks a component the signature covers.
    #[error(
        "covered component {component:?} is missing from the request (or not a component hexroad resolves)"
    )]
    MissingComponent { component: String },
    /// A component value would break the one-line-per-component base.
    #[error("component {component:?} contains a newline")]
    ComponentNewline { component: String },
}

/// What a signer chooses: the covered components and the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureParams {
    pub components: Vec<String>,
    /// Unix seconds when the device signed.
    pub created: i64,
    /// A value the device never reuses; the server refuses a second use.
    pub nonce: String,
    /// The device id (hex public key).
    pub keyid: String,
    pub alg: String,
}

impl SignatureParams {
    /// The serialized inner list with parameters, as it appears after the
    /// label in `Signature-Input` and in the `@signature-params` line.
    pub fn serialize(&self) -> Result<String, SignatureError> {
        let string = |name: &'static str, text: &str| {
            sfv::String::from_string(text.to_owned())
                .map(BareItem::String)
                .map_err(|(e, _)| SignatureError::Unserializable {
                    name,
                    reason: e.to_string(),
                })
        };
        let items = self
            .components
            .iter()
            .map(|c| string("component", c).map(Item::new))
            .collect::<Result<Vec<_>, _>>()?;
        let mut params = Parameters::new();
        let created =
            Integer::try_from(self.created).map_err(|e| SignatureError::Unserializable {
                name: "created",
                reason: e.to_string(),
            })?;
        params.insert(CREATED.to_owned(), BareItem::Integer(created));
        params.insert(NONCE.to_owned(), string("nonce", &self.nonce)?);
        params.insert(KEYID.to_owned(), string("keyid", &self.keyid)?);
        params.insert(ALG_KEY.to_owned(), string("alg", &self.alg)?);
        Ok(inner_list_text(InnerList { items, params }))
    }

    /// The `Signature-Input` header value, under [`LABEL`].
    pub fn header_value(&self) -> Result<String, SignatureError> {
        Ok(format!("{LABEL}={}", self.serialize()?))
    }
}

// Checked when compiled: these are valid structured-field keys.
const CREATED: &KeyRef = KeyRef::constant("created");
const NONCE: &KeyRef = KeyRef::constant("nonce");
const KEYID: &KeyRef = KeyRef::constant("keyid");
const ALG_KEY: &KeyRef = KeyRef::constant("alg");

/// The canonical text of one inner list with its parameters, order kept.
fn inner_list_text(list: InnerList) -> String {
    let one: List = vec![ListEntry::InnerList(list)];
    one.serialize().unwrap_or_default()
}

/// The signature base (RFC 9421 §2.5) for a signer's parameters.
pub fn signature_base(
    params: &SignatureParams,
    value: impl FnMut(&str) -> Option<String>,
) -> Result<String, SignatureError> {
    build_base(&params.components, &params.serialize()?, value)
}

/// One line per covered component, then the `@signature-params` line.
/// `value` returns a component's value, or `None` if the message lacks it.
fn build_base(
    components: &[String],
    params_text: &str,
    mut value: impl FnMut(&str) -> Option<String>,
) -> Result<String, SignatureError> {
    let mut base = String::new();
    for component in components {
        let v = value(component).ok_or_else(|| SignatureError::MissingComponent {
            component: component.clone(),
        })?;
        if v.contains(['\n', '\r']) {
            return Err(SignatureError::ComponentNewline {
                component: component.clone(),
            });
        }
        base.push_str(&format!("\"{component}\": {}\n", v.trim()));
    }
    base.push_str(&format!("\"@signature-params\": {params_text}"));
    Ok(base)
}

/// One signature as a request carried it: `Signature-Input`'s member for a
/// label, and the matching `Signature` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSignature {
    pub label: String,
    /// Covered components, in the signer's order.
    pub components: Vec<String>,
    pub created: Option<i64>,
    pub expires: Option<i64>,
    pub nonce: Option<String>,
    pub keyid: Option<String>,
    /// `None` when the signer left it out: the key's algorithm applies.
    pub alg: Option<String>,
    pub tag: Option<String>,
    pub signature: Vec<u8>,
    /// The inner list with its parameters, as received (canonical form).
    params_text: String,
}

impl ReceivedSignature {
    /// The base the signer signed, with this request's component values.
    pub fn base(
        &self,
        value: impl FnMut(&str) -> Option<String>,
    ) -> Result<String, SignatureError> {
        build_base(&self.components, &self.params_text, value)
    }

    /// The `@signature-params` value this signature covers.
    pub fn params_text(&self) -> &str {
        &self.params_text
    }
}

/// Reads every signature of a request, in `Signature-Input`'s order.
///
/// ```
/// use hexroad_wire::signature::parse_signatures;
/// let sigs = parse_signatures(
///     r#"pyhms=("@method" "@path");created=1700000000;keyid="k";tag="app""#,
///     "pyhms=:AAEC:",
/// )
/// .unwrap();
/// assert_eq!(sigs[0].label, "pyhms");
/// assert_eq!(sigs[0].alg, None);
/// assert_eq!(sigs[0].signature, vec![0, 1, 2]);
/// ```
pub fn parse_signatures(
    signature_input: &str,
    signature: &str,
) -> Result<Vec<ReceivedSignature>, SignatureError> {
    let inputs = dictionary("Signature-Input", signature_input)?;
    let signatures = dictionary("Signature", signature)?;
    if inputs.is_empty() {
        return Err(SignatureError::Empty);
    }
    inputs
        .into_iter()
        .map(|(label, entry)| {
            let label = label.as_str().to_owned();
            let ListEntry::InnerList(list) = entry else {
                return Err(SignatureError::NotInnerList { label });
            };
            let signature = match signatures.get(label.as_str()) {
                None => return Err(SignatureError::NoSignatureFor { label }),
                Some(ListEntry::Item(item)) => match item.bare_item.as_byte_sequence() {
                    Some(bytes) => bytes.to_vec(),
                    None => return Err(SignatureError::NotByteSequence { label }),
                },
                Some(ListEntry::InnerList(_)) => {
                    return Err(SignatureError::NotByteSequence { label });
                }
            };
            received(label, list, signature)
        })
        .collect()
}

fn dictionary(header: &'static str, value: &str) -> Result<Dictionary, SignatureError> {
    Parser::new(value)
        .parse::<Dictionary>()
        .map_err(|e| SignatureError::Syntax {
            header,
            reason: e.to_string(),
        })
}

fn received(
    label: String,
    list: InnerList,
    signature: Vec<u8>,
) -> Result<ReceivedSignature, SignatureError> {
    let mut components: Vec<String> = Vec::with_capacity(list.items.len());
    for item in &list.items {
        let Some(name) = item.bare_item.as_string() else {
            return Err(SignatureError::ComponentNotString { label });
        };
        let name = name.as_str().to_owned();
        if !item.params.is_empty() {
            return Err(SignatureError::ComponentParameters { component: name });
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(SignatureError::ComponentCase { component: name });
        }
        if components.contains(&name) {
            return Err(SignatureError::DuplicateComponent { component: name });
        }
        components.push(name);
    }
    let integer = |name: &'static str| -> Result<Option<i64>, SignatureError> {
        list.params
            .get(name)
            .map(|v| {
                v.as_integer()
                    .map(i64::from)
                    .ok_or(SignatureError::BadParameter {
                        name,
                        expected: "an integer",
                    })
            })
            .transpose()
    };
    let string = |name: &'static str| -> Result<Option<String>, SignatureError> {
        list.params
            .get(name)
            .map(|v| {
                v.as_string()
                    .map(|s| s.as_str().to_owned())
                    .ok_or(SignatureError::BadParameter {
                        name,
                        expected: "a string",
                    })
            })
            .transpose()
    };
    Ok(ReceivedSignature {
        created: integer("created")?,
        expires: integer("expires")?,
        nonce: string("nonce")?,
        keyid: string("keyid")?,
        alg: string("alg")?,
        tag: string("tag")?,
        components,
        signature,
        params_text: inner_list_text(list),
        label,
    })
}

/// The `Signature` header value for signature bytes, under [`LABEL`].
pub fn signature_header(signature: &[u8]) -> String {
    format!("{LABEL}=:{}:", STANDARD.encode(signature))
}

/// RFC 9530 `Content-Digest` value for a body: `sha-256=:base64:`.
pub fn content_digest(sha256: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SignatureParams {
        SignatureParams {
            components: vec!["@method".into(), "@path".into(), "content-digest".into()],
            created: 1_700_000_000,
            nonce: "n-1".into(),
            keyid: "ab".repeat(32),
            alg: ALG.into(),
        }
    }

    fn values(c: &str) -> Option<String> {
        match c {
            "@method" => Some("POST".into()),
            "@path" => Some("/v1/devices".into()),
            "content-digest" => Some("sha-256=:AAAA:".into()),
            _ => None,
        }
    }

    #[test]
    fn what_a_device_signs_reads_back_with_the_same_base() {
        let p = params();
        let got = parse_signatures(&p.header_value().unwrap(), &signature_header(&[1, 2]))
            .unwrap()
            .remove(0);
        assert_eq!(got.label, LABEL);
        assert_eq!(got.components, p.components);
        assert_eq!(got.created, Some(p.created));
        assert_eq!(got.nonce.as_deref(), Some("n-1"));
        assert_eq!(got.alg.as_deref(), Some(ALG));
        assert_eq!(got.signature, vec![1, 2]);
        assert_eq!(
            got.base(values).unwrap(),
            signature_base(&p, values).unwrap()
        );
    }

    #[test]
    fn base_follows_rfc_9421_layout() {
        let base = signature_base(&params(), values).unwrap();
        let expected = format!(
            "\"@method\": POST\n\"@path\": /v1/devices\n\"content-digest\": sha-256=:AAAA:\n\
             \"@signature-params\": (\"@method\" \"@path\" \"content-digest\");created=1700000000;\
             nonce=\"n-1\";keyid=\"{}\";alg=\"ed25519\"",
            "ab".repeat(32)
        );
        assert_eq!(base, expected);
    }

    /// The base of a signer that orders parameters its own way and adds
    /// `expires` and `tag` keeps them as sent.
    #[test]
    fn params_line_keeps_the_signers_order_and_extra_parameters() {
        let input = r#"other=("@method");keyid="k";created=5;expires=9;tag="t""#;
        let sig = parse_signatures(input, "other=:AA==:").unwrap().remove(0);
        assert_eq!(sig.expires, Some(9));
        assert_eq!(sig.tag.as_deref(), Some("t"));
        assert_eq!(
            sig.base(values).unwrap(),
            "\"@method\": POST\n\"@signature-params\": (\"@method\");keyid=\"k\";created=5;expires=9;tag=\"t\""
        );
    }

    #[test]
    fn missing_component_is_an_error() {
        assert!(matches!(
            signature_base(&params(), |_| None),
            Err(SignatureError::MissingComponent { .. })
        ));
    }

    #[test]
    fn malformed_headers_are_refused_by_name() {
        let sig = "sig1=:AA==:";
        let err = |input: &str, sig: &str| parse_signatures(input, sig).unwrap_err();
        assert!(matches!(
            err("sig1=\"@method\"", sig),
            SignatureError::NotInnerList { .. }
        ));
        assert!(matches!(
            err("sig1=(\"@method\")", "sig2=:AA==:"),
            SignatureError::NoSignatureFor { .. }
        ));
        assert!(matches!(
            err("sig1=(\"@method\")", "sig1=notbytes"),
            SignatureError::NotByteSequence { .. }
        ));
        assert!(matches!(
            err("sig1=(\"@method\" \"@method\")", sig),
            SignatureError::DuplicateComponent { .. }
        ));
        assert!(matches!(
            err("sig1=(\"Host\")", sig),
            SignatureError::ComponentCase { .. }
        ));
        assert!(matches!(
            err("sig1=(\"content-digest\";sf)", sig),
            SignatureError::ComponentParameters { .. }
        ));
        assert!(matches!(
            err("sig1=(\"@method\");created=\"x\"", sig),
            SignatureError::BadParameter {
                name: "created",
                ..
            }
        ));
        assert!(matches!(err("sig1=(", sig), SignatureError::Syntax { .. }));
        assert!(matches!(err("", sig), SignatureError::Empty));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever arrives in the two headers, reading them ends in a value
        /// or an error, never a panic.
        #[test]
        fn any_header_text_is_read_or_refused(input in ".{0,300}", sig in ".{0,120}") {
            let _ = parse_signatures(&input, &sig);
        }

        /// Structured-looking input (the grammar's own characters) reaches
        /// deeper than random text.
        #[test]
        fn structured_noise_is_read_or_refused(
            input in r#"[a-z0-9]{1,6}=\(("[@a-z-]{1,12}" ?){0,4}\)(;[a-z]{1,7}=("[a-z0-9]{0,8}"|[0-9]{1,10}|:[A-Za-z0-9+/=]{0,8}:))*"#,
        ) {
            if let Ok(sigs) = parse_signatures(&input, "") {
                prop_assert!(sigs.is_empty(), "a signature without bytes was accepted");
            }
        }

        /// A signer's parameters always read back as the same components
        /// and the same base.
        #[test]
        fn signed_parameters_read_back(
            components in proptest::collection::btree_set("[a-z][a-z0-9-]{0,15}", 0..6),
            created in 0i64..4_000_000_000,
            nonce in "[A-Za-z0-9_-]{1,40}",
        ) {
            let p = SignatureParams {
                components: components.into_iter().collect(),
                created,
                nonce,
                keyid: "ab".repeat(32),
                alg: ALG.into(),
            };
            let got = parse_signatures(&p.header_value().unwrap(), &signature_header(&[7; 64]))
                .unwrap()
                .remove(0);
            prop_assert_eq!(&got.components, &p.components);
            prop_assert_eq!(got.created, Some(created));
            let value = |c: &str| Some(format!("v-{c}"));
            prop_assert_eq!(got.base(value).unwrap(), signature_base(&p, value).unwrap());
        }
    }
}
