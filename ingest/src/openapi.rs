//! The OpenAPI 3.1 description of every endpoint, served at `/openapi.json`.

use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn signed() -> Value {
    json!([{ "httpSignature": [] }])
}

/// The answers every signed endpoint can give, plus `extra` (status, why).
fn common_errors(extra: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    let mut responses = serde_json::Map::new();
    responses.insert(
        "401".into(),
        error_response("unsigned, bad or stale signature, or a replayed nonce"),
    );
    responses.insert("403".into(), error_response("unknown or revoked device"));
    responses.insert(
        "429".into(),
        error_response("rate or concurrency limit; see Retry-After"),
    );
    for (code, text) in extra {
        responses.insert((*code).into(), error_response(text));
    }
    responses
}

/// The document. Routes here and in `app` are checked against each other by a test.
pub fn document() -> Value {
    let upload_id = json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } });
    let zone_responses = common_errors(&[
        ("201", "declared: the zone with its zone_id"),
        ("400", "a position off the globe or a radius out of range"),
        ("409", "too_many_zones: withdraw one first"),
    ]);
    let mut patch_responses = common_errors(&[
        ("409", "Upload-Offset does not match the server's offset"),
        ("413", "the body runs past Upload-Length"),
        (
            "415",
            "Content-Type must be application/offset+octet-stream",
        ),
        (
            "422",
            "the finished upload failed validation (sha256, media, track, telemetry)",
        ),
        ("460", "the body does not match Upload-Checksum"),
    ]);
    patch_responses.insert("204".into(), json!({ "description": "bytes stored; Upload-Offset is the new offset. On the last byte the upload was validated and committed (Hexroad-Upload-Status)" }));
    let mut post_responses = common_errors(&[
        (
            "400",
            "missing or malformed Upload-Length or Upload-Metadata",
        ),
        ("412", "Tus-Resumable must be 1.0.0"),
        ("413", "Upload-Length exceeds Tus-Max-Size"),
    ]);
    post_responses.insert(
        "201".into(),
        json!({ "description": "created; Location is the upload URL" }),
    );
    let mut head_responses = common_errors(&[("404", "no such upload for this device")]);
    head_responses.insert("200".into(), json!({ "description": "Upload-Offset and Upload-Length; Hexroad-Upload-Status once finished" }));
    let mut delete_responses = common_errors(&[
        ("404", "no such upload"),
        ("409", "the upload already finished"),
    ]);
    delete_responses.insert(
        "204".into(),
        json!({ "description": "terminated; staged bytes removed" }),
    );
    let mut register_responses = common_errors(&[
        ("400", "malformed body or public key"),
        (
            "409",
            "the key is already registered to another contributor",
        ),
        ("413", "body too large"),
    ]);
    register_responses.insert("201".into(), json!({ "description": "registered" }));
    register_responses.insert(
        "200".into(),
        json!({ "description": "already registered with the same contributor" }),
    );
    let mut revoke_responses = common_errors(&[]);
    revoke_responses.insert("204".into(), json!({ "description": "revoked" }));

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "hexroad ingest",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Device registration and tus 1.0 resumable uploads, signed with RFC 9421 HTTP Message Signatures (ed25519). Every request except registration's key must be signed by a registered device; any signature label; keyid (the device id), created and nonce required; covered components must include @method, @path and @authority (the service's public host[:port]), plus content-digest for JSON bodies, upload-length and upload-metadata for creation, and upload-offset and upload-checksum (sha1 or sha256) for PATCH."
        },
        "paths": {
            "/healthz": { "get": { "summary": "liveness", "responses": { "200": { "description": "ok" } } } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "responses": { "200": { "description": "text exposition format" } } } },
            "/openapi.json": { "get": { "summary": "this document", "responses": { "200": { "description": "OpenAPI 3.1" } } } },
            "/v1/sql": { "post": {
                "summary": "one read-only SQL query (SELECT or EXPLAIN) over the tables and views; the answer's format follows Accept: application/json (default), text/csv, application/vnd.apache.arrow.stream. Served by `hexroad serve`. Without Authorization the caller is the public: only the views coverage, freshness and frames (no device, upload or contributor ids, nothing inside privacy zones, coarsened times and positions, weekly pseudonyms); with `Authorization: Bearer <sql.token>` the operator: every table. JSON bodies only (415 otherwise), and the Host must be the server's public host and any Origin its own",
                "requestBody": { "required": true, "content": {
                    "application/json": { "schema": { "type": "object", "required": ["query"], "properties": { "query": { "type": "string" } } } }
                } },
                "responses": {
                    "200": { "description": "the rows" },
                    "400": { "description": "bad_query or bad_request", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                    "401": { "description": "unauthorized: credentials that are not the operator's token" },
                    "403": { "description": "read_only: DDL, DML and SET are refused" },
                    "408": { "description": "query_timeout" },
                    "413": { "description": "memory_limit" }
                }
            } },
            "/v1/devices": { "post": {
                "summary": "register a device key for a contributor; the request must be signed by that key (proof of possession)",
                "security": signed(),
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Registration" } } } },
                "responses": register_responses
            } },
            "/v1/devices/{id}": { "delete": {
                "summary": "revoke this device's key (signed by the device itself)",
                "security": signed(),
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": revoke_responses
            } },
            "/v1/contributors/{id}/key": { "post": {
                "summary": "rotate a contributor account's key: the body carries the new key and the signature of the key in force over `hexroad contributor key rotation v1\\n<id>\\n<old hex>\\n<new hex>`",
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["public_key", "signature"], "properties": {
                    "public_key": { "type": "string", "description": "hex ed25519 public key" },
                    "signature": { "type": "string", "description": "base64 ed25519 signature" }
                } } } } },
                "responses": {
                    "200": { "description": "rotated" },
                    "403": { "description": "bad_rotation: not signed by the key in force" },
                    "404": { "description": "no account with a key" },
                    "429": { "description": "rate limited" }
                }
            } },
            "/v1/privacy-zones": {
                "post": {
                    "summary": "declare a privacy zone for this device's contributor: nothing of theirs inside it is published (frames, track, coverage), already published frames included",
                    "security": signed(),
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/PrivacyZone" } } } },
                    "responses": zone_responses
                },
                "get": { "summary": "this contributor's active privacy zones", "security": signed(), "responses": common_errors(&[("200", "{\"zones\": [...]}")]) }
            },
            "/v1/privacy-zones/{id}": { "delete": {
                "summary": "withdraw one of this contributor's privacy zones",
                "security": signed(),
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } }],
                "responses": common_errors(&[("204", "withdrawn"), ("404", "no such zone of this contributor")])
            } },
            "/v1/uploads": {
                "options": { "summary": "tus capabilities", "responses": { "204": { "description": "Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm" } } },
                "post": {
                    "summary": "tus creation: Upload-Length and Upload-Metadata (kind, format, sha256, drive_id, filename)",
                    "security": signed(),
                    "responses": post_responses
                }
            },
            "/v1/uploads/{id}": {
                "head": { "summary": "tus offset", "security": signed(), "parameters": [upload_id.clone()], "responses": head_responses },
                "patch": {
                    "summary": "tus append at Upload-Offset, with Upload-Checksum: sha1|sha256 <base64>",
                    "security": signed(),
                    "parameters": [upload_id.clone()],
                    "requestBody": { "required": true, "content": { "application/offset+octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
                    "responses": patch_responses
                },
                "delete": { "summary": "tus termination", "security": signed(), "parameters": [upload_id], "responses": delete_responses }
            }
        },
        "components": components()
    })
}

