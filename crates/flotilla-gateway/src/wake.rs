//! A future wrapper that turns wake-ups a connection's task gives itself into an immediate
//! re-poll instead of a trip through the scheduler.
//!
//! Inside one client connection, hyper's server passes the request body to the handler, and
//! the router's plain-http upstream connection passes the response to it, through channels
//! whose wakers all belong to this same task. Each such wake-up lands while the task is being
//! polled, and tokio then treats the task as yielding: it goes to the back of the run queue and
//! an idle worker is woken to look for work (a futex wake and a context switch on another core)
//! only to find none. Here a wake-up that arrives while the wrapped future is being polled just
//! marks it for one more poll, done before returning; a wake-up from anywhere else (the I/O
//! driver, a timer, another thread) wakes the task as usual.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// The wrapped future is being polled right now.
const POLLING: u8 = 1;
/// Something woke the wrapped future since its poll began.
const WOKEN: u8 = 2;
/// Re-polls in one poll before falling back to the scheduler, so that a future that keeps
/// waking itself (tokio's cooperative budget does that on purpose) still lets others run.
const MAX_REPOLLS: usize = 8;

/// Polls `F` with a waker that absorbs the wake-ups `F` gives itself (see the module docs).
pub(crate) struct Coalesce<F> {
    inner: Pin<Box<F>>,
    shared: Arc<Shared>,
    waker: Waker,
}

struct Shared {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.fetch_or(WOKEN, Ordering::AcqRel) & POLLING == 0 {
            self.task.wake();
        }
    }
}

impl<F: Future> Coalesce<F> {
    pub fn new(inner: F) -> Self {
        let shared = Arc::new(Shared { state: AtomicU8::new(0), task: AtomicWaker::new() });
        let waker = Waker::from(shared.clone());
        Coalesce { inner: Box::pin(inner), shared, waker }
    }
}

impl<F: Future> Future for Coalesce<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.shared.task.register(cx.waker());
        let mut inner_cx = Context::from_waker(&this.waker);
        for _ in 0..MAX_REPOLLS {
            this.shared.state.store(POLLING, Ordering::Release);
            let polled = this.inner.as_mut().poll(&mut inner_cx);
            // A wake-up from another thread that raced with the end of the poll is either seen
            // here (WOKEN) or, once POLLING is cleared, forwarded to the task by `wake`.
            let state = this.shared.state.swap(0, Ordering::AcqRel);
            if polled.is_ready() || state & WOKEN == 0 {
                return polled;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Wakes itself `n` times during its own polls, then finishes.
    struct SelfWaking {
        left: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Future for SelfWaking {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            if self.left == 0 {
                return Poll::Ready(());
            }
            self.left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn self_wakes_are_polled_again_without_waking_the_task() {
        let outer = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(outer.clone());
        let mut cx = Context::from_waker(&waker);
        let polls = Arc::new(AtomicUsize::new(0));
        let mut f = Coalesce::new(SelfWaking { left: 3, polls: polls.clone() });
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Ready(()));
        assert_eq!(polls.load(Ordering::Relaxed), 4);
        assert_eq!(outer.0.load(Ordering::Relaxed), 0, "the task was never woken");
    }

    #[test]
    fn endless_self_wakes_fall_back_to_the_scheduler() {
        let outer = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(outer.clone());
        let mut cx = Context::from_waker(&waker);
        let polls = Arc::new(AtomicUsize::new(0));
        let mut f = Coalesce::new(SelfWaking { left: usize::MAX, polls: polls.clone() });
        assert_eq!(Pin::new(&mut f).poll(&mut cx), Poll::Pending);
        assert_eq!(polls.load(Ordering::Relaxed), MAX_REPOLLS);
        assert_eq!(outer.0.load(Ordering::Relaxed), 1, "the task is woken once to run again later");
    }

    #[tokio::test]
    async fn wakes_from_elsewhere_reach_the_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let waiter = tokio::spawn(Coalesce::new(rx));
        tokio::task::yield_now().await;
        tx.send(7).expect("send");
        assert_eq!(waiter.await.expect("join").expect("value"), 7);
    }
}
