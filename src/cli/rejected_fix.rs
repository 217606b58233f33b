//! The way out for a quarantined delivery that can never pass as received
//! (an `invalid_json` body fails every replay): `rejected discard ID`, and
//! the corrected body of `rejected replay ID --body FILE`. Both audited.

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::audit::{Action, Actor, AuditEntry};
use crate::config::Settings;
use crate::store::Store;

/// Deletes quarantined delivery `id` unreplayed, with its audit record.
pub async fn discard(store: &Store, id: i64) -> anyhow::Result<ExitCode> {
    let audit = AuditEntry::new(Actor::Cli, Action::RejectedDiscard, Some(id.to_string()));
    if store.discard_quarantined(id, &audit).await? {
        println!("discarded");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("no quarantined delivery {id}");
        Ok(ExitCode::FAILURE)
    }
}

/// An operator's corrected body: the file, or stdin for `-`.
pub fn read_body(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut body = Vec::new();
        std::io::stdin()
            .read_to_end(&mut body)
            .context("cannot read the body from stdin")?;
        return Ok(body);
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A supplied body is held to `server.max_body_bytes`, as a delivery is.
pub fn within_limit(
    settings: &Settings,
    supplied: Option<&Path>,
    body: &[u8],
) -> Result<(), String> {
    let limit = settings.server.max_body_bytes;
    match supplied {
        Some(_) if body.len() > limit => Err(format!(
            "payload_too_large: the body is {} bytes; server.max_body_bytes is {limit}",
            body.len()
        )),
        _ => Ok(()),
    }
}
