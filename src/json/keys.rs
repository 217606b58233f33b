//! Which keys of an object are the same key, and folding repeats.

use std::collections::HashMap;

use super::{Json, JsonStr};

/// Objects this small are checked pairwise; larger ones through a map, so
/// a body with many keys costs linear time, not quadratic.
const PAIRWISE_MAX: usize = 16;

/// What makes two keys the same key: the same UTF-16 code units, as in
/// JavaScript. Two keys with lone surrogates may decode to the same text
/// (`"\ud800"` and `"\udc00"` are both U+FFFD) yet be different keys.
#[derive(PartialEq, Eq, Hash)]
enum KeyId<'k> {
    Text(&'k str),
    Units(Vec<u16>),
}

impl<'k> KeyId<'k> {
    fn of(key: &'k JsonStr<'_>) -> Self {
        match key.raw() {
            None => KeyId::Text(key.as_str()),
            Some(raw) => KeyId::Units(utf16_units(raw)),
        }
    }
}

/// The UTF-16 code units a string's source text (between the quotes, as
/// accepted by the parser) stands for, lone surrogates included.
fn utf16_units(raw: &str) -> Vec<u16> {
    let mut units = Vec::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            units.extend_from_slice(c.encode_utf16(&mut [0; 2]));
            continue;
        }
        let unit = match chars.next() {
            Some('b') => 0x8,
            Some('f') => 0xc,
            Some('n') => 0xa,
            Some('r') => 0xd,
            Some('t') => 0x9,
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                u16::from_str_radix(&hex, 16).unwrap_or(0xFFFD)
            }
            // `"`, `\` and `/` stand for themselves.
            Some(other) => other as u16,
            None => break,
        };
        units.push(unit);
    }
    units
}

fn same_key(a: &JsonStr<'_>, b: &JsonStr<'_>) -> bool {
    match (a.raw(), b.raw()) {
        (None, None) => a.as_str() == b.as_str(),
        (Some(_), Some(_)) => a.as_str() == b.as_str() && KeyId::of(a) == KeyId::of(b),
        // A lone surrogate is in one and cannot be in the other.
        _ => false,
    }
}

/// Folds repeated keys into the first entry, keeping the last value;
/// true when there were any.
pub(super) fn dedup_keys(entries: &mut Vec<(JsonStr<'_>, Json<'_>)>) -> bool {
    let has_duplicates = if entries.len() <= PAIRWISE_MAX {
        (1..entries.len()).any(|i| entries[..i].iter().any(|(k, _)| same_key(k, &entries[i].0)))
    } else {
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        !entries.iter().all(|(k, _)| seen.insert(KeyId::of(k)))
    };
    if !has_duplicates {
        return false;
    }
    // For each entry, the index of the first entry with its key.
    let first_of: Vec<usize> = {
        let mut first_at: HashMap<KeyId<'_>, usize> = HashMap::with_capacity(entries.len());
        entries
            .iter()
            .enumerate()
            .map(|(i, (k, _))| *first_at.entry(KeyId::of(k)).or_insert(i))
            .collect()
    };
    let mut kept = Vec::with_capacity(entries.len());
    // Where each first entry landed in `kept`.
    let mut kept_at = vec![0; entries.len()];
    for (i, (key, value)) in entries.drain(..).enumerate() {
        let first = first_of[i];
        if first == i {
            kept_at[i] = kept.len();
            kept.push((key, value));
        } else {
            kept[kept_at[first]].1 = value;
        }
    }
    *entries = kept;
    true
}
