//! The `http` kind's publisher against the test's own verifying server:
//! what each request carries, whatever the message's age.

use std::time::Duration;

use imggo_receiver::forward::http::HttpPublisher;
use imggo_receiver::forward::publish::{Message, Publisher as _, Verdict};

use crate::forward_support::*;

fn message(id: &str, timestamp: i64) -> Message {
    Message {
        id: id.to_owned(),
        target: String::new(),
        body: bytes::Bytes::from_static(b"{\"n\":1}"),
        timestamp,
        seq: (0, 1),
    }
}

/// A message built long ago (its first attempt was before a long outage) is
/// signed with the time of the request that carries it: a Standard Webhooks
/// consumer refuses timestamps older than 5 minutes, so a stale one would
/// refuse the message for good.
#[tokio::test]
async fn every_request_is_signed_with_its_own_time() {
    let dest = Destination::start().await;
    let mut publisher = HttpPublisher::new(
        dest.url(),
        vec![KEY_NEW.to_vec(), KEY_OLD.to_vec()],
        Duration::from_secs(5),
    )
    .unwrap();
    let ten_minutes_ago = chrono::Utc::now().timestamp() - 600;
    let batch = [message("1", ten_minutes_ago), message("2", 0)];
    let verdicts = publisher.publish(&batch).await;
    assert!(
        verdicts.iter().all(|v| matches!(v, Verdict::Confirmed)),
        "{verdicts:?}"
    );
    assert_eq!(dest.bad_signatures(), 0);
    assert_eq!(dest.accepted().len(), 2);
}

/// Only the first secret signs (CONTRACT §11): the header holds exactly
/// its signature (the test destination accepts nothing else), and with the
/// keys swapped the old key signs and the destination refuses.
#[tokio::test]
async fn only_the_first_secret_signs() {
    let dest = Destination::start().await;
    let now = chrono::Utc::now().timestamp();
    for (keys, accepted) in [
        (vec![KEY_NEW.to_vec(), KEY_OLD.to_vec()], true),
        (vec![KEY_OLD.to_vec(), KEY_NEW.to_vec()], false),
    ] {
        let mut publisher = HttpPublisher::new(dest.url(), keys, Duration::from_secs(5)).unwrap();
        let verdicts = publisher.publish(&[message("1", now)]).await;
        match (accepted, &verdicts[..]) {
            (true, [Verdict::Confirmed]) | (false, [Verdict::Refused(_)]) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(dest.bad_signatures(), 1);
}
