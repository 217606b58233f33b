//! The command line: `imggo-receiver [--config PATH] <command>`.

mod audit;
mod commands;
mod erasure;
mod export;
mod forward;
mod purge;
mod rejected;
mod rejected_fix;
mod tokens;
mod validate;

use crate::store::partitions::Layout;
use std::collections::HashSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::secrets::{self, ProcessEnv};
use crate::config::Settings;
use crate::startup::database_context;
use crate::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "imggo-receiver",
    version,
    about = "Receives, verifies, redacts, encrypts and stores ImgGo webhook deliveries"
)]
pub struct Cli {
    /// Extra TOML settings file layered over the defaults.
    #[arg(long, global = true, env = "IMGGO_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (applies migrations first) until SIGTERM/SIGINT.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// One retention pass now; prints how many rows were (or would be) deleted.
    Purge {
        /// Count what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-encrypt every row not under the first key of IMGGO_ENCRYPTION_KEYS.
    Reencrypt,
    /// Print a new random 32-byte key, base64.
    Keygen,
    /// Print `sha256=<hex>` for FILE (or stdin) with the first webhook secret.
    Sign {
        /// File to sign; stdin when absent.
        file: Option<PathBuf>,
    },
    /// Print each stored event of a job as one JSON line (payload decrypted).
    Show {
        /// The job whose events to print.
        job_id: String,
    },
    /// Validate everything and print the effective settings, secrets hidden.
    CheckConfig,
    /// Exit 0 when /healthz on the configured bind answers 200.
    Healthcheck,
    /// Write ./.env with fresh secrets (mode 0600); never overwrites.
    Init,
    /// Signed deliveries refused by validation, kept in quarantine.
    #[command(subcommand)]
    Rejected(rejected::RejectedCommand),
    /// Results API tokens: create, list, revoke.
    Token {
        #[command(subcommand)]
        command: tokens::TokenCommand,
    },
    /// Print events as JSON lines in feed order (the API's event shape).
    Export {
        /// Start after this cursor (an event's `cursor`); default: the oldest.
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
        /// Print at most N events.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Erasure: delete every event indexed under a data subject's value
    /// (`-` reads it from stdin).
    Forget {
        /// The value (e.g. an email address), or `-` for stdin.
        value: String,
    },
    /// Check a sample of extracted data against a pattern's JSON Schema
    /// (exit 0 valid, 1 invalid, 2 no schema for the pattern).
    Validate {
        /// The pattern whose schema (`<ID>.json` in validation.schemas_dir) applies.
        #[arg(long, value_name = "ID")]
        pattern: String,
        /// The extracted data (a manifest), or a whole delivery body.
        file: PathBuf,
    },
    /// Forwarding to destinations: status, dead letters, resume, reset.
    #[command(subcommand)]
    Forward(forward::ForwardCommand),
    /// Print audit records as JSON lines, oldest first.
    Audit {
        /// Only records from the last DURATION (e.g. 24h, 7d).
        #[arg(long, value_name = "DURATION", value_parser = crate::config::duration::parse)]
        since: Option<std::time::Duration>,
    },
}

/// Loads `./.env` (this directory only) into the environment; variables
/// already set win, and the names that came from the file are recorded so
/// that a real `<NAME>_FILE` also wins over a `.env` `<NAME>` (see
/// [`secrets::read`]). Runs before the command line is parsed, so `.env` may
/// also carry `IMGGO_CONFIG`. The whole file is parsed before anything is
/// set, and a malformed one stops everything: half-loaded secrets are worse
/// than none. The message never quotes the file, whose lines are secrets.
pub fn load_dotenv() -> Result<(), String> {
    let path = std::path::Path::new(".env");
    let lines = match dotenvy::from_path_iter(path) {
        Ok(lines) => lines,
        Err(e) if e.not_found() => return Ok(()),
        Err(e) => return Err(dotenv_error(path, e)),
    };
    let pairs = lines
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| dotenv_error(path, e))?;
    let mut from_file = HashSet::new();
    for (name, value) in pairs {
        if std::env::var_os(&name).is_none() {
            std::env::set_var(&name, value);
            from_file.insert(name);
        }
    }
    secrets::record_dotenv_names(from_file);
    Ok(())
}

fn dotenv_error(path: &std::path::Path, e: dotenvy::Error) -> String {
    match e {
        dotenvy::Error::LineParse(line, _) => {
            let number = std::fs::read_to_string(path)
                .ok()
                .and_then(|text| {
                    text.lines()
                        .position(|l| !line.trim().is_empty() && l.contains(line.trim()))
                })
                .map_or_else(String::new, |i| format!(" line {}", i + 1));
            format!(
                "./.env{number} cannot be parsed (write NAME=value; quote values containing spaces, # or $ in single quotes)"
            )
        }
        dotenvy::Error::Io(e) => format!("./.env cannot be read: {e}"),
        _ => "./.env cannot be loaded".to_owned(),
    }
}

/// Runs the parsed command line; the binary's `main` is just this.
pub fn run(cli: Cli) -> ExitCode {
    let command = cli.command.unwrap_or(Command::Serve);
    match commands::dispatch(command, cli.config.as_deref()) {
        Ok(code) => code,
        // The reader went away (`| head`): as other Unix tools, stop
        // quietly; what was read is already audited.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: a closed stderr must not turn an error into a panic.
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// One line on stderr naming the store a command works on: a second
/// terminal without the server's `DATABASE_URL` reads another store, and
/// must say so rather than answer "nothing there" from the wrong one.
fn say_which_store(url: &secrecy::SecretString) {
    let _ = writeln!(
        std::io::stderr(),
        "store: {}",
        crate::store::location::describe(url)
    );
}

/// The store as `migrate` needs it: an embedded database is created when
/// missing.
async fn connect_or_create(settings: &Settings) -> anyhow::Result<Store> {
    let url = secrets::database_url(&ProcessEnv)?;
    say_which_store(&url);
    Ok(Store::connect(&url, &settings.database)
        .await
        .with_context(|| database_context(&url))?
        .with_layout(Layout::of(settings)))
}

/// The store as commands that read it need it: it must exist and carry the
/// schema. Nothing is created: `show` in the wrong directory must not leave
/// an empty `./data/imggo.db` behind.
async fn connect(settings: &Settings) -> anyhow::Result<Store> {
    let url = secrets::database_url(&ProcessEnv)?;
    say_which_store(&url);
    Ok(Store::open_migrated(&url, &settings.database)
        .await
        .with_context(|| database_context(&url))?
        .with_layout(Layout::of(settings)))
}
