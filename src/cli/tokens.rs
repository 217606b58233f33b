//! `token create NAME --scope ...`, `token list`, `token revoke NAME`:
//! Results API tokens from the command line. The token is printed once,
//! alone on stdout; only its hash is stored. Creation and revocation are
//! audited (actor `cli`).

use std::io::Write as _;
use std::process::ExitCode;

use clap::Subcommand;

use crate::audit::{Action, Actor, AuditEntry};
use crate::config::Settings;
use crate::tokens::{self, TokenInfo};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it once, alone on stdout (only its hash is kept).
    Create {
        /// A name for the token (letters, digits, - _ .; at most 64).
        name: String,
        /// `events:read` and/or `events:delete`: `--scope A B`, a comma
        /// list, or `--scope` repeated.
        #[arg(long = "scope", required = true, value_name = "SCOPE", num_args = 1..)]
        scopes: Vec<String>,
    },
    /// One JSON line per token (never the token itself).
    List,
    /// Revoke a token at once: its next request gets 401.
    Revoke {
        /// The token's name.
        name: String,
    },
}

pub async fn run(settings: &Settings, command: TokenCommand) -> anyhow::Result<ExitCode> {
    let store = super::connect(settings).await?;
    match command {
        TokenCommand::Create { name, scopes } => {
            if !tokens::valid_name(&name) {
                anyhow::bail!("token name must be 1-64 letters, digits, `-`, `_` or `.`");
            }
            let scopes = tokens::parse_scopes(&scopes).map_err(anyhow::Error::msg)?;
            if scopes.is_empty() {
                anyhow::bail!("give at least one --scope (events:read, events:delete)");
            }
            let (token, hash) = tokens::generate();
            let audit = AuditEntry::new(Actor::Cli, Action::TokenCreate, Some(name.clone()));
            if !store.create_token(&name, &hash, &scopes, &audit).await? {
                eprintln!("error: a token named `{name}` is already active (revoke it first)");
                return Ok(ExitCode::FAILURE);
            }
            println!("{}", tokens::expose(&token));
            eprintln!(
                "created token `{name}` ({}); it is shown only this once",
                tokens::scopes_to_text(&scopes)
            );
        }
        TokenCommand::List => {
            let mut out = std::io::stdout().lock();
            for token in store.list_tokens().await? {
                writeln!(out, "{}", list_line(&token))?;
            }
        }
        TokenCommand::Revoke { name } => {
            let audit = AuditEntry::new(Actor::Cli, Action::TokenRevoke, Some(name.clone()));
            if !store.revoke_token(&name, &audit).await? {
                eprintln!("error: no active token named `{name}`");
                return Ok(ExitCode::FAILURE);
            }
            println!("revoked token `{name}`");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list_line(t: &TokenInfo) -> serde_json::Value {
    let time = |micros: Option<i64>| {
        micros
            .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_micros)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    };
    serde_json::json!({
        "name": t.name,
        "scopes": t.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "created_at": time(Some(t.created_at)),
        "last_used_at": time(t.last_used_at),
        "revoked_at": time(t.revoked_at),
    })
}