/// The security scheme and the schemas the paths refer to.
fn components() -> Value {
    json!({
        "securitySchemes": {
            "httpSignature": { "type": "apiKey", "in": "header", "name": "Signature", "description": "RFC 9421 with alg=\"ed25519\"; keyid is the device id (hex public key); created and nonce are required" }
        },
        "schemas": {
            "Error": { "type": "object", "required": ["error", "message"], "properties": { "error": { "type": "string" }, "message": { "type": "string" } } },
            "PrivacyZone": { "type": "object", "required": ["lat", "lon", "radius_m"], "properties": {
                "lat": { "type": "number" },
                "lon": { "type": "number" },
                "radius_m": { "type": "number", "description": "50 to ingest.max_zone_radius_m metres" }
            } },
            "Registration": { "type": "object", "required": ["public_key", "contributor_id"], "properties": {
                "public_key": { "type": "string", "description": "hex ed25519 public key; must equal the signature's keyid" },
                "contributor_id": { "type": "string" },
                "attestation": { "type": "object", "description": "required in attested registration: a trusted manufacturer's signature over the key and serial", "required": ["manufacturer", "serial", "signature"], "properties": {
                    "manufacturer": { "type": "string" }, "serial": { "type": "string" }, "signature": { "type": "string", "description": "base64 ed25519 over `hexroad device attestation v1\\n<key hex>\\n<serial>`" }
                } },
                "binding": { "type": "object", "description": "the contributor account's signature adding this device; required in attested registration and for an account that has a key", "required": ["contributor_key", "signature"], "properties": {
                    "contributor_key": { "type": "string" }, "signature": { "type": "string", "description": "base64 ed25519 over `hexroad device binding v1\\n<contributor id>\\n<key hex>`" }
                } },
                "make": { "type": "string" },
                "model": { "type": "string" }
            } }
        }
    })
}
