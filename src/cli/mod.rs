//! The command line: `imggo-receiver [--config PATH] <command>`.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
}

/// Runs the parsed command line; the binary's `main` is just this.
pub fn run(cli: Cli) -> ExitCode {
    // Every command reads ./.env when present; real environment variables win.
    let dotenv = dotenvy::dotenv();
    let command = cli.command.unwrap_or(Command::Serve);
    let result = commands::dispatch(command, cli.config.as_deref());
    if let Err(e) = &dotenv {
        if !e.not_found() {
            eprintln!("warning: ./.env could not be read: {e}");
        }
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
