//! `purge [--dry-run]`: the server's retention pass, run now.

use std::io::Write as _;
use std::process::ExitCode;

use crate::config::{duration, Settings};
use crate::retention;

/// The server's retention pass, now: one line per kind of row.
pub async fn run(settings: &Settings, dry_run: bool) -> anyhow::Result<ExitCode> {
    let store = super::connect(settings).await?;
    let pass = retention::pass(&store, &settings.retention, settings.audit.max_age, dry_run);
    let (verb, counts, suffix) = match pass.await? {
        retention::Pass::Deleted(counts) => ("deleted", counts, ""),
        retention::Pass::WouldDelete(counts) => ("would delete", counts, " (dry run)"),
        retention::Pass::Skipped => {
            println!("skipped: another replica is purging right now");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let retention = duration::format(settings.retention.max_age);
    let audit = duration::format(settings.audit.max_age);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{verb} {} event(s) older than {retention}{suffix}",
        counts.events
    )?;
    writeln!(
        out,
        "{verb} {} quarantined delivery(ies) older than {retention}{suffix}",
        counts.quarantine
    )?;
    writeln!(
        out,
        "{verb} {} audit record(s) older than {audit}{suffix}",
        counts.audit
    )?;
    Ok(ExitCode::SUCCESS)
}
