//! Issue 15: who may join. In attested registration a key needs a trusted
//! manufacturer's signature, and a device joins a contributor only with
//! the contributor's signature; an account's key rotates only by its own
//! signature. In open registration an account that has a key is still
//! protected.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey};
use hexroad_ingest::{IngestConfig, RegistrationMode};
use hexroad_wire::enrol::{attestation_message, binding_message, rotation_message};
use hexroad_wire::{ContributorId, DeviceId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;

fn hex_of(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().as_bytes())
}

fn sign(key: &SigningKey, message: &[u8]) -> String {
    STANDARD.encode(key.sign(message).to_bytes())
}

fn attestation(maker: &SigningKey, device: &DeviceId, serial: &str) -> Value {
    json!({
        "manufacturer": "acme",
        "serial": serial,
        "signature": sign(maker, &attestation_message(device, serial)),
    })
}

fn binding(account: &SigningKey, contributor: &str, device: &DeviceId) -> Value {
    let contributor: ContributorId = contributor.parse().unwrap();
    json!({
        "contributor_key": hex_of(account),
        "signature": sign(account, &binding_message(&contributor, device)),
    })
}

fn registration(d: &Device, contributor: &str, extra: &[(&str, Value)]) -> Value {
    let mut body = json!({ "public_key": d.id, "contributor_id": contributor });
    for (k, v) in extra {
        body[*k] = v.clone();
    }
    body
}

