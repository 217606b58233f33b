//! `export [--after CURSOR] [--limit N]`: the feed from the command line,
//! as JSON lines in the API's event shape, in feed order (audited). Each
//! line carries its `cursor`: pass the last one as `--after` to go on.

use std::io::Write as _;
use std::process::ExitCode;

use crate::audit::{Action, Actor, AuditEntry};
use crate::config::secrets::{self, ProcessEnv};
use crate::config::Settings;
use crate::event::wire;
use crate::feed::{self, CursorForm};
use crate::store::FeedFilter;

/// Rows read per query.
const PAGE: u64 = 1000;

pub async fn run(
    settings: &Settings,
    after: Option<String>,
    limit: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let keys = secrets::load_key_ring(&ProcessEnv)?;
    let store = super::connect(settings).await?;
    let form = CursorForm::of(&store);
    let mut position = match after.as_deref() {
        Some(c) => feed::decode(form, c)
            .ok_or_else(|| anyhow::anyhow!("--after is not a cursor of this database"))?,
        None => feed::Position::default(),
    };
    let mut left = limit.unwrap_or(u64::MAX);
    let mut exported = 0u64;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut line = Vec::with_capacity(4096);
    let result = async {
        while left > 0 {
            let n = u32::try_from(left.min(PAGE)).unwrap_or(1000);
            let page = store.feed_page(position, n, &FeedFilter::default()).await?;
            let Some(last) = page.last() else { break };
            position = last.position;
            for e in &page {
                line.clear();
                let payload = wire::open(&keys, &e.row).map_err(|_| {
                    anyhow::anyhow!(
                        "row {} cannot be decrypted with IMGGO_ENCRYPTION_KEYS",
                        e.row.id
                    )
                })?;
                let cursor = feed::encode(form, e.position);
                wire::write_line(&mut line, &e.row, Some(&cursor), &payload);
                line.push(b'\n');
                out.write_all(&line)?;
                exported += 1;
            }
            left -= page.len() as u64;
        }
        out.flush()?;
        anyhow::Ok(())
    }
    .await;
    // What was printed is recorded even when a later row failed.
    if exported > 0 {
        let entry = AuditEntry::new(Actor::Cli, Action::FeedRead, None).count(exported);
        store.append_audit(&entry).await?;
    }
    result?;
    eprintln!("exported {exported} event(s)");
    Ok(ExitCode::SUCCESS)
}
