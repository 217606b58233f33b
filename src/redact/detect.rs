//! Detection of card numbers and US SSNs inside free text.
//!
//! One left-to-right pass over the bytes splits the text into *runs*: maximal
//! sequences of ASCII digit *groups* joined by exactly one `' '` or `'-'`.
//! Each run is then judged on its own:
//!
//! * a run glued to a letter or digit on one side cannot use the group on
//!   that side;
//! * SSN: three groups of 3, 2 and 4 digits joined by `-` and not joined by
//!   `-` to any other unmasked group; area not 000/666/9xx, group not 00,
//!   serial not 0000;
//! * card: among the remaining usable groups, every window of consecutive
//!   whole groups holding 13–19 digits that passes Luhn is a candidate; the
//!   longest (then leftmost) is masked, then the next that does not overlap
//!   a masked one, and so on. A whole run is simply its own longest window;
//! * SSN again: one that was dash-joined to a card just masked is now free
//!   (`123-45-6789-4111111111111111` → `***-**-6789-************1111`), and
//!   a second pass would see it so.
//!
//! A window holds at most 19 groups, so the work per group is bounded and
//! the scan is linear in the text length.
//!
//! The visible last four of a mask are digits like any others: text such as
//! `*********4111-1111-1111-1111` is a card (a rule that skipped four digits
//! after nine `*` as "an earlier mask's tail" left that card whole). They may
//! make a card with the groups after them (`4111111111111111 4111 1111 1111`
//! leaves `1111 4111 1111 1111` once the first card is masked), so the text is
//! scanned again until a pass finds nothing: a second redaction finds nothing
//! new, and every pass masks digits, so the passes end.

use super::luhn::{luhn_valid, CARD_DIGITS};
use super::mask::mask_digits;

/// Fewer digits than this cannot hold an SSN (9) or a card (13+).
const MIN_DIGITS: usize = 9;

#[derive(Clone, Copy)]
struct Group {
    start: usize,
    end: usize,
    /// Joined to the previous group by `-` (otherwise by `' '`, or first).
    dash_before: bool,
    /// May take part in an SSN or a card (not glued).
    usable: bool,
    /// Already part of a detected SSN or card.
    taken: bool,
}

impl Group {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Ssn,
    Card,
}

#[derive(Clone, Copy)]
struct Span {
    first: usize,
    last: usize,
    kind: Kind,
}

/// Reusable buffers for [`Scanner::redact_text`].
#[derive(Default)]
pub(crate) struct Scanner {
    groups: Vec<Group>,
    /// Passing card windows `(first, last)` group indices, by digit count − 13.
    windows: [Vec<(usize, usize)>; 7],
    spans: Vec<Span>,
}

fn glues(c: Option<char>) -> bool {
    c.is_some_and(char::is_alphanumeric)
}

impl Scanner {
    /// The text with every detected card and SSN masked, or `None` when
    /// nothing was found (the common case allocates nothing). Scanned again
    /// until a pass finds nothing (see the module comment).
    pub(crate) fn redact_text(&mut self, text: &str) -> Option<String> {
        let mut out = self.pass(text)?;
        while let Some(again) = self.pass(&out) {
            out = again;
        }
        Some(out)
    }

