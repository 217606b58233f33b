//! `rejected list | show ID | replay ID [--ignore-timestamp] [--body FILE]
//! | discard ID`: the quarantine runbook — see what validation refused,
//! read it, fix the cause, and run it through validation and storage again
//! (or, when it can never pass, store a corrected body or discard it).

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::json;

use crate::audit::{Action, Actor, AuditEntry};
use crate::config::secrets::{self, ProcessEnv};
use crate::config::Settings;
use crate::crypto::KeyRing;
use crate::error::AppError;
use crate::event::InsertOutcome;
use crate::ingest::{Pipeline, Reason, Refusal};
use crate::store::quarantine::Quarantined;
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum RejectedCommand {
    /// One JSON line per quarantined delivery: id, received_at, reason, request_id, bytes.
    List,
    /// Print a quarantined body (redacted, decrypted).
    Show {
        /// The id `rejected list` printed.
        id: i64,
    },
    /// Run a quarantined delivery through validation and storage again;
    /// removed from quarantine once stored.
    Replay {
        /// The id `rejected list` printed.
        id: i64,
        /// Accept a signed timestamp outside `webhook.max_timestamp_age`.
        #[arg(long)]
        ignore_timestamp: bool,
        /// Replay this corrected body (`-`: stdin) instead of the one
        /// received; the event is marked operator-supplied.
        #[arg(long, value_name = "FILE")]
        body: Option<std::path::PathBuf>,
    },
    /// Delete a quarantined delivery without replaying it (audited).
    Discard {
        /// The id `rejected list` printed.
        id: i64,
    },
}

pub async fn run(
    command: RejectedCommand,
    settings: &Settings,
    store: &Store,
) -> anyhow::Result<ExitCode> {
    match command {
        RejectedCommand::List => {
            let mut out = std::io::stdout().lock();
            for entry in store.quarantined().await? {
                let line = json!({
                    "id": entry.id,
                    "received_at": entry.received_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    "reason": entry.reason,
                    "request_id": entry.request_id,
                    "bytes": entry.bytes,
                });
                writeln!(out, "{line}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        RejectedCommand::Show { id } => {
            let keys = secrets::load_key_ring(&ProcessEnv)?;
            let Some(row) = store.quarantined_one(id).await? else {
                eprintln!("no quarantined delivery {id}");
                return Ok(ExitCode::FAILURE);
            };
            let body = open(&keys, &row)?;
            store
                .append_audit(
                    &AuditEntry::new(Actor::Cli, Action::RejectedRead, Some(id.to_string()))
                        .count(1),
                )
                .await?;
            let mut out = std::io::stdout().lock();
            out.write_all(&body)?;
            writeln!(out)?;
            Ok(ExitCode::SUCCESS)
        }
        RejectedCommand::Replay {
            id,
            ignore_timestamp,
            body,
        } => replay(settings, store, id, ignore_timestamp, body.as_deref()).await,
        RejectedCommand::Discard { id } => super::rejected_fix::discard(store, id).await,
    }
}

fn open(keys: &KeyRing, row: &Quarantined) -> anyhow::Result<Vec<u8>> {
    keys.open_quarantined(&row.seal_id, &row.key_id, &row.nonce, &row.ciphertext)
        .with_context(|| format!("quarantined delivery {} cannot be decrypted", row.entry.id))
}

/// Validation and storage as the webhook runs them; the row leaves
/// quarantine only once its event is stored.
async fn replay(
    settings: &Settings,
    store: &Store,
    id: i64,
    ignore_timestamp: bool,
    body_file: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let secrets = secrets::Secrets::load(&ProcessEnv)?;
    // Its subjects first, then the row: an erasure between the two takes
    // the row (nothing to replay); one after both finds the event barred
    // by these subjects when it is inserted. Read the other way round, an
    // erasure between would leave a row whose subjects are gone.
    let arrival_subjects = store.quarantined_subjects(id).await?;
    let Some(row) = store.quarantined_one(id).await? else {
        eprintln!("no quarantined delivery {id}");
        return Ok(ExitCode::FAILURE);
    };
    let (body, action) = match body_file {
        Some(path) => (
            super::rejected_fix::read_body(path)?,
            Action::RejectedReplayOperatorBody,
        ),
        None => (open(&secrets.keys, &row)?, Action::RejectedReplay),
    };
    // Decrypting it was a read of a quarantined body: a replay that still
    // fails is audited too, with nothing stored (count 0).
    let audit = |count| AuditEntry::new(Actor::Cli, action, Some(id.to_string())).count(count);
    let still_refused = |why: String| async move {
        store.append_audit(&audit(0)).await?;
        println!("{why}");
        eprintln!("quarantined delivery {id} still fails; kept (fix the cause and replay again)");
        Ok(ExitCode::FAILURE)
    };
    if let Err(why) = super::rejected_fix::within_limit(settings, body_file, &body) {
        return still_refused(why).await;
    }
    // Validated again, with today's schemas, before redaction; a supplied
    // body is redacted here as a delivery is, a quarantined one was
    // redacted before it was kept and again changes nothing (hashes need
    // the same key).
    let keys = std::sync::Arc::new(secrets.keys);
    let pipeline = Pipeline::from_settings(settings, &secrets.hash_key, keys)?;
    let max_age = (!ignore_timestamp).then_some(settings.webhook.max_timestamp_age);
    let mut event = match pipeline.prepare(&body, max_age) {
        Ok(prepared) => prepared.event,
        Err(Refusal {
            reason: Reason::Invalid(e @ AppError::StaleTimestamp),
            ..
        }) => {
            return still_refused(format!(
                "{}: {e} (replay with --ignore-timestamp to accept it)",
                e.code()
            ))
            .await
        }
        Err(Refusal {
            reason: Reason::Invalid(e),
            ..
        }) => return still_refused(format!("{}: {e}", e.code())).await,
        Err(_) => anyhow::bail!("the payload could not be encrypted"),
    };
    event.received_at = row.entry.received_at;
    // Indexed at arrival from the unredacted body; `hash` fields are hashes
    // now, so indexing the redacted body again finds fewer of them. A
    // corrected body keeps them too: it is the same delivery's subject.
    for subject in arrival_subjects {
        if !event.subjects.contains(&subject) {
            event.subjects.push(subject);
        }
    }
    let outcome = if body_file.is_some() {
        store.store_operator_replay(id, &event, &audit(1)).await?
    } else {
        let outcome = store.insert(&event).await?;
        store.release_quarantined(id).await?;
        store.append_audit(&audit(1)).await?;
        outcome
    };
    println!(
        "{}",
        match outcome {
            InsertOutcome::Inserted => "received",
            InsertOutcome::Duplicate => "duplicate",
        }
    );
    Ok(ExitCode::SUCCESS)
}
