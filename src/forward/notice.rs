//! Erasure notices as messages (CONTRACT §11): `{"erasure":{"ids":[...]}}`.
//! A large erasure (100,000 events of one subject) is split into messages
//! of at most [`IDS_PER_MESSAGE`] ids each, so every one fits each kind's
//! limit (NATS's default `max_payload` is 1 MiB); each has its own stable
//! id, so a re-send of any of them is deduplicated like an event.

use crate::event::wire;

/// Ids per notice message: an id is at most 19 digits, 22 bytes with its
/// quotes and comma, so a message stays under 256 KiB.
pub const IDS_PER_MESSAGE: usize = 10_000;

/// The messages of the notice at feed id `notice`: (message id, body),
/// in order. The first keeps the id a one-message notice always had.
pub fn messages(notice: i64, event_ids: &str, per_message: usize) -> Vec<(String, Vec<u8>)> {
    let ids: Vec<&str> = event_ids.split(',').filter(|s| !s.is_empty()).collect();
    if ids.is_empty() {
        return vec![(message_id(notice, 0), body(&[]))];
    }
    ids.chunks(per_message.max(1))
        .enumerate()
        .map(|(k, part)| (message_id(notice, k), body(part)))
        .collect()
}

/// The id of part `k` of the notice at feed id `notice`: never an event's
/// (those are digits only).
pub fn message_id(notice: i64, k: usize) -> String {
    if k == 0 {
        format!("erasure-{notice}")
    } else {
        format!("erasure-{notice}-{k}")
    }
}

fn body(ids: &[&str]) -> Vec<u8> {
    let mut body = Vec::with_capacity(24 + ids.len() * 22);
    body.extend_from_slice(b"{\"erasure\":{\"ids\":[");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        wire::string(&mut body, id);
    }
    body.extend_from_slice(b"]}}");
    body
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ids_of(body: &[u8]) -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v["erasure"]["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_huge_erasure_goes_in_bounded_messages_each_with_its_own_id() {
        // 100,000 erased events of one subject, with the largest ids.
        let all: Vec<String> = (0..100_000).map(|i| (i64::MAX - i).to_string()).collect();
        let parts = messages(77, &all.join(","), IDS_PER_MESSAGE);
        assert_eq!(parts.len(), 10);
        let mut seen = std::collections::HashSet::new();
        let mut named = Vec::new();
        for (id, body) in &parts {
            assert!(seen.insert(id.clone()), "{id} twice");
            assert!(body.len() < 256 * 1024, "{id}: {} bytes", body.len());
            named.extend(ids_of(body));
        }
        assert_eq!(named, all, "every id once, in order");
        assert_eq!(parts[0].0, "erasure-77");
        assert_eq!(parts[9].0, "erasure-77-9");
    }

    #[test]
    fn small_limits_split_exactly_and_a_small_notice_is_one_message() {
        let parts = messages(5, "1,2,3,4,5", 2);
        let got: Vec<(String, Vec<String>)> = parts
            .iter()
            .map(|(id, b)| (id.clone(), ids_of(b)))
            .collect();
        assert_eq!(
            got,
            [
                ("erasure-5".to_owned(), vec!["1".to_owned(), "2".to_owned()]),
                (
                    "erasure-5-1".to_owned(),
                    vec!["3".to_owned(), "4".to_owned()]
                ),
                ("erasure-5-2".to_owned(), vec!["5".to_owned()]),
            ]
        );
        let one = messages(6, "9,10", IDS_PER_MESSAGE);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].1, br#"{"erasure":{"ids":["9","10"]}}"#);
    }
}