    /// One pass of [`Scanner::redact_text`]: every `Some` has fewer ASCII
    /// digits than `text`.
    fn pass(&mut self, text: &str) -> Option<String> {
        let bytes = text.as_bytes();
        if bytes.iter().filter(|b| b.is_ascii_digit()).count() < MIN_DIGITS {
            return None;
        }
        let mut out: Option<String> = None;
        let mut copied = 0;
        let mut i = 0;
        while i < bytes.len() {
            if !bytes[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            i = self.read_run(bytes, i);
            self.judge_run(text);
            if self.spans.is_empty() {
                continue;
            }
            let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
            self.spans.sort_unstable_by_key(|s| s.first);
            for span in &self.spans {
                let (first, last) = (self.groups[span.first], self.groups[span.last]);
                out.push_str(&text[copied..first.start]);
                match span.kind {
                    Kind::Ssn => {
                        out.push_str("***-**-");
                        out.push_str(&text[last.start..last.end]);
                    }
                    Kind::Card => {
                        let mut digits = [0u8; 19];
                        let n = self.collect_digits(bytes, span.first, span.last, &mut digits);
                        out.push_str(&mask_digits(&digits[..n]));
                    }
                }
                copied = last.end;
            }
        }
        let mut out = out?;
        out.push_str(&text[copied..]);
        Some(out)
    }

    /// Reads the run starting at `start` (a digit) into `self.groups`;
    /// returns the index just after it.
    fn read_run(&mut self, bytes: &[u8], start: usize) -> usize {
        self.groups.clear();
        let mut i = start;
        let mut dash_before = false;
        loop {
            let group_start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            self.groups.push(Group {
                start: group_start,
                end: i,
                dash_before,
                usable: true,
                taken: false,
            });
            match (bytes.get(i), bytes.get(i + 1)) {
                (Some(&sep @ (b' ' | b'-')), Some(next)) if next.is_ascii_digit() => {
                    dash_before = sep == b'-';
                    i += 1;
                }
                _ => return i,
            }
        }
    }

    /// Fills `self.spans` with the SSNs and cards of the run in `self.groups`.
    fn judge_run(&mut self, text: &str) {
        self.spans.clear();
        let (Some(first), Some(last)) = (self.groups.first(), self.groups.last()) else {
            return;
        };
        let (run_start, run_end) = (first.start, last.end);
        let before = &text[..run_start];
        let after = &text[run_end..];
        let glued_before = glues(before.chars().next_back());
        let glued_after = glues(after.chars().next());
        let last_index = self.groups.len() - 1;
        self.groups[0].usable &= !glued_before;
        self.groups[last_index].usable &= !glued_after;

        let bytes = text.as_bytes();
        self.find_ssns(bytes);
        if self.find_cards(bytes) {
            self.find_ssns(bytes);
        }
    }

    /// SSNs among the groups not yet taken. A stretch is a maximal sequence
    /// of dash-joined groups, cut at taken groups (a masked neighbour cannot
    /// make a longer number); an SSN is a stretch of three.
    fn find_ssns(&mut self, bytes: &[u8]) {
        let count = self.groups.len();
        let cuts = |g: &Group| g.taken;
        let mut i = 0;
        while i < count {
            if cuts(&self.groups[i]) {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < count && self.groups[j].dash_before && !cuts(&self.groups[j]) {
                j += 1;
            }
            if j - i == 3 {
                let g = [self.groups[i], self.groups[i + 1], self.groups[i + 2]];
                let shape = [g[0].len(), g[1].len(), g[2].len()] == [3, 2, 4];
                if shape && g.iter().all(|g| g.usable) && ssn_valid(bytes, &g) {
                    for group in &mut self.groups[i..j] {
                        group.taken = true;
                    }
                    self.spans.push(Span {
                        first: i,
                        last: i + 2,
                        kind: Kind::Ssn,
                    });
                }
            }
            i = j;
        }
    }

    /// Masks card windows; returns whether any was found.
    fn find_cards(&mut self, bytes: &[u8]) -> bool {
        for bucket in &mut self.windows {
            bucket.clear();
        }
        let count = self.groups.len();
        let mut digits = [0u8; 19];
        for a in 0..count {
            let mut total = 0;
            for b in a..count {
                let g = self.groups[b];
                if !g.usable || g.taken {
                    break;
                }
                total += g.len();
                if total > *CARD_DIGITS.end() {
                    break;
                }
                if total >= *CARD_DIGITS.start() {
                    let n = self.collect_digits(bytes, a, b, &mut digits);
                    if luhn_valid(&digits[..n]) {
                        self.windows[total - CARD_DIGITS.start()].push((a, b));
                    }
                }
            }
        }
        // Longest first; each bucket is already in leftmost-first order.
        let mut found = false;
        for bucket in self.windows.iter().rev() {
            for &(a, b) in bucket {
                if self.groups[a..=b].iter().any(|g| g.taken) {
                    continue;
                }
                for g in &mut self.groups[a..=b] {
                    g.taken = true;
                }
                self.spans.push(Span {
                    first: a,
                    last: b,
                    kind: Kind::Card,
                });
                found = true;
            }
        }
        found
    }

    /// Copies the digits of groups `a..=b` (at most 19 in all) into `buf`.
    fn collect_digits(&self, bytes: &[u8], a: usize, b: usize, buf: &mut [u8; 19]) -> usize {
        let mut n = 0;
        for g in &self.groups[a..=b] {
            for &d in &bytes[g.start..g.end] {
                if let Some(slot) = buf.get_mut(n) {
                    *slot = d;
                    n += 1;
                }
            }
        }
        n
    }
}

/// Area not 000, 666 or 900–999; group not 00; serial not 0000.
fn ssn_valid(bytes: &[u8], g: &[Group; 3]) -> bool {
    let area = &bytes[g[0].start..g[0].end];
    let group = &bytes[g[1].start..g[1].end];
    let serial = &bytes[g[2].start..g[2].end];
    area != b"000" && area != b"666" && area[0] != b'9' && group != b"00" && serial != b"0000"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> String {
        Scanner::default()
            .redact_text(text)
            .unwrap_or_else(|| text.to_owned())
    }

    #[test]
    fn expiry_joins_the_run_but_the_card_is_found() {
        assert_eq!(run("4111 1111 1111 1111 12/26"), "************1111 12/26");
    }

    #[test]
    fn two_cards_in_one_run() {
        assert_eq!(
            run("4111111111111111 5555555555554444"),
            "************1111 ************4444"
        );
        assert_eq!(
            run("4111-1111-1111-1111-5555-5555-5555-4444"),
            "************1111-************4444"
        );
    }

    #[test]
    fn ssn_and_card_side_by_side() {
        assert_eq!(
            run("123-45-6789 4111 1111 1111 1111"),
            "***-**-6789 ************1111"
        );
        assert_eq!(run("123-45-6789 234-56-7890"), "***-**-6789 ***-**-7890");
    }

    #[test]
    fn ssn_dash_joined_to_a_card() {
        assert_eq!(
            run("123-45-6789-4111111111111111"),
            "***-**-6789-************1111"
        );
        assert_eq!(
            run("4111111111111111-123-45-6789"),
            "************1111-***-**-6789"
        );
        assert_eq!(run("123-45-6789-1"), "123-45-6789-1");
    }

    #[test]
    fn nothing_found_allocates_nothing() {
        let mut s = Scanner::default();
        assert_eq!(s.redact_text("no digits here"), None);
        assert_eq!(s.redact_text("order 12345678 of 2026-11-24"), None);
    }
}
