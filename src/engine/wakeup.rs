//! How an idle worker learns that its queue has work, and fetches only then.
//!
//! apalis-postgres fetches whenever its worker's task is polled while its buffer is empty,
//! and that task is polled for every event of every job in flight (each handler's wake-up,
//! each completion). Under a steady trickle of leads that is several `get_jobs`
//! transactions per job, most of them empty: at 50 leads/s they were the bulk of
//! PostgreSQL's work. [`Gated`] lets a fetch start only when there may be work:
//! - [`Wakeup`] fired: apalis's insert trigger announced a due job (LISTEN/NOTIFY, one
//!   listener per process: [`Announcer`]), or its timer ticked (delayed jobs, retries);
//! - the last fetch returned jobs, so there may be more;
//! - or a fetch already under way made progress (its own I/O woke it), which must be driven
//!   to its end.
//!
//! A notification that arrives while a fetch is under way may concern a job that fetch's
//! snapshot missed. When such a fetch then returns nothing, [`RECHECK`] later one more
//! fetch is let through, so the job waits milliseconds rather than a poll interval.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use apalis_core::backend::{Backend, BackendConfig, WireFormatBackend};
use apalis_core::worker::context::WorkerContext;
use apalis_postgres::InsertEvent;
use futures::task::AtomicWaker;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// How long after a notification whose fetch found nothing one more fetch is let through.
pub const RECHECK: Duration = Duration::from_millis(10);

/// One LISTEN connection per process for every queue's insert notifications. Each
/// notification is also a transaction on every backend that listens, so one listener rather
/// than one per queue: a third of the backends woken per job.
pub struct Announcer {
    queues: HashMap<&'static str, Arc<Signal>>,
}

/// A queue's "a job was announced" flag, with the waker of the worker waiting for it.
#[derive(Default)]
pub struct Signal {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// `true` if raised since the last call; registers `cx`'s waker either way.
    fn take(&self, cx: &Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.raised.swap(false, Ordering::AcqRel)
    }
}

impl Announcer {
    pub fn new(queues: impl IntoIterator<Item = &'static str>) -> Self {
        Announcer {
            queues: queues
                .into_iter()
                .map(|q| (q, Arc::new(Signal::default())))
                .collect(),
        }
    }

    /// The signal of `queue`, for its [`Wakeup`]; a queue not named at creation is never
    /// announced (its worker relies on the timer).
    pub fn signal(&self, queue: &str) -> Arc<Signal> {
        self.queues.get(queue).cloned().unwrap_or_default()
    }

