//! Keeping a genuine delivery that validation refused (CONTRACT §10): in
//! the database's quarantine, or in the spool by the same commit policy as
//! an event. It keeps its 4xx either way: a row that neither can keep is
//! logged with the request id (never silently dropped).

use super::{Ingest, Landed, Meta};
use crate::error::AppError;

impl Ingest {
    /// Seals `body` as a quarantine row under `error`'s reason (when it is
    /// one that is kept) and keeps it.
    pub(super) async fn quarantine(&self, body: &[u8], error: &AppError, meta: &Meta<'_>) {
        let Some(reason) = crate::quarantine::reason(error) else {
            return;
        };
        let request_id = meta.request_id;
        let p = &self.pipeline;
        let row = match crate::quarantine::seal(
            body,
            reason,
            request_id,
            &p.subjects,
            &p.redactor,
            &p.keys,
        ) {
            Ok(row) => row,
            Err(error) => {
                metrics::counter!(crate::metrics::SEAL_FAILURES).increment(1);
                return tracing::error!(
                    %error, reason, request_id,
                    "a genuine delivery was refused and could not be sealed for quarantine"
                );
            }
        };
        match self.commit.quarantine(&row).await {
            Ok(Landed::Primary(Some(id))) => {
                metrics::counter!(crate::metrics::QUARANTINED, "reason" => reason).increment(1);
                tracing::info!(
                    id,
                    reason,
                    request_id,
                    "refused delivery kept in quarantine"
                );
            }
            Ok(Landed::Spooled(_)) => {
                metrics::counter!(crate::metrics::QUARANTINED, "reason" => reason).increment(1);
                tracing::info!(
                    reason,
                    request_id,
                    "refused delivery kept in the spool, for quarantine once Postgres answers"
                );
            }
            Ok(Landed::Primary(None)) => tracing::info!(
                reason,
                request_id,
                "refused delivery not kept: its data subject was erased while it was stored"
            ),
            Err(error) => tracing::error!(
                %error, reason, request_id,
                "a genuine delivery was refused and could not be kept in quarantine"
            ),
        }
    }
}
