//! The calls this node published and is waiting on: each one's counts from the nodes its event
//! reached, gathered as their acks come back through this node's channel.
//!
//! A call's entry lives exactly as long as its [`AckWait`]: a producer request dropped
//! mid-flight (its client went away while Redis ran the script or while the acks were awaited)
//! takes its entries with it, so the map holds only calls someone still waits on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backplane::message::AckMessage;
use crate::mutex::lock;

/// The calls waiting here for acks, by request number.
#[derive(Default)]
pub(super) struct Acks {
    pending: Mutex<HashMap<u64, PendingAck>>,
}

/// Counts gathered for one published event until every reached node answered.
#[derive(Default)]
struct PendingAck {
    attempted: usize,
    sent: usize,
    received: usize,
    notify: Arc<Notify>,
}

/// One call's place in [`Acks`], removed when this is dropped (awaited to the end or not).
pub(super) struct AckWait<'a> {
    acks: &'a Acks,
    request: u64,
    notify: Arc<Notify>,
}

/// What the reached nodes answered for one call by its deadline.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Answered {
    pub(super) attempted: usize,
    pub(super) sent: usize,
    /// Nodes the event reached that did not answer in time.
    pub(super) missing: usize,
}

impl Acks {
    /// Starts gathering `request`'s acks; an ack that arrives before the wait is awaited is
    /// kept.
    pub(super) fn expect(&self, request: u64) -> AckWait<'_> {
        let pending = PendingAck::default();
        let notify = Arc::clone(&pending.notify);
        lock(&self.pending).insert(request, pending);
        AckWait {
            acks: self,
            request,
            notify,
        }
    }

    /// Adds one node's counts to a call waiting here; an ack for a call no one waits on any
    /// more is dropped.
    pub(super) fn record(&self, ack: AckMessage) {
        let mut pending = lock(&self.pending);
        if let Some(pending) = pending.get_mut(&ack.request) {
            pending.attempted += ack.attempted;
            pending.sent += ack.sent;
            pending.received += 1;
            pending.notify.notify_one();
        }
    }
}

impl AckWait<'_> {
    /// Waits until `expected` nodes answered or `deadline` passed; a node that did not answer
    /// in time counts as nothing attempted and nothing sent.
    pub(super) async fn until(self, expected: usize, deadline: Instant) -> Answered {
        loop {
            {
                let mut acks = lock(&self.acks.pending);
                let done = acks
                    .get(&self.request)
                    .is_none_or(|pending| pending.received >= expected);
                if done || Instant::now() >= deadline {
                    let pending = acks.remove(&self.request).unwrap_or_default();
                    return Answered {
                        attempted: pending.attempted,
                        sent: pending.sent,
                        missing: expected.saturating_sub(pending.received),
                    };
                }
            }
            // `notify_one` keeps a permit, so an ack between the look above and this wait is
            // not missed.
            let _ = tokio::time::timeout_at(deadline, self.notify.notified()).await;
        }
    }
}

impl Drop for AckWait<'_> {
    fn drop(&mut self) {
        lock(&self.acks.pending).remove(&self.request);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ack(request: u64, attempted: usize, sent: usize) -> AckMessage {
        AckMessage {
            request,
            attempted,
            sent,
        }
    }

    fn waiting(acks: &Acks) -> Vec<u64> {
        lock(&acks.pending).keys().copied().collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_reached_nodes_counts_are_summed() {
        let acks = Acks::default();
        let wait = acks.expect(1);
        acks.record(ack(1, 2, 1));
        acks.record(ack(1, 3, 3));
        let answered = wait.until(2, Instant::now() + Duration::from_secs(1)).await;
        assert_eq!(
            answered,
            Answered {
                attempted: 5,
                sent: 4,
                missing: 0
            }
        );
        assert_eq!(waiting(&acks), Vec::<u64>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_silent_past_the_deadline_is_missing() {
        let acks = Acks::default();
        let wait = acks.expect(1);
        acks.record(ack(1, 1, 1));
        let answered = wait.until(3, Instant::now() + Duration::from_secs(1)).await;
        assert_eq!(
            answered,
            Answered {
                attempted: 1,
                sent: 1,
                missing: 2
            }
        );
        assert_eq!(waiting(&acks), Vec::<u64>::new());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_dropped_while_awaiting_acks_leaves_no_entry() {
        let acks = Acks::default();
        let kept = acks.expect(1);
        let wait = acks.expect(2);
        acks.record(ack(2, 1, 1));
        // The request goes away while one of the two reached nodes has answered.
        let dropped = tokio::time::timeout(
            Duration::from_millis(10),
            wait.until(2, Instant::now() + Duration::from_secs(1)),
        )
        .await;
        assert!(dropped.is_err(), "the wait was still awaiting its acks");
        assert_eq!(waiting(&acks), vec![1]);
        // A late ack for the dropped call changes nothing.
        acks.record(ack(2, 1, 1));
        assert_eq!(waiting(&acks), vec![1]);
        drop(kept);
        assert_eq!(waiting(&acks), Vec::<u64>::new());
    }

    #[test]
    fn a_wait_never_awaited_leaves_no_entry() {
        // A batch dropped while Redis runs its scripts: its items' waits were never awaited.
        let acks = Acks::default();
        let waits: Vec<_> = (1..=3).map(|request| acks.expect(request)).collect();
        assert_eq!(waiting(&acks).len(), 3);
        drop(waits);
        assert_eq!(waiting(&acks), Vec::<u64>::new());
    }
}
