//! A future that is polled only when it asked to be: the shutdown branches every connection
//! task selects on.
//!
//! `tokio::select!` polls every branch whenever the task wakes. A connection's task wakes for
//! every frame it sends and every request it serves, and most of its branches wait on the
//! process's shutdown token: re-polling one of those takes two process-wide locks (the token's
//! and its `Notify`'s), shared by every connection on both worker threads. Wrapped in
//! [`WhenWoken`], such a branch registers once and is polled again only after its own waker
//! fired (BENCHMARKS.md, "The send path's wake-ups").

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Wraps `inner` so that it is polled on the first poll, on the poll after it was ready, and
/// otherwise only when the waker it was last given has been woken; the task's current waker is
/// always the one woken. Not fused: polled after it was ready, it polls `inner` again, which
/// suits a `poll_fn` (the writer's heartbeat) and would panic in an `async` block, so callers
/// of the latter never poll it after completion (a `select!` disables a completed branch).
pub(crate) struct WhenWoken<F> {
    inner: Pin<Box<F>>,
    signal: Arc<Signal>,
    waker: Waker,
}

/// What `inner` holds as its waker: notes that it fired and wakes the task.
struct Signal {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> WhenWoken<F> {
    pub(crate) fn new(inner: F) -> WhenWoken<F> {
        let signal = Arc::new(Signal {
            // The first poll goes through, so that `inner` registers its waker.
            fired: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        WhenWoken {
            inner: Box::pin(inner),
            waker: Waker::from(Arc::clone(&signal)),
            signal,
        }
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered on every poll, before the flag is read: a wake-up takes the registered
        // waker and sets the flag in two steps, so skipping this when the waker is unchanged
        // can leave none registered after a wake-up that raced this poll (a lost wake-up). With
        // the same waker it is two atomic operations on this connection's own word.
        this.signal.task.register(cx.waker());
        // Set before the task is woken, so the poll after that wake-up sees it.
        if !(this.signal.fired.load(Ordering::Acquire)
            && this.signal.fired.swap(false, Ordering::AcqRel))
        {
            return Poll::Pending;
        }
        let polled = this
            .inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker));
        if polled.is_ready() {
            // A future that can be polled again after it is ready (a `poll_fn` over a timer, as
            // the writer's) is polled on the next poll: it has not registered a waker this time.
            this.signal.fired.store(true, Ordering::Release);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;

    /// Counts its polls and is ready once `open` is set, waking whoever waits through `wake`.
    struct Gate {
        polls: Arc<AtomicUsize>,
        open: Arc<AtomicBool>,
        wake: Arc<AtomicWaker>,
    }

    impl Future for Gate {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            self.wake.register(cx.waker());
            if self.open.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[tokio::test]
    async fn other_wake_ups_of_the_task_do_not_poll_it_and_its_own_wake_up_does() {
        let (polls, open, wake) = Default::default();
        let gate = Gate {
            polls: Arc::clone(&polls),
            open: Arc::clone(&open),
            wake: Arc::clone(&wake),
        };
        let mut quiet = std::pin::pin!(WhenWoken::new(gate));
        // Wake the task 100 times by something else: the gate is polled once, at the start.
        for _ in 0..100 {
            tokio::select! {
                () = &mut quiet => panic!("the gate is not open"),
                () = async { tokio::task::yield_now().await } => {}
            }
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // Its own waker fires: it is polled and completes.
        open.store(true, Ordering::SeqCst);
        wake.wake();
        tokio::time::timeout(Duration::from_secs(5), &mut quiet)
            .await
            .expect("woken by its own waker, it is polled again");
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn each_of_its_own_wake_ups_polls_it_again() {
        let (polls, open, wake): (Arc<AtomicUsize>, Arc<AtomicBool>, Arc<AtomicWaker>) =
            Default::default();
        let gate = Gate {
            polls: Arc::clone(&polls),
            open: Arc::clone(&open),
            wake: Arc::clone(&wake),
        };
        // Nothing else wakes this task: only the gate's own wake-ups reach it.
        let waiting = tokio::spawn(WhenWoken::new(gate));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        for n in 2..5 {
            wake.wake();
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(polls.load(Ordering::SeqCst), n, "wake-up {n} was lost");
        }
        open.store(true, Ordering::SeqCst);
        wake.wake();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the last wake-up completes it")
            .expect("no panic");
    }

    #[tokio::test(start_paused = true)]
    async fn a_future_polled_again_after_it_was_ready_keeps_firing() {
        let mut interval = tokio::time::interval(Duration::from_secs(30));
        let mut ticks = WhenWoken::new(std::future::poll_fn(move |cx| interval.poll_tick(cx)));
        // Five heartbeats in a row: each ready poll re-arms the timer only when polled again.
        for _ in 0..5 {
            tokio::time::timeout(Duration::from_secs(60), &mut ticks)
                .await
                .expect("the next tick arrives");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancellation_reaches_a_task_parked_on_other_branches() {
        let token = CancellationToken::new();
        let other = Arc::new(tokio::sync::Notify::new());
        let woken_by_other = Arc::new(AtomicUsize::new(0));
        let waiting = {
            let (token, other) = (token.clone(), Arc::clone(&other));
            let woken_by_other = Arc::clone(&woken_by_other);
            tokio::spawn(async move {
                let cancelled = WhenWoken::new(token.cancelled_owned());
                tokio::pin!(cancelled);
                loop {
                    tokio::select! {
                        () = &mut cancelled => return,
                        () = other.notified() => { woken_by_other.fetch_add(1, Ordering::SeqCst); }
                    }
                }
            })
        };
        // Other wake-ups first, then nothing but the cancellation: only its own wake-up can
        // end the task.
        for n in 1..=3 {
            other.notify_one();
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(woken_by_other.load(Ordering::SeqCst), n);
        }
        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the cancellation is seen")
            .expect("no panic");
    }
}
