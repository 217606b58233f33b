//! What each command does. Output meant for scripts goes to stdout; logs and
//! errors go to stderr.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use tokio_util::sync::CancellationToken;

use super::{connect, connect_or_create, Command};
use crate::audit::{Action, Actor, AuditEntry};
use crate::config::secrets::{self, ProcessEnv, Secrets, WebhookSecrets};
use crate::config::Settings;
use crate::crypto;
use crate::event::wire::{self, Unreadable};
use crate::security::SignatureVerifier;
use crate::startup::{cancel_on_signal, Application};
use crate::store::Store;

pub fn dispatch(command: Command, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    match command {
        Command::Keygen => keygen(),
        Command::Init => init(Path::new(".env")),
        Command::Sign { file } => sign(file.as_deref()),
        Command::Validate { pattern, file } => {
            super::validate::run(&Settings::load(config)?, &pattern, &file)
        }
        command => {
            let settings = Settings::load(config)?;
            let _log_guard = crate::telemetry::init(settings.log.format);
            runtime()?.block_on(async_command(command, settings))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn async_command(command: Command, settings: Settings) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            let store = connect_or_create(&settings).await?;
            store.migrate().await.context("cannot apply migrations")?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { job_id } => show(settings, &job_id).await,
        Command::Purge { dry_run } => super::purge::run(&settings, dry_run).await,
        Command::Reencrypt => reencrypt(&settings).await,
        Command::CheckConfig => check_config(&settings).await,
        Command::Healthcheck => healthcheck(&settings).await,
        Command::Rejected(command) => {
            super::rejected::run(command, &settings, &connect(&settings).await?).await
        }
        Command::Token { command } => super::tokens::run(&settings, command).await,
        Command::Export { after, limit } => super::export::run(&settings, after, limit).await,
        Command::Forget { value } => super::erasure::run(&settings, value).await,
        Command::Forward(command) => super::forward::run(&settings, command).await,
        Command::Audit { since } => super::audit::run(&settings, since).await,
        Command::Keygen | Command::Init | Command::Sign { .. } | Command::Validate { .. } => {
            unreachable!("handled before")
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<ExitCode> {
    let secrets = Secrets::load(&ProcessEnv)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let app = Application::build(settings, secrets, None, shutdown).await?;
    app.run().await?;
    Ok(ExitCode::SUCCESS)
}

async fn reencrypt(settings: &Settings) -> anyhow::Result<ExitCode> {
    let keys = secrets::load_key_ring(&ProcessEnv)?;
    let store = connect(settings).await?;
    let spool = local_spool(settings, &store);
    let report = crate::reencrypt::reencrypt(&store, &keys, spool).await?;
    println!(
        "re-encrypted {} event(s), {} quarantined delivery(ies), {} spooled row(s) under key `{}`",
        report.events,
        report.quarantine,
        report.spool,
        keys.current()
    );
    if report.skipped.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for row in &report.skipped {
        eprintln!(
            "skipped row {} ({}, key `{}`): {}",
            row.id, row.kind, row.key_id, row.reason
        );
    }
    eprintln!(
        "{} row(s) left under their old key; do not remove it from the ring",
        report.skipped.len()
    );
    Ok(ExitCode::FAILURE)
}

/// This replica's spool file, when the store is Postgres and
/// `spool.path` is set (the spool backs Postgres only).
fn local_spool<'a>(settings: &'a Settings, store: &Store) -> Option<&'a Path> {
    match store {
        Store::Postgres(_) if !settings.spool.path.is_empty() => {
            Some(Path::new(&settings.spool.path))
        }
        _ => None,
    }
}

fn keygen() -> anyhow::Result<ExitCode> {
    println!(
        "{}",
        base64::engine::general_purpose::STANDARD.encode(crypto::generate_key())
    );
    Ok(ExitCode::SUCCESS)
}

fn sign(file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let secrets = WebhookSecrets::load(&ProcessEnv)?;
    let body = match file {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
            buf
        }
    };
    println!("{}", SignatureVerifier::new(&secrets).sign(&body));
    Ok(ExitCode::SUCCESS)
}

async fn show(settings: Settings, job_id: &str) -> anyhow::Result<ExitCode> {
    let keys = secrets::load_key_ring(&ProcessEnv)?;
    let store = connect(&settings).await?;
    let rows = store.events_for_job(job_id).await?;
    if rows.is_empty() {
        eprintln!("no stored event for job {job_id}");
        return Ok(ExitCode::FAILURE);
    }
    // Every line is made (decrypted) and audited before the first is
    // written: a reader that stops early has still read them.
    let mut lines = Vec::with_capacity(rows.len());
    let mut failed = 0;
    let total = rows.len();
    for row in rows {
        // The payload goes out as the text that was stored (the wire
        // shape never passes it through `serde_json::Value`).
        let payload = match wire::open(&keys, &row) {
            Ok(p) => p,
            Err(Unreadable::Sealed(e)) => {
                eprintln!("error: row {} ({} {}): {e}", row.id, row.job_id, row.event);
                failed += 1;
                continue;
            }
            Err(e @ Unreadable::NotJson) => bail!("row {} {e}", row.id),
        };
        let mut line = Vec::with_capacity(payload.len() + 256);
        wire::write_line(&mut line, &row, None, &payload);
        line.push(b'\n');
        lines.push(line);
    }
    let shown = (total - failed) as u64;
    if shown > 0 {
        let entry = AuditEntry::new(Actor::Cli, Action::JobRead, Some(job_id.to_owned()));
        store.append_audit(&entry.count(shown)).await?;
    }
    let mut out = std::io::stdout().lock();
    for line in &lines {
        out.write_all(line)?;
    }
    if failed > 0 {
        bail!("{failed} event(s) could not be decrypted with IMGGO_ENCRYPTION_KEYS");
    }
    Ok(ExitCode::SUCCESS)
}

async fn check_config(settings: &Settings) -> anyhow::Result<ExitCode> {
    let secrets = Secrets::load(&ProcessEnv)?;
    let effective = toml::to_string_pretty(settings).context("cannot render the settings")?;
    let ids: Vec<&str> = secrets.keys.ids().map(|k| k.as_str()).collect();
    println!(
        "# imggo-receiver {}: effective settings (defaults, config file, IMGGO__* overrides)",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "# store: {}\n",
        secrets::database_label(&secrets.database_url)
    );
    println!("{effective}");
    let schemas = crate::validation::Schemas::load(&settings.validation.schemas_dir)?;
    if !settings.validation.schemas_dir.is_empty() {
        println!(
            "# Validation: {} pattern schema(s) loaded: {}\n",
            schemas.patterns().len(),
            schemas.patterns().join(", ")
        );
    }
    println!("# Secrets (from the environment, .env or *_FILE)");
    println!("[secrets]");
    println!(
        "{} = \"<redacted>\"  # {} secret(s)",
        secrets::WEBHOOK_SECRETS,
        secrets.webhook.len()
    );
    println!(
        "{} = \"<redacted>\"  # key ids {}, current `{}`",
        secrets::ENCRYPTION_KEYS,
        ids.join(", "),
        secrets.keys.current()
    );
    println!("{} = \"<redacted>\"", secrets::HASH_KEY);
    println!(
        "{} = \"{}\"",
        secrets::DATABASE_URL,
        secrets::database_label(&secrets.database_url)
    );
    warn_missing_keys(settings, &secrets).await;
    eprintln!("configuration OK");
    Ok(ExitCode::SUCCESS)
}

/// `check-config`'s warning about rows that no key in the ring can open:
/// a store that is not there (yet) or does not answer within a few
/// seconds is mentioned, never an error of the configuration.
async fn warn_missing_keys(settings: &Settings, secrets: &Secrets) {
    const WAIT: Duration = Duration::from_secs(5);
    let mut db = settings.database.clone();
    db.connect_timeout = db.connect_timeout.min(WAIT);
    let check = async {
        let store = Store::open_migrated(&secrets.database_url, &db).await?;
        let spool = local_spool(settings, &store);
        let missing = crate::reencrypt::missing_keys(&store, &secrets.keys, spool).await;
        store.close().await;
        missing
    };
    match tokio::time::timeout(WAIT * 2, check).await {
        Ok(Ok(missing)) => {
            for (kind, key_id, rows) in missing {
                eprintln!(
                    "warning: {rows} {kind} row(s) are sealed under key `{key_id}`, which is not in {}: \
                     they cannot be read until it is back (run `reencrypt` before removing a key)",
                    secrets::ENCRYPTION_KEYS
                );
            }
        }
        Ok(Err(e)) => eprintln!("note: the stored rows' keys were not checked: {e}"),
        Err(_) => {
            eprintln!("note: the stored rows' keys were not checked: the store did not answer")
        }
    }
}

/// A tiny HTTP/1.1 GET so container images need no curl.
async fn healthcheck(settings: &Settings) -> anyhow::Result<ExitCode> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut addr = settings.server.bind;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await?;
        Ok::<_, std::io::Error>(head[..n].starts_with(b"HTTP/1.1 200"))
    };
    match tokio::time::timeout(Duration::from_secs(3), probe).await {
        Ok(Ok(true)) => Ok(ExitCode::SUCCESS),
        Ok(Ok(false)) => bail!("/healthz on {addr} did not answer 200"),
        Ok(Err(e)) => bail!("/healthz on {addr} is unreachable: {e}"),
        Err(_) => bail!("/healthz on {addr} did not answer within 3s"),
    }
}

