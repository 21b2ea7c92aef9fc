//! Issue 15: privacy zones through the API. A device declares areas for
//! its contributor, lists and withdraws them; another contributor can
//! neither see nor withdraw them; bad zones are refused naming the problem.

mod support;

use hexroad_ingest::IngestConfig;
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::*;

async fn register_as(s: &Server, d: &Device, contributor: &str) {
    let r = register_with(
        s,
        d,
        json!({ "public_key": d.id, "contributor_id": contributor }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
}

async fn zones_of(s: &Server, d: &Device) -> Vec<serde_json::Value> {
    let r = signed(s, d, Method::GET, "/v1/privacy-zones", &[], Vec::new()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    r.json["zones"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_contributors_zones_are_declared_listed_and_withdrawn_by_it_alone() {
    let s = start(IngestConfig {
        max_privacy_zones: 2,
        ..IngestConfig::default()
    })
    .await;
    let (alice, alices_car, bob) = (Device::new(40), Device::new(42), Device::new(41));
    register_as(&s, &alice, "alice").await;
    register_as(&s, &alices_car, "alice").await;
    register_as(&s, &bob, "bob").await;
    let path = "/v1/privacy-zones";

    for (bad, code) in [
        (
            json!({ "lat": 95.0, "lon": 24.9, "radius_m": 200.0 }),
            "bad_zone",
        ),
        (
            json!({ "lat": 60.1, "lon": 24.9, "radius_m": 10.0 }),
            "bad_zone",
        ),
        (
            json!({ "lat": 60.1, "lon": 24.9, "radius_m": 1e9 }),
            "bad_zone",
        ),
        (json!({ "lat": 60.1, "lon": 24.9 }), "bad_body"),
        (
            json!({ "lat": 60.1, "lon": 24.9, "radius_m": 200.0, "who": "x" }),
            "bad_body",
        ),
    ] {
        assert_error(
            &post_json(&s, &alice, path, &bad).await,
            StatusCode::BAD_REQUEST,
            code,
        );
    }
    assert!(
        zones_of(&s, &alice).await.is_empty(),
        "nothing bad was kept"
    );

    let before = s.lake.hidden_generation().await.unwrap();
    let home = json!({ "lat": 60.17, "lon": 24.94, "radius_m": 300.0 });
    let r = post_json(&s, &alice, path, &home).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    let zone_id = r.json["zone_id"].as_str().unwrap().to_owned();
    assert_ne!(
        s.lake.hidden_generation().await.unwrap(),
        before,
        "readers are told something is hidden now"
    );
    // The zone is the contributor's: every device of Alice's sees it,
    // Bob sees none of it and cannot withdraw it.
    assert_eq!(zones_of(&s, &alices_car).await.len(), 1);
    assert!(zones_of(&s, &bob).await.is_empty());
    let withdraw = format!("{path}/{zone_id}");
    assert_error(
        &signed(&s, &bob, Method::DELETE, &withdraw, &[], Vec::new()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(zones_of(&s, &alice).await.len(), 1);

    // At most max_privacy_zones at once.
    let work = json!({ "lat": 60.20, "lon": 24.90, "radius_m": 100.0 });
    assert_eq!(
        post_json(&s, &alices_car, path, &work).await.status,
        StatusCode::CREATED
    );
    assert_error(
        &post_json(&s, &alice, path, &work).await,
        StatusCode::CONFLICT,
        "too_many_zones",
    );

    let r = signed(&s, &alices_car, Method::DELETE, &withdraw, &[], Vec::new()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.json);
    let left = zones_of(&s, &alice).await;
    assert_eq!(left.len(), 1);
    assert_ne!(left[0]["zone_id"], zone_id.as_str());
    let stored = s.lake.privacy_zones().await.unwrap();
    assert_eq!(stored.iter().filter(|z| z.active).count(), 1);
}
