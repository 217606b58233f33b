//! `forget VALUE`: erasure by data subject from the command line (CONTRACT
//! §9). The value is hashed with the hash key at once, under each kind's
//! canonical form, and only the hashes are used or recorded (the audit
//! target is its §4 digest). `forget -` reads the value from
//! stdin, keeping it out of shell history and `ps`.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::audit::{Action, Actor, AuditEntry};
use crate::config::secrets::{HashKey, ProcessEnv};
use crate::config::Settings;
use crate::subjects::SubjectKey;

pub async fn run(settings: &Settings, value: String) -> anyhow::Result<ExitCode> {
    let value = if value == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .context("cannot read the value from stdin")?;
        let line = buf.strip_suffix('\n').unwrap_or(&buf);
        let line = line.strip_suffix('\r').unwrap_or(line);
        // Several values joined would erase a subject nobody named.
        anyhow::ensure!(
            !line.contains(['\n', '\r']),
            "`forget -` reads one value: stdin held more than one line; run it once per value"
        );
        line.to_owned()
    } else {
        value
    };
    let key = SubjectKey::new(HashKey::load(&ProcessEnv)?.expose());
    // The audit target: the value's §4 digest, as before kinds existed.
    let Some(target) = key.hash(&value) else {
        anyhow::bail!("the value has no letter or digit: nothing can be indexed under it");
    };
    let store = super::connect(settings).await?;
    let entry = AuditEntry::new(Actor::Cli, Action::Erasure, Some(target.to_hex()));
    let deleted = store.forget_subject(&key.lookups(&value), &entry).await?;
    println!("deleted {deleted} event(s)");
    Ok(ExitCode::SUCCESS)
}
