//! The coordination primitives against a real NATS JetStream server.

mod support;

use std::time::Duration;

use hexroad_coord::{Coordination, Spent};
use support::nats::Nats;

async fn node(server: &Nats, name: &str) -> Coordination {
    Coordination::connect(&server.url, name, "test")
        .await
        .unwrap()
}

#[tokio::test]
async fn a_nonce_is_spent_once_across_nodes_and_only_for_the_window() {
    let server = Nats::start();
    let a = node(&server, "a")
        .await
        .nonces(Duration::from_secs(2), 1000)
        .await
        .unwrap();
    let b = node(&server, "b")
        .await
        .nonces(Duration::from_secs(2), 1000)
        .await
        .unwrap();
    assert_eq!(a.spend("device-1", "n1").await.unwrap(), Spent::Fresh);
    assert_eq!(b.spend("device-1", "n1").await.unwrap(), Spent::Replayed);
    assert_eq!(a.spend("device-1", "n1").await.unwrap(), Spent::Replayed);
    // Another device's same nonce is its own.
    assert_eq!(b.spend("device-2", "n1").await.unwrap(), Spent::Fresh);
    assert_eq!(a.held().await.unwrap(), 2);
    // Past the window the key is gone (the signature's age refuses the
    // request by then anyway).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(a.held().await.unwrap(), 0);
    assert_eq!(b.spend("device-1", "n1").await.unwrap(), Spent::Fresh);
}

#[tokio::test]
async fn a_full_nonce_store_refuses_rather_than_forgets() {
    let server = Nats::start();
    let nonces = node(&server, "a")
        .await
        .nonces(Duration::from_secs(60), 10)
        .await
        .unwrap();
    let mut spent = Vec::new();
    for i in 0..40 {
        spent.push(nonces.spend("device", &format!("nonce-{i}")).await.unwrap());
    }
    assert!(spent.contains(&Spent::Full), "{spent:?}");
    // Nothing already held was dropped to make room.
    assert_eq!(
        nonces.spend("device", "nonce-0").await.unwrap(),
        Spent::Replayed
    );
}

#[tokio::test]
async fn a_lease_is_exclusive_renewable_and_lapses_when_its_holder_dies() {
    let server = Nats::start();
    let a = node(&server, "a")
        .await
        .leases(Duration::from_secs(2))
        .await
        .unwrap();
    let b = node(&server, "b")
        .await
        .leases(Duration::from_secs(2))
        .await
        .unwrap();
    let mut lease = a.acquire("upload-1", "node-a").await.unwrap().unwrap();
    assert_eq!(
        b.acquire("upload-1", "node-b").await.unwrap().unwrap_err(),
        "node-a"
    );
    // Renewed, it outlives its lease time.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        a.renew(&mut lease).await.unwrap();
    }
    assert!(b.acquire("upload-1", "node-b").await.unwrap().is_err());
    a.release(lease).await.unwrap();
    let lease = b.acquire("upload-1", "node-b").await.unwrap().unwrap();
    // Node b "dies": its lease lapses and a takes the upload.
    drop(lease);
    assert!(a.acquire("upload-1", "node-a").await.unwrap().is_err());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut taken = a.acquire("upload-1", "node-a").await.unwrap().unwrap();
    a.renew(&mut taken).await.unwrap();
    assert!(a.acquire("bad key!", "node-a").await.is_err());
}

#[tokio::test]
async fn queued_work_goes_to_one_worker_and_comes_back_when_it_dies() {
    let server = Nats::start();
    let ack_wait = Duration::from_secs(2);
    let ingest = node(&server, "ingest")
        .await
        .work_queue(ack_wait, 5)
        .await
        .unwrap();
    let worker_1 = node(&server, "w1")
        .await
        .work_queue(ack_wait, 5)
        .await
        .unwrap();
    let worker_2 = node(&server, "w2")
        .await
        .work_queue(ack_wait, 5)
        .await
        .unwrap();
    ingest.publish("upload-a").await.unwrap();
    ingest.publish("upload-a").await.unwrap(); // a retried finish: dropped
    ingest.publish("upload-b").await.unwrap();
    assert_eq!(ingest.backlog().await.unwrap().0, 2);

    let first = worker_1
        .next(Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.upload.as_str(), first.delivered), ("upload-a", 1));
    let second = worker_2
        .next(Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.upload, "upload-b");
    // Worker 2 keeps its message alive past the ack wait; worker 1 dies.
    drop(first);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        second.progress().await.unwrap();
    }
    let again = worker_2
        .next(Duration::from_secs(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.upload.as_str(), again.delivered), ("upload-a", 2));
    // Queued before the first delivery's ack wait ran out.
    assert!(again.queued_for >= ack_wait, "{:?}", again.queued_for);
    again.ack().await.unwrap();
    second.ack().await.unwrap();
    assert!(
        worker_1
            .next(Duration::from_secs(3))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(ingest.backlog().await.unwrap(), (0, 0));

    // Not now: back after the delay, to whoever asks.
    ingest.publish("upload-c").await.unwrap();
    let c = worker_1
        .next(Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap();
    c.retry_after(Duration::from_millis(500)).await.unwrap();
    let c = worker_2
        .next(Duration::from_secs(3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c.upload.as_str(), c.delivered), ("upload-c", 2));
    c.ack().await.unwrap();
}

#[tokio::test]
async fn requests_fail_plainly_while_the_server_is_down_and_work_after() {
    let mut server = Nats::start();
    let coordination = node(&server, "a").await;
    let nonces = coordination
        .nonces(Duration::from_secs(60), 1000)
        .await
        .unwrap();
    let queue = coordination
        .work_queue(Duration::from_secs(5), 5)
        .await
        .unwrap();
    assert_eq!(nonces.spend("d", "before").await.unwrap(), Spent::Fresh);
    server.stop();
    let err = tokio::time::timeout(Duration::from_secs(30), nonces.spend("d", "during"))
        .await
        .expect("a request to a dead server must end")
        .unwrap_err();
    assert!(err.to_string().contains("NATS JetStream"), "{err}");
    server.restart();
    // The client reconnects on its own; the store kept what it held.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        match nonces.spend("d", "before").await {
            Ok(spent) => break spent,
            Err(e) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = e;
            }
            Err(e) => panic!("never reconnected: {e}\n{}", server.log()),
        }
    };
    assert_eq!(after, Spent::Replayed);
    queue.publish("after-outage").await.unwrap();
    assert_eq!(
        queue
            .next(Duration::from_secs(2))
            .await
            .unwrap()
            .unwrap()
            .upload,
        "after-outage"
    );
}

#[tokio::test]
async fn a_bad_prefix_or_an_absent_server_is_named() {
    let err = Coordination::connect("nats://127.0.0.1:1", "x", "ok")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nats://127.0.0.1:1"), "{err}");
    let err = Coordination::connect("nats://127.0.0.1:1", "x", "a.b")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("prefix"), "{err}");
}
