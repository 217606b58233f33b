//! `forward dead replay`: once a relay has caught up, it sends the dead
//! letters marked for replay again, each with the seqs after the last one
//! sent (see the seq rule in [`super::relay`]).

use super::publish::Message;
use super::publish::Verdict;
use super::relay::{judge, Relay, Step};
use crate::metrics as m;
use crate::store::forward::DestinationState;
use crate::store::StoreError;

impl Relay {
    /// Caught up: sends the dead letters `forward dead replay` asked for.
    pub(super) async fn replay(&mut self, state: &DestinationState) -> Result<Step, StoreError> {
        let due = self.store.forward_dead(Some(&self.name), true).await?;
        let mut seq = state.seq;
        for (_, dead) in due {
            // Caught up: nothing in the feed can come with `seq.0` any
            // more (see the module's opening), so `seq.1` has room.
            let next = (seq.0, seq.1.saturating_add(1));
            let messages = if dead.notice {
                self.store
                    .forward_notice(&self.name, dead.position.id)
                    .await?
                    .map(|n| Ok(self.notice_messages(&n, next)))
            } else {
                self.store.forward_event(dead.position.id).await?.map(|e| {
                    self.event_message(&e)
                        .map(|m| vec![Message { seq: next, ..m }])
                })
            };
            let messages = match messages {
                Some(Ok(messages)) => messages,
                // Still unreadable (its key is not loaded): it stays a dead
                // letter, with the reason, for a replay once the key is back.
                Some(Err(reason)) => {
                    self.store
                        .forward_dead_again(&self.name, &dead.message_id, &reason)
                        .await?;
                    continue;
                }
                // Erased or purged since: nothing to send.
                None => {
                    self.store
                        .forward_dead_done(&self.name, &dead.message_id)
                        .await?;
                    continue;
                }
            };
            let last = messages.last().map_or(next, |m| m.seq);
            let verdicts = self.publisher.publish(&messages).await;
            let short = Verdict::Failed {
                reason: "other",
                detail: "the destination answered for part of the batch".to_owned(),
                retry_after: None,
            };
            match judge(&verdicts, 0..messages.len(), &short) {
                Ok(None) => {
                    self.backoff.succeeded();
                    self.store
                        .forward_dead_done(&self.name, &dead.message_id)
                        .await?;
                    m::counter_forward(m::FORWARD_SENT, &self.name, 1);
                    tracing::info!(destination = %self.name, id = %dead.message_id, "dead letter replayed");
                }
                Ok(Some(reason)) => {
                    self.store
                        .forward_dead_again(&self.name, &dead.message_id, reason)
                        .await?;
                }
                Err(stop) => return self.stopped(stop).await,
            }
            let next = last;
            seq = next;
            self.store.forward_set_seq(&self.name, seq).await?;
        }
        Ok(Step::Idle)
    }
}
