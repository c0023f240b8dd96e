//! Trip writes are judged by the trip's write rules on the device, before they are made: a
//! member who may not make one gets a typed error at once and the trip stays as it was, rather
//! than the relay refusing the change later.

mod support;

use std::time::Duration;

use weft_ffi::{TokenError, TokenProvider, TripMember, WeftDevice, WeftError};

struct Token(String);

impl TokenProvider for Token {
    fn token(&self) -> Result<String, TokenError> {
        Ok(self.0.clone())
    }
}

async fn device(
    dir: &tempfile::TempDir,
    user: &str,
    relay: &support::Relay,
) -> std::sync::Arc<WeftDevice> {
    let device = weft_ffi::open_device(dir.path().join(user).display().to_string(), user.into())
        .await
        .expect("open the device");
    let cert = std::fs::read_to_string(&relay.cert_pem).expect("the relay's certificate");
    device
        .start_relay_sync(
            relay.addr.to_string(),
            Some(cert),
            Box::new(Token(relay.token(user))),
            vec![],
        )
        .await
        .expect("sync with the relay");
    device
}

/// Polls `cond` until it holds (30 s at most).
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    for _ in 0..1500 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_may_not_change_the_members_is_refused_on_the_device() {
    let relay = support::Relay::start().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let alice = device(&dir, "alice", &relay).await;
    let bob = device(&dir, "bob", &relay).await;

    // Alice plans a trip, shares it with Bob and makes him a member; a second trip Bob may
    // only read.
    let trip = alice
        .create_trip("Lisbon".into(), None, None)
        .await
        .expect("a trip");
    let plans = alice
        .create_trip("Surprise".into(), None, None)
        .await
        .expect("another trip");
    alice
        .share(trip.clone(), "bob".into(), weft_ffi::ShareRole::ReadWrite)
        .await
        .expect("share");
    alice
        .share(plans.clone(), "bob".into(), weft_ffi::ShareRole::ReadOnly)
        .await
        .expect("share");
    alice
        .set_trip_member(trip.clone(), "bob".into(), "traveller".into())
        .await
        .expect("the owner adds a member");
    let bob_traveller = vec![TripMember {
        user: "bob".into(),
        role: "traveller".into(),
    }];
    eventually("bob reads himself among the members", || async {
        bob.read_trip(trip.clone())
            .await
            .is_ok_and(|t| t.members == bob_traveller)
    })
    .await;

    // Bob may add a task, but not a member, nor take himself off.
    bob.add_task(trip.clone(), "Book the hotel".into(), None)
        .await
        .expect("a member adds a task");
    match bob
        .set_trip_member(trip.clone(), "carol".into(), "guest".into())
        .await
    {
        Err(WeftError::Forbidden { reason }) => assert!(reason.contains("owner"), "{reason}"),
        other => panic!("bob adding a member: {other:?}"),
    }
    assert!(matches!(
        bob.remove_trip_member(trip.clone(), "bob".into()).await,
        Err(WeftError::Forbidden { .. })
    ));
    let seen = bob.read_trip(trip.clone()).await.expect("bob's trip");
    assert_eq!(
        seen.members, bob_traveller,
        "a refused write changes nothing"
    );
    assert_eq!(seen.tasks.len(), 1);

    // On the trip Bob may only read, every write is refused as read-only.
    eventually("bob holds the read-only trip", || async {
        bob.document_info(plans.clone())
            .await
            .is_ok_and(|i| i.role == Some(weft_ffi::ShareRole::ReadOnly))
    })
    .await;
    assert!(matches!(
        bob.add_task(plans.clone(), "Peek".into(), None).await,
        Err(WeftError::ReadOnly { .. })
    ));

    // Nothing of the refused writes reaches Alice: Bob's task does, and Bob is the one member.
    eventually("alice has bob's task", || async {
        alice
            .read_trip(trip.clone())
            .await
            .is_ok_and(|t| t.tasks.len() == 1 && t.members == bob_traveller)
    })
    .await;
    for d in [alice, bob] {
        d.shutdown().await.expect("shut down");
    }
}
