//! The queue of group commit, shared by the batch writers (into the store)
//! and the spool writer (into the spool file): a request hands its item to
//! a bounded queue and waits for its own answer; a writer takes everything
//! queued the moment it is free and answers each request. A full queue is
//! refused at once instead of growing memory, and a request whose writer
//! is gone hears so instead of waiting forever.

use tokio::sync::{mpsc, oneshot};

/// One queued item and the way back to its requester.
pub struct Request<T, R> {
    pub item: T,
    reply: oneshot::Sender<R>,
}

impl<T, R> Request<T, R> {
    /// Answers the requester (who may have gone: a timeout, a disconnect).
    pub fn answer(self, outcome: R) {
        let _ = self.reply.send(outcome);
    }
}

impl<T, R> std::fmt::Debug for Request<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Request")
    }
}

/// Why an item was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue is at capacity.
    Full,
    /// The writer has stopped (or dropped the request unanswered).
    Stopped,
}

/// The requesting side; cheap to clone. The writer's receiver ends once
/// every clone is dropped and the queue is empty.
pub struct Submitter<T, R> {
    queue: mpsc::Sender<Request<T, R>>,
}

impl<T, R> Clone for Submitter<T, R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<T, R> std::fmt::Debug for Submitter<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitter")
            .field("queued", &self.queued())
            .finish()
    }
}

/// A queue of `capacity` (at least 1) requests.
pub fn queue<T, R>(capacity: usize) -> (Submitter<T, R>, mpsc::Receiver<Request<T, R>>) {
    let (queue, rx) = mpsc::channel(capacity.max(1));
    (Submitter { queue }, rx)
}

impl<T, R> Submitter<T, R> {
    /// Queues `item` and waits for the writer's answer.
    pub async fn submit(&self, item: T) -> Result<R, Refused> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(Request { item, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Refused::Full,
                mpsc::error::TrySendError::Closed(_) => Refused::Stopped,
            })?;
        answer.await.map_err(|_| Refused::Stopped)
    }

    /// Requests waiting for a writer right now.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_request_gets_its_own_answer() {
        let (submit, mut rx) = queue::<u32, u32>(4);
        let writer = tokio::spawn(async move {
            let mut batch = Vec::new();
            while rx.recv_many(&mut batch, 8).await > 0 {
                for r in batch.drain(..) {
                    let doubled = r.item * 2;
                    r.answer(doubled);
                }
            }
        });
        let (a, b) = tokio::join!(submit.submit(1), submit.submit(2));
        assert_eq!((a, b), (Ok(2), Ok(4)));
        drop(submit);
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_a_gone_writer_says_stopped() {
        let (submit, rx) = queue::<u32, u32>(1);
        // Nobody reads: the first request waits, the second finds it full.
        let first = tokio::spawn({
            let submit = submit.clone();
            async move { submit.submit(1).await }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while submit.queued() < 1 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        assert_eq!(submit.submit(2).await, Err(Refused::Full));
        drop(rx);
        assert_eq!(first.await.unwrap(), Err(Refused::Stopped));
        assert_eq!(submit.submit(3).await, Err(Refused::Stopped));
    }
}