async fn enrolments(s: &Server) -> Vec<Value> {
    let out = s
        .lake
        .query("SELECT device_id, contributor_id, manufacturer, serial, bound FROM enrolments ORDER BY at")
        .await
        .unwrap();
    let text =
        hexroad_lake::render_batches(&out.batches, hexroad_lake::OutputFormat::Json).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn attested_registration_needs_the_manufacturer_and_the_contributor() {
    let maker = SigningKey::from_bytes(&[70; 32]);
    let forger = SigningKey::from_bytes(&[71; 32]);
    let alice_key = SigningKey::from_bytes(&[72; 32]);
    let mallory_key = SigningKey::from_bytes(&[73; 32]);
    let s = start(IngestConfig {
        registration: RegistrationMode::Attested,
        manufacturers: [("acme".to_owned(), hex_of(&maker))].into(),
        ..IngestConfig::default()
    })
    .await;
    let (car, mallorys) = (Device::new(60), Device::new(61));

    // No attestation, a stranger's, a forged one, one for another key.
    let refusals = [
        (
            registration(&car, "alice", &[]),
            StatusCode::FORBIDDEN,
            "attestation_required",
        ),
        (
            registration(
                &car,
                "alice",
                &[("attestation", {
                    let mut a = attestation(&maker, &car.id, "SN-1");
                    a["manufacturer"] = json!("nobody");
                    a
                })],
            ),
            StatusCode::FORBIDDEN,
            "unknown_manufacturer",
        ),
        (
            registration(
                &car,
                "alice",
                &[("attestation", attestation(&forger, &car.id, "SN-1"))],
            ),
            StatusCode::FORBIDDEN,
            "bad_attestation",
        ),
        (
            registration(
                &car,
                "alice",
                &[("attestation", attestation(&maker, &mallorys.id, "SN-1"))],
            ),
            StatusCode::FORBIDDEN,
            "bad_attestation",
        ),
        (
            registration(
                &car,
                "alice",
                &[("attestation", attestation(&maker, &car.id, "SN 1"))],
            ),
            StatusCode::BAD_REQUEST,
            "bad_attestation",
        ),
        // Attested, but the contributor did not sign.
        (
            registration(
                &car,
                "alice",
                &[("attestation", attestation(&maker, &car.id, "SN-1"))],
            ),
            StatusCode::FORBIDDEN,
            "binding_required",
        ),
    ];
    for (body, status, code) in refusals {
        assert_error(&register_with(&s, &car, body).await, status, code);
    }
    assert!(enrolments(&s).await.is_empty(), "nothing refused was kept");

    // Attested and bound: the account is created with Alice's key.
    let body = registration(
        &car,
        "alice",
        &[
            ("attestation", attestation(&maker, &car.id, "SN-1")),
            ("binding", binding(&alice_key, "alice", &car.id)),
        ],
    );
    let r = register_with(&s, &car, body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    let account = s
        .lake
        .contributor_key(&"alice".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.public_key, *alice_key.verifying_key().as_bytes());

    // Mallory's device is genuinely attested, but cannot join Alice's
    // account: not with its own key, nor with Alice's signature for
    // another device.
    for bind in [binding(&mallory_key, "alice", &mallorys.id), {
        let mut b = binding(&alice_key, "alice", &car.id);
        b["contributor_key"] = json!(hex_of(&alice_key));
        b
    }] {
        let body = registration(
            &mallorys,
            "alice",
            &[
                ("attestation", attestation(&maker, &mallorys.id, "SN-2")),
                ("binding", bind),
            ],
        );
        assert_error(
            &register_with(&s, &mallorys, body).await,
            StatusCode::FORBIDDEN,
            "bad_binding",
        );
    }
    let stored = enrolments(&s).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["manufacturer"], "acme");
    assert_eq!(stored[0]["serial"], "SN-1");
    assert_eq!(stored[0]["bound"], true);
}

#[tokio::test]
async fn an_account_key_rotates_only_by_its_own_signature() {
    let alice_key = SigningKey::from_bytes(&[80; 32]);
    let new_key = SigningKey::from_bytes(&[81; 32]);
    let s = start(IngestConfig::default()).await;
    let (car, van, stranger) = (Device::new(62), Device::new(63), Device::new(64));
    let r = register_with(
        &s,
        &car,
        registration(
            &car,
            "alice",
            &[("binding", binding(&alice_key, "alice", &car.id))],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);

    // Open registration: a fresh name needs no binding, but Alice's
    // account, which has a key, does.
    let r = register_with(&s, &stranger, registration(&stranger, "someone-new", &[])).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    assert_error(
        &register_with(&s, &van, registration(&van, "alice", &[])).await,
        StatusCode::FORBIDDEN,
        "binding_required",
    );

    let alice: ContributorId = "alice".parse().unwrap();
    let path = "/v1/contributors/alice/key";
    let rotate = |signer: &SigningKey| {
        json!({
            "public_key": hex_of(&new_key),
            "signature": sign(signer, &rotation_message(&alice, &hex_of(&alice_key), &hex_of(&new_key))),
        })
    };
    let post = |body: Value| {
        let base = s.base.clone();
        async move {
            send(
                &base,
                reqwest::Method::POST,
                path,
                &[("content-type".into(), "application/json".into())],
                serde_json::to_vec(&body).unwrap(),
            )
            .await
        }
    };
    assert_error(
        &post(rotate(&new_key)).await,
        StatusCode::FORBIDDEN,
        "bad_rotation",
    );
    assert_error(
        &send(
            &s.base,
            reqwest::Method::POST,
            "/v1/contributors/nobody/key",
            &[],
            serde_json::to_vec(&rotate(&alice_key)).unwrap(),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let r = post(rotate(&alice_key)).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);

    // The old key binds nothing any more; the new one does.
    assert_error(
        &register_with(
            &s,
            &van,
            registration(
                &van,
                "alice",
                &[("binding", binding(&alice_key, "alice", &van.id))],
            ),
        )
        .await,
        StatusCode::FORBIDDEN,
        "bad_binding",
    );
    let r = register_with(
        &s,
        &van,
        registration(
            &van,
            "alice",
            &[("binding", binding(&new_key, "alice", &van.id))],
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    let bound: Vec<bool> = enrolments(&s)
        .await
        .iter()
        .map(|e| e["bound"].as_bool().unwrap())
        .collect();
    assert_eq!(bound, [true, false, true]);
}