    /// Listens until `stop`, reconnecting a second after the connection drops (a database
    /// restart). After each (re)connection every queue is raised: jobs may have been
    /// announced while nobody listened.
    pub async fn run(self, pool: PgPool, mut stop: watch::Receiver<bool>) {
        loop {
            let listened = tokio::select! {
                r = self.listen(&pool) => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            if let Err(e) = listened {
                tracing::warn!(error = %e, "job listener lost; polling only until it reconnects");
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn listen(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(CHANNEL).await?;
        for signal in self.queues.values() {
            signal.raise();
        }
        loop {
            let notification = listener.recv().await?;
            match serde_json::from_str::<InsertEvent>(notification.payload()) {
                Ok(event) => {
                    if let Some(signal) = self.queues.get(event.job_type.as_str()) {
                        signal.raise();
                    }
                }
                Err(e) => tracing::debug!(error = %e, "unreadable job notification"),
            }
        }
    }
}

/// apalis's insert trigger's channel.
const CHANNEL: &str = "apalis::job::insert";

/// Wakes an idle worker when a job of its queue is announced (through the [`Announcer`],
/// milliseconds) and on a timer (for delayed jobs, which the insert trigger does not
/// announce, and while the announcer reconnects). apalis's own interval strategy can stall
/// until the 30 s heartbeat (see DESIGN.md), hence this one.
pub struct Wakeup {
    interval: Duration,
    sleep: Pin<Box<Sleep>>,
    signal: Arc<Signal>,
}

impl Wakeup {
    pub fn new(signal: Arc<Signal>, interval: Duration) -> Self {
        Wakeup {
            interval,
            sleep: Box::pin(tokio::time::sleep(interval)),
            signal,
        }
    }

    /// What woke the worker since the last call, if anything. Either way the signal and the
    /// timer hold `cx`'s waker afterwards.
    pub fn poll_wake(&mut self, cx: &mut Context<'_>) -> Option<Woken> {
        let announced = self.signal.take(cx);
        let mut ticked = false;
        // Re-arm and poll again until pending, so the timer always holds a waker.
        while self.sleep.as_mut().poll(cx).is_ready() {
            ticked = true;
            let next = Instant::now() + self.interval;
            self.sleep.as_mut().reset(next);
        }
        match (announced, ticked) {
            (true, _) => Some(Woken::Announced),
            (false, true) => Some(Woken::Ticked),
            (false, false) => None,
        }
    }
}

/// Why [`Wakeup`] woke the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// A due job was inserted or brought forward.
    Announced,
    /// The poll interval passed.
    Ticked,
}

/// The waker handed to the inner backend: it notes that the backend's own work (a fetch's
/// I/O) woke it, then wakes the worker.
#[derive(Default)]
struct Progress {
    woke: AtomicBool,
    worker: AtomicWaker,
}

impl Wake for Progress {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woke.store(true, Ordering::Release);
        self.worker.wake();
    }
}

/// A backend whose fetches are gated by a [`Wakeup`] (see the module's documentation).
pub struct Gated<B> {
    backend: B,
    wakeup: Wakeup,
    progress: Arc<Progress>,
    waker: Waker,
    /// A wake-up is waiting to be served by a fetch.
    armed: Option<Woken>,
    /// The last poll of the backend produced a job: its buffer may hold more.
    flowing: bool,
    /// Set when a wake-up was served by a poll that produced nothing yet.
    recheck: Option<Pin<Box<Sleep>>>,
}

impl<B> Gated<B> {
    pub fn new(backend: B, wakeup: Wakeup) -> Self {
        let progress = Arc::new(Progress::default());
        Gated {
            backend,
            wakeup,
            waker: Waker::from(progress.clone()),
            progress,
            // The first fetch goes ahead: jobs may have waited while no worker ran.
            armed: Some(Woken::Ticked),
            flowing: false,
            recheck: None,
        }
    }
}

impl<B: Backend> Backend for Gated<B> {
    type Task = B::Task;
    type Error = B::Error;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        // Heartbeats and acknowledgements: never gated.
        self.backend.poll_ready(cx, worker)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.progress.worker.register(cx.waker());
        match (self.wakeup.poll_wake(cx), self.armed) {
            (Some(Woken::Announced), _) => self.armed = Some(Woken::Announced),
            (Some(Woken::Ticked), None) => self.armed = Some(Woken::Ticked),
            _ => {}
        }
        if self
            .recheck
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
        {
            self.recheck = None;
            // A recheck is a fetch of its own; it never schedules another.
            self.armed = self.armed.or(Some(Woken::Ticked));
        }
        let progressed = self.progress.woke.swap(false, Ordering::AcqRel);
        if !(self.armed.is_some() || self.flowing || progressed) {
            return Poll::Pending;
        }
        let mut inner = Context::from_waker(&self.waker);
        match self.backend.poll_next(&mut inner, worker) {
            Poll::Ready(Some(Ok(task))) => {
                self.flowing = true;
                self.armed = None;
                self.recheck = None;
                Poll::Ready(Some(Ok(task)))
            }
            Poll::Ready(other) => {
                self.flowing = false;
                Poll::Ready(other)
            }
            Poll::Pending => {
                self.flowing = false;
                if self.armed.take() == Some(Woken::Announced) {
                    let mut timer = Box::pin(tokio::time::sleep(RECHECK));
                    // Registers the waker now, so the recheck happens even if nothing else
                    // wakes the worker.
                    let _ = timer.as_mut().poll(cx);
                    self.recheck = Some(timer);
                }
                Poll::Pending
            }
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        self.backend.poll_close(cx, worker)
    }
}

impl<B: BackendConfig> BackendConfig for Gated<B> {
    type Args = B::Args;
    type Id = B::Id;
    type Kind = B::Kind;
    type Config = B::Config;
    type Layer = B::Layer;

    fn config(&self) -> &Self::Config {
        self.backend.config()
    }

    fn middleware(&mut self, worker: &mut WorkerContext) -> Self::Layer {
        self.backend.middleware(worker)
    }
}

impl<B: WireFormatBackend> WireFormatBackend for Gated<B> {
    type Codec = B::Codec;
    type Compact = B::Compact;

    fn codec(&self) -> &Self::Codec {
        self.backend.codec()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A backend that counts the polls that reach it (each would drive or start a fetch) and
    /// answers from a script, `Pending` once the script is done.
    #[derive(Default)]
    struct Fake {
        polls: usize,
        script: VecDeque<u32>,
        waker: Option<Waker>,
    }

    impl Backend for Fake {
        type Task = u32;
        type Error = std::io::Error;

        fn poll_ready(
            &mut self,
            _: &mut Context<'_>,
            _: &WorkerContext,
        ) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn poll_next(
            &mut self,
            cx: &mut Context<'_>,
            _: &WorkerContext,
        ) -> Poll<Option<Result<u32, Self::Error>>> {
            self.polls += 1;
            self.waker = Some(cx.waker().clone());
            match self.script.pop_front() {
                Some(task) => Poll::Ready(Some(Ok(task))),
                None => Poll::Pending,
            }
        }

        fn poll_close(
            &mut self,
            _: &mut Context<'_>,
            _: &WorkerContext,
        ) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    struct Harness {
        gated: Gated<Fake>,
        signal: Arc<Signal>,
        worker: WorkerContext,
    }

    impl Harness {
        fn new() -> Self {
            let signal = Arc::new(Signal::default());
            // A timer that never fires within the test: only notifications wake.
            let wakeup = Wakeup::new(signal.clone(), Duration::from_secs(3600));
            Harness {
                gated: Gated::new(Fake::default(), wakeup),
                signal,
                worker: WorkerContext::from("test-worker"),
            }
        }

        /// Polls as the worker does; returns the task if one came and how many polls have
        /// reached the backend so far.
        fn poll(&mut self) -> (Option<u32>, usize) {
            let mut cx = Context::from_waker(Waker::noop());
            let task = match self.gated.poll_next(&mut cx, &self.worker) {
                Poll::Ready(Some(Ok(task))) => Some(task),
                _ => None,
            };
            (task, self.gated.backend.polls)
        }
    }

    #[tokio::test]
    async fn the_backend_is_polled_only_when_there_may_be_work() {
        let mut h = Harness::new();
        // The first fetch goes ahead; the worker's other wake-ups do not reach the backend.
        assert_eq!(h.poll(), (None, 1));
        for _ in 0..5 {
            assert_eq!(h.poll(), (None, 1));
        }
        // The fetch's own I/O woke it: it is driven on.
        h.gated.backend.waker.take().expect("waker").wake();
        assert_eq!(h.poll(), (None, 2));
        assert_eq!(h.poll(), (None, 2));

        // A notification: the fetch brings two jobs; the backend is asked again while jobs
        // come, once more after the last, then left alone.
        h.gated.backend.script.extend([7, 8]);
        h.signal.raise();
        assert_eq!(h.poll(), (Some(7), 3));
        assert_eq!(h.poll(), (Some(8), 4));
        assert_eq!(h.poll(), (None, 5));
        assert_eq!(h.poll(), (None, 5));
    }

    #[tokio::test]
    async fn a_notification_whose_fetch_found_nothing_gets_one_recheck() {
        let mut h = Harness::new();
        assert_eq!(h.poll(), (None, 1));
        // Announced while that fetch may have been under way: it comes back empty.
        h.signal.raise();
        assert_eq!(h.poll(), (None, 2));
        assert_eq!(h.poll(), (None, 2));
        tokio::time::sleep(RECHECK * 3).await;
        assert_eq!(
            h.poll(),
            (None, 3),
            "one more fetch after the recheck delay"
        );
        tokio::time::sleep(RECHECK * 3).await;
        assert_eq!(h.poll(), (None, 3), "a recheck never schedules another");
        // A job found by a fetch cancels the pending recheck.
        h.signal.raise();
        h.gated.backend.script.push_back(9);
        assert_eq!(h.poll(), (Some(9), 4));
        assert_eq!(h.poll(), (None, 5));
        tokio::time::sleep(RECHECK * 3).await;
        assert_eq!(h.poll(), (None, 5));
    }
}
