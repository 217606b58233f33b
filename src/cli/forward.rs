//! `forward status`, `forward dead list [NAME]`, `forward dead replay NAME
//! [ID]`, `forward resume NAME`, `forward reset NAME --to
//! oldest|latest|CURSOR` (CONTRACT §11). They work on the database while
//! `serve` runs: a replay and a resume are picked up by the replica that
//! forwards the destination; a reset is audited.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;

use crate::audit::{Action, Actor, AuditEntry};
use crate::config::Settings;
use crate::event::wire;
use crate::feed::{self, CursorForm, Position};

#[derive(Debug, Subcommand)]
pub enum ForwardCommand {
    /// One JSON line per destination: name, kind, lag_events, lag_seconds,
    /// last_error, paused.
    Status,
    /// Messages a destination refused for good.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// Unpause a destination (paused by an HTTP 410).
    Resume {
        /// The destination (`[forward.NAME]`).
        name: String,
    },
    /// Move a destination's position (audited): `oldest` sends every
    /// retained event again, `latest` skips to now, or an event's cursor.
    Reset {
        /// The destination (`[forward.NAME]`).
        name: String,
        #[arg(long, value_name = "oldest|latest|CURSOR")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// One JSON line per dead letter `{"destination","id","reason","dead_at"}`.
    List {
        /// Only this destination's.
        name: Option<String>,
    },
    /// Send a destination's dead letters (or the one with this id) again.
    Replay {
        name: String,
        /// The message id (an event's `id`).
        id: Option<String>,
    },
}

pub async fn run(settings: &Settings, command: ForwardCommand) -> anyhow::Result<ExitCode> {
    let known = |name: &str| -> anyhow::Result<()> {
        if !settings.forward.contains_key(name) {
            bail!("no destination [forward.{name}] is configured");
        }
        Ok(())
    };
    let store = super::connect(settings).await?;
    let mut out = std::io::stdout().lock();
    match command {
        ForwardCommand::Status => {
            for (name, d) in &settings.forward {
                let state = store.forward_state(name).await?.unwrap_or_default();
                let (lag_events, oldest) = store.forward_lag(state.position).await?;
                let lag_seconds = oldest.map_or(0.0, |t| {
                    (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
                });
                let mut line = Vec::new();
                line.extend_from_slice(b"{\"name\":");
                wire::string(&mut line, name);
                line.extend_from_slice(b",\"kind\":");
                wire::string(&mut line, d.kind.as_str());
                write!(
                    line,
                    ",\"lag_events\":{lag_events},\"lag_seconds\":{lag_seconds:.3},\"last_error\":"
                )?;
                match &state.last_error {
                    Some(e) => wire::string(&mut line, e),
                    None => line.extend_from_slice(b"null"),
                }
                write!(line, ",\"paused\":{}}}", state.paused.is_some())?;
                line.push(b'\n');
                out.write_all(&line)?;
            }
        }
        ForwardCommand::Dead(DeadCommand::List { name }) => {
            if let Some(name) = &name {
                known(name)?;
            }
            for (destination, dead) in store.forward_dead(name.as_deref(), false).await? {
                let at = chrono::DateTime::from_timestamp_micros(dead.dead_at)
                    .unwrap_or_default()
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                let mut line = Vec::new();
                line.extend_from_slice(b"{\"destination\":");
                wire::string(&mut line, &destination);
                line.extend_from_slice(b",\"id\":");
                wire::string(&mut line, &dead.message_id);
                line.extend_from_slice(b",\"reason\":");
                wire::string(&mut line, &dead.reason);
                line.extend_from_slice(b",\"dead_at\":");
                wire::string(&mut line, &at);
                line.extend_from_slice(b"}\n");
                out.write_all(&line)?;
            }
        }
        ForwardCommand::Dead(DeadCommand::Replay { name, id }) => {
            known(&name)?;
            let n = store.forward_request_replay(&name, id.as_deref()).await?;
            if n == 0 {
                writeln!(out, "no dead letter to replay")?;
                return Ok(ExitCode::FAILURE);
            }
            writeln!(
                out,
                "{n} dead letter(s) queued: sent again once `{name}` has caught up"
            )?;
        }
        ForwardCommand::Resume { name } => {
            known(&name)?;
            if store.forward_resume(&name).await? {
                writeln!(out, "resumed {name}")?;
            } else {
                writeln!(out, "{name} was not paused")?;
            }
        }
        ForwardCommand::Reset { name, to } => {
            known(&name)?;
            let form = CursorForm::of(&store);
            let position = match to.as_str() {
                "oldest" => Position::default(),
                "latest" => store.forward_latest().await?,
                cursor => match feed::decode(form, cursor) {
                    Some(p) => p,
                    None => bail!("--to: `oldest`, `latest`, or a cursor this store issued"),
                },
            };
            let audit = AuditEntry::new(
                Actor::Cli,
                Action::ForwardReset,
                Some(format!("{name} to {to}")),
            );
            store.forward_reset(&name, position, &audit).await?;
            writeln!(out, "{name} reset to {to}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
