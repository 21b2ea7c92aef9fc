//! Devices not written by us: a Python device that signs with the PyPI
//! `http-message-signatures` package (RFC 9421) and uploads with `tuspy`
//! (tus 1.0), both unmodified, against `hexroad serve`.

use std::process::Command;

use serde_json::Value;

mod common;
use common::{python, root, serve, sql, succeed};

#[test]
fn independent_rfc_9421_and_tus_clients_register_and_upload_and_resume_after_a_cut() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve(&data, "127.0.0.1:0", &[]);
    let out = succeed(
        Command::new(python())
            .arg(root().join("cli/tests/support/independent_device.py"))
            .arg(&server.base),
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let device = report["device_id"].as_str().unwrap();

    // Registration, signed under the library's own label with its own
    // parameter order (created, keyid, alg, nonce).
    let register = &report["register"];
    assert_eq!(register["status"], 201, "{register}");
    assert_ne!(register["label"], "sig1", "{register}");
    assert_eq!(register["body"]["device_id"], device);

    // A signature over the wrong components is refused, naming what it must
    // cover; so is one whose covered header changed after signing. Neither
    // stores a byte.
    let signed = &report["signed_upload"];
    let wrong = &signed["wrong_components"];
    assert_eq!(wrong["status"], 401, "{wrong}");
    assert_eq!(wrong["error"], "bad_signature", "{wrong}");
    assert!(
        wrong["message"]
            .as_str()
            .unwrap()
            .contains("must cover \"upload-offset\""),
        "{wrong}"
    );
    let tampered = &signed["tampered"];
    assert_eq!(tampered["status"], 401, "{tampered}");
    assert_eq!(tampered["error"], "bad_signature", "{tampered}");
    assert!(
        tampered["message"]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{tampered}"
    );
    assert_eq!(signed["offset_after_refusals"], 0, "{signed}");
    assert_eq!(signed["final"]["status"], 204, "{signed}");
    assert_eq!(signed["final"]["upload_status"], "accepted", "{signed}");

    // tuspy: cut mid-chunk, resumed by a new uploader from the offset the
    // server kept, to the end. The cut chunk keeps none of its bytes: they
    // could not be checked against its Upload-Checksum.
    let tus = &report["tuspy"];
    assert_eq!(tus["cut_seen"], true, "{tus}");
    let chunk = tus["chunk"].as_u64().unwrap();
    let kept = tus["offset_after_cut"].as_u64().unwrap();
    assert!(tus["cut_bytes"].as_u64().unwrap() > 0, "{tus}");
    assert_eq!(kept, chunk, "only verified chunks were kept: {tus}");
    assert_eq!(tus["final_offset"], tus["bytes"], "{tus}");

    // Both uploads are in the tables, from this device, with every fix.
    let rows = sql(
        &data,
        &format!(
            "SELECT drive_id, status, bytes FROM uploads WHERE device_id = '{device}' \
             ORDER BY drive_id"
        ),
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["drive_id"], "indie-signed");
    assert_eq!(rows[1]["drive_id"], "indie-tuspy");
    assert!(rows.iter().all(|r| r["status"] == "accepted"), "{rows:?}");
    assert_eq!(rows[1]["bytes"], tus["bytes"]);
    let fixes = sql(
        &data,
        &format!("SELECT count(*) AS n FROM gnss WHERE device_id = '{device}'"),
    );
    assert_eq!(fixes[0]["n"], 240 + 300);
}
