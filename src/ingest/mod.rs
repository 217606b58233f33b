//! Ingest: the one place a verified delivery becomes stored data. A body
//! whose signature `http` has verified walks, in this order: parse →
//! envelope → timestamp freshness → verdict of its pattern's schema (before
//! redaction) → subject index → redact → seal → commit ([`commit`]:
//! Postgres, else the spool). A genuine body that validation refuses is
//! kept in quarantine (CONTRACT §10) by the same commit policy.
//!
//! Callers: the webhook handler ([`Ingest::accept`]; `http` only maps a
//! [`Refusal`] to a status), `rejected replay` ([`Pipeline::prepare`], then
//! its own audited store write), and the spool drainer ([`drain`]).

pub mod commit;
pub mod drain;
mod health;
mod quarantine;

use std::sync::Arc;
use std::time::Duration;

use crate::config::secrets::HashKey;
use crate::config::Settings;
use crate::crypto::KeyRing;
use crate::delivery::{check_freshness, Delivery};
use crate::error::AppError;
use crate::event::{Envelope, InsertOutcome, NewEvent};
use crate::redact::Redactor;
use crate::spool::SpoolError;
use crate::subjects::{SubjectFields, SubjectIndexer, SubjectKey};
use crate::validation::Schemas;
pub use commit::{Committer, Landed, NotKept};
pub use health::DatabaseHealth;

/// What turns a body into a sealed event: the subject index, the schemas,
/// the redactor and the key ring.
pub struct Pipeline {
    /// Indexes each delivery's data subjects (before redaction).
    pub subjects: SubjectIndexer,
    /// Each pattern's JSON Schema, for the verdict stored beside the event.
    pub schemas: Schemas,
    pub redactor: Redactor,
    /// Shared with the readers of stored events (the Results API).
    pub keys: Arc<KeyRing>,
}

impl Pipeline {
    /// The pipeline the settings and secrets describe (the server and
    /// `rejected replay` build it alike).
    pub fn from_settings(
        settings: &Settings,
        hash_key: &HashKey,
        keys: Arc<KeyRing>,
    ) -> anyhow::Result<Self> {
        let hash_key = hash_key.expose();
        Ok(Self {
            subjects: SubjectIndexer::new(
                SubjectFields::new(&settings.subjects, &settings.redact),
                SubjectKey::new(hash_key),
            ),
            schemas: Schemas::load(&settings.validation.schemas_dir)?,
            redactor: Redactor::new(&settings.redact, hash_key),
            keys,
        })
    }

    /// Parses, checks (freshness against `max_age` unless `None`), judges,
    /// indexes, redacts and seals `body`.
    pub fn prepare(&self, body: &[u8], max_age: Option<Duration>) -> Result<Prepared, Refusal> {
        let delivery = Delivery::parse(body).map_err(|e| Refusal::invalid(e, None))?;
        let envelope = delivery.envelope.clone();
        if let Some(age) = max_age {
            check_freshness(&delivery.body, age, chrono::Utc::now())
                .map_err(|e| Refusal::invalid(e, Some(envelope.clone())))?;
        }
        // Before redaction: the schema describes the data as extracted.
        let verdict = delivery.verdict(&self.schemas);
        let mut event = delivery
            .seal(&self.subjects, &self.redactor, &self.keys)
            .map_err(|e| {
                tracing::error!(error = %e, job_id = %envelope.job_id, "the payload could not be sealed");
                metrics::counter!(crate::metrics::SEAL_FAILURES).increment(1);
                Refusal {
                    reason: Reason::Unsealable,
                    envelope: Some(Box::new(envelope.clone())),
                }
            })?;
        let label = crate::validation::outcome(&verdict);
        event.verdict = verdict;
        Ok(Prepared { event, label })
    }
}

/// A sealed event ready to commit, and its verdict's metric label.
pub struct Prepared {
    pub event: NewEvent,
    pub label: &'static str,
}

/// The write path of the server: the pipeline and the commit policy.
pub struct Ingest {
    pub pipeline: Pipeline,
    pub commit: Committer,
    /// `webhook.max_timestamp_age` (zero = off).
    pub max_timestamp_age: Duration,
}

/// What a delivery's request knows that ingest records.
pub struct Meta<'a> {
    /// Kept with a quarantine row, so an operator can find its request.
    pub request_id: &'a str,
}

/// A delivery stored (or found stored already).
#[derive(Debug)]
pub struct Accepted {
    pub outcome: InsertOutcome,
    pub envelope: Envelope,
}

/// A delivery not stored, with its envelope when it was read that far
/// (boxed: a refusal travels by value through every stage).
#[derive(Debug)]
pub struct Refusal {
    pub reason: Reason,
    pub envelope: Option<Box<Envelope>>,
}

/// Why a delivery was not stored.
#[derive(Debug)]
pub enum Reason {
    /// It is not a delivery that may be stored (a 4xx of CONTRACT §2); a
    /// genuine one is kept in quarantine.
    Invalid(AppError),
    /// The cipher refused to seal it.
    Unsealable,
    /// Neither the database nor the spool could commit it.
    Unavailable,
}

impl Refusal {
    fn invalid(error: AppError, envelope: Option<Envelope>) -> Self {
        Self {
            reason: Reason::Invalid(error),
            envelope: envelope.map(Box::new),
        }
    }
}

impl Ingest {
    /// Stores a delivery whose signature was verified, or says why not.
    /// The body is taken by value and dropped once sealed: the commit may
    /// wait up to its deadline, and the raw body (unredacted personal data)
    /// must not wait in memory with it.
    pub async fn accept(&self, body: bytes::Bytes, meta: &Meta<'_>) -> Result<Accepted, Refusal> {
        let age = Some(self.max_timestamp_age);
        let Prepared { event, label } = match self.pipeline.prepare(&body, age) {
            Ok(prepared) => prepared,
            Err(refusal) => {
                if let Reason::Invalid(error) = &refusal.reason {
                    self.quarantine(&body, error, meta).await;
                }
                return Err(refusal);
            }
        };
        drop(body);
        let envelope = event.envelope.clone();
        let landed = self.commit.event(event).await.map_err(|e| {
            if matches!(&e, NotKept::Spool(s) if !matches!(s, SpoolError::Full)) {
                tracing::error!(error = %e, "a delivery could not be spooled");
            }
            Refusal {
                reason: Reason::Unavailable,
                envelope: Some(Box::new(envelope.clone())),
            }
        })?;
        let outcome = match landed {
            Landed::Primary(o) | Landed::Spooled(o) => o,
        };
        metrics::counter!(crate::metrics::VALIDATION, "outcome" => label).increment(1);
        Ok(Accepted { outcome, envelope })
    }
}
