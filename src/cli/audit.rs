//! `audit [--since DURATION]`: the audit trail as JSON lines, oldest first.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Settings;

pub async fn run(settings: &Settings, since: Option<Duration>) -> anyhow::Result<ExitCode> {
    let store = super::connect(settings).await?;
    let from = match since {
        Some(age) => {
            let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
            chrono::Utc::now()
                .checked_sub_signed(age)
                .map_or(i64::MIN, |t| t.timestamp_micros())
        }
        None => i64::MIN,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for record in store.audit_since(from).await? {
        writeln!(out, "{}", record.to_json_line())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