/// Writes `.env` with fresh secrets, mode 0600, refusing to overwrite: the
/// service's secrets and the Postgres password `docker-compose.yml` needs
/// (Compose builds `DATABASE_URL` from it, so a local run without Compose
/// keeps its embedded store). Every value is hex or base64: nothing needs
/// quoting, so each can be copied as it stands.
fn init(path: &Path) -> anyhow::Result<ExitCode> {
    use rand::RngCore as _;
    let random_hex = || {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        hex::encode(bytes)
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let key_id = format!("k{}", chrono::Utc::now().format("%Y%m%d"));
    let contents = format!(
        "# Written by `imggo-receiver init`. Keep this file secret; never commit it.\n\
         # Register IMGGO_WEBHOOK_SECRETS with ImgGo as your webhook signing secret\n\
         # (everything after the `=`, as it stands).\n\
         IMGGO_WEBHOOK_SECRETS=whsec_{}\n\
         # Encryption key ring KEY_ID:BASE64, first encrypts, all decrypt.\n\
         IMGGO_ENCRYPTION_KEYS={key_id}:{}\n\
         # Key of the `hash` redaction HMAC.\n\
         IMGGO_HASH_KEY={}\n\
         # Password of docker-compose.yml's Postgres, which builds DATABASE_URL from it.\n\
         # Postgres takes it when its volume is first created; without Compose (and\n\
         # without DATABASE_URL) the service uses ./data/imggo.db and ignores it.\n\
         POSTGRES_PASSWORD={}\n",
        random_hex(),
        b64(&crypto::generate_key()),
        b64(&crypto::generate_key()),
        random_hex(),
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!(
                "{} already exists; refusing to overwrite it (move it away first)",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    println!("wrote fresh secrets to {} (mode 0600)", shown.display());
    println!(
        "register the IMGGO_WEBHOOK_SECRETS value in it with ImgGo as your webhook secret (copy it as it stands)"
    );
    println!("with Docker Compose: docker compose up --build -d");
    println!("next: {}", serve_command());
    Ok(ExitCode::SUCCESS)
}

/// How the user starts the server, in the form they ran this command:
/// `cargo run --release` (or `cargo run`) when cargo launched us, else the
/// program as they typed it (`imggo-receiver`, `./target/release/imggo-receiver`).
fn serve_command() -> String {
    // cargo sets CARGO for the programs it runs.
    if std::env::var_os("CARGO").is_some() {
        let release = std::env::current_exe().ok().is_some_and(|exe| {
            exe.parent()
                .and_then(Path::file_name)
                .is_some_and(|dir| dir == "release")
        });
        return if release {
            "cargo run --release"
        } else {
            "cargo run"
        }
        .to_owned();
    }
    std::env::args()
        .next()
        .filter(|arg0| !arg0.is_empty())
        .unwrap_or_else(|| "imggo-receiver".to_owned())
}
