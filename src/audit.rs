//! The audit trail (CONTRACT §9): one record per API request that returns
//! or deletes event data, per token change, and per `show`, `export` and
//! `forget` from the command line. Records are appended, never updated,
//! and deleted only by `audit.max_age` (the retention task). A delete and
//! its record are written in one transaction (`store/audit.rs`), so a crash
//! loses both or neither.
//!
//! A record never holds an erased value: an erasure's target is the
//! subject's keyed hash, in hex.

use std::fmt::Write as _;
use std::net::IpAddr;

use chrono::{DateTime, Utc};

/// Who did it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// A Results API token, by name.
    Token(String),
    /// The command line (whoever holds the master keys).
    Cli,
}

impl Actor {
    pub fn label(&self) -> String {
        match self {
            Self::Token(name) => format!("token:{name}"),
            Self::Cli => "cli".to_owned(),
        }
    }
}

/// What was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Events read in feed order (`GET /v1/events`, `export`).
    FeedRead,
    /// A job's events read (`GET /v1/jobs/{id}`, `show`).
    JobRead,
    /// A job's events deleted (`DELETE /v1/jobs/{id}`).
    JobDelete,
    /// Events deleted by data subject (`POST /v1/erasure`, `forget`).
    Erasure,
    TokenCreate,
    TokenRevoke,
    /// A quarantined body read (`rejected show`).
    RejectedRead,
    /// A quarantined delivery replayed (`rejected replay`).
    RejectedReplay,
    /// A quarantined delivery replayed with a body an operator supplied in
    /// place of the signed one (`rejected replay --body`).
    RejectedReplayOperatorBody,
    /// A quarantined delivery deleted unreplayed (`rejected discard`).
    RejectedDiscard,
    /// A destination's position moved by hand (`forward reset`).
    ForwardReset,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FeedRead => "feed.read",
            Self::JobRead => "job.read",
            Self::JobDelete => "job.delete",
            Self::Erasure => "erasure",
            Self::TokenCreate => "token.create",
            Self::TokenRevoke => "token.revoke",
            Self::RejectedRead => "rejected.read",
            Self::RejectedReplay => "rejected.replay",
            Self::RejectedReplayOperatorBody => "rejected.replay_operator_body",
            Self::RejectedDiscard => "rejected.discard",
            Self::ForwardReset => "forward.reset",
        }
    }
}

/// A record to append; its `count` is filled in by the operation it records
/// when that is a delete (inside the same transaction).
#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub actor: Actor,
    pub action: Action,
    /// A job id, a token name, or an erased subject's hash in hex.
    pub target: Option<String>,
    pub count: i64,
    pub client_ip: Option<IpAddr>,
    pub request_id: Option<String>,
}

impl AuditEntry {
    pub fn new(actor: Actor, action: Action, target: Option<String>) -> Self {
        Self {
            actor,
            action,
            target,
            count: 0,
            client_ip: None,
            request_id: None,
        }
    }

    pub fn count(mut self, count: u64) -> Self {
        self.count = i64::try_from(count).unwrap_or(i64::MAX);
        self
    }
}

/// A stored record.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRecord {
    pub id: i64,
    /// Unix microseconds.
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub count: i64,
    pub client_ip: Option<String>,
    pub request_id: Option<String>,
}

impl AuditRecord {
    /// `{"at","actor","action","target","count","client_ip","request_id"}`.
    pub fn to_json_line(&self) -> String {
        let at = DateTime::<Utc>::from_timestamp_micros(self.at)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut out = String::with_capacity(160);
        out.push_str("{\"at\":");
        json_str(&mut out, Some(&at));
        out.push_str(",\"actor\":");
        json_str(&mut out, Some(&self.actor));
        out.push_str(",\"action\":");
        json_str(&mut out, Some(&self.action));
        out.push_str(",\"target\":");
        json_str(&mut out, self.target.as_deref());
        let _ = write!(out, ",\"count\":{}", self.count);
        out.push_str(",\"client_ip\":");
        json_str(&mut out, self.client_ip.as_deref());
        out.push_str(",\"request_id\":");
        json_str(&mut out, self.request_id.as_deref());
        out.push('}');
        out
    }
}

fn json_str(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) => {
            out.push('"');
            crate::json::escape_str(v, |piece| out.push_str(piece));
            out.push('"');
        }
        None => out.push_str("null"),
    }
}

/// Now, as stored (Unix microseconds).
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_line_has_the_contract_fields() {
        let r = AuditRecord {
            id: 1,
            at: 1_764_547_200_000_000,
            actor: "token:etl".into(),
            action: "erasure".into(),
            target: Some("ab\"c".into()),
            count: 3,
            client_ip: None,
            request_id: Some("r-1".into()),
        };
        let v: serde_json::Value = serde_json::from_str(&r.to_json_line()).unwrap();
        assert_eq!(v["at"], "2025-12-01T00:00:00.000000Z");
        assert_eq!(v["actor"], "token:etl");
        assert_eq!(v["target"], "ab\"c");
        assert_eq!(v["count"], 3);
        assert!(v["client_ip"].is_null());
        assert_eq!(v.as_object().unwrap().len(), 7);
    }
}
