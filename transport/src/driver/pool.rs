//! [`WorkerPool`]: a few threads for slow work (Argon2id password checks, account
//! database writes, key-file I/O) so that the event-loop thread never blocks.
//!
//! Contract:
//! - [`WorkerPool::submit`] never blocks: the pool holds at most `capacity` jobs that
//!   are queued, running, or finished but not yet drained; beyond that `submit` fails
//!   at once with [`PoolFull`]. Memory is therefore bounded whatever the loops do.
//! - One pool can serve several event loops: [`WorkerPool::share`] gives another loop
//!   a handle on the same threads, queue and bound, with its own results queue and
//!   [`mio::Waker`]. A job carries the results queue of the handle that submitted it:
//!   its result goes there and that loop's waker is woken; the loop collects its
//!   results with [`WorkerPool::drain_results`].
//! - A job that panics does not take a worker down: its panic is caught and delivered
//!   as [`JobPanicked`].
//! - Dropping a handle drops its jobs that have not started and the results nobody
//!   will drain (their places in the bound are freed). Dropping the last handle stops
//!   accepting jobs, lets running jobs finish, and joins every thread.
//!
//! Locks: a submission takes the job channel's internal lock, a worker takes the
//! receiving end's and its job's results queue's; nothing per datagram.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Default bound on jobs in the pool (queued + running + undrained results).
pub const DEFAULT_CAPACITY: usize = 256;

/// Pools made in this process so far, for [`WorkerPool::id`].
static POOLS: AtomicU64 = AtomicU64::new(0);

/// Identifies a submitted job; results carry it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

/// [`WorkerPool::submit`] refused the job: the pool is at capacity (or shutting down).
/// The job was dropped without running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFull;

impl fmt::Display for PoolFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("worker pool is full")
    }
}

impl std::error::Error for PoolFull {}

/// A job panicked; the pool caught it and kept working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPanicked {
    /// The panic message, when the payload was a string.
    pub message: String,
}

impl fmt::Display for JobPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker job panicked: {}", self.message)
    }
}

impl std::error::Error for JobPanicked {}

type Job<R> = Box<dyn FnOnce() -> R + Send + 'static>;

/// A job on the queue, with the results queue of the handle that submitted it.
struct Queued<R> {
    id: JobId,
    job: Job<R>,
    reply: Arc<Outbox<R>>,
}

/// State shared by every handle of one pool and its workers.
struct Shared {
    /// Jobs submitted and not yet drained (the bounded quantity), over all handles.
    outstanding: AtomicUsize,
    shutting_down: AtomicBool,
}

/// One handle's finished results, and the waker of the loop that drains them.
struct Outbox<R> {
    state: Mutex<OutboxState<R>>,
    waker: Arc<mio::Waker>,
}

struct OutboxState<R> {
    results: VecDeque<(JobId, Result<R, JobPanicked>)>,
    /// The handle was dropped: its jobs are not run and their results are discarded.
    closed: bool,
}

/// The threads and the job queue, dropped (and joined) with the last handle.
struct Core<R: Send + 'static> {
    id: u64,
    jobs: Option<Sender<Queued<R>>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    next_id: AtomicU64,
    capacity: usize,
}

/// A handle on a fixed set of threads running boxed jobs that return `R`, with its own
/// results queue and waker. See the [module documentation](self).
pub struct WorkerPool<R: Send + 'static> {
    core: Arc<Core<R>>,
    outbox: Arc<Outbox<R>>,
}

impl<R: Send + 'static> fmt::Debug for WorkerPool<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("id", &self.core.id)
            .field("threads", &self.core.threads.len())
            .field("capacity", &self.core.capacity)
            .field("outstanding", &self.outstanding())
            .finish_non_exhaustive()
    }
}

impl<R: Send + 'static> WorkerPool<R> {
    /// Starts `threads` workers (at least one) with room for [`DEFAULT_CAPACITY`] jobs;
    /// `waker` is woken after every finished job of this handle.
    pub fn new(threads: usize, waker: Arc<mio::Waker>) -> io::Result<Self> {
        Self::with_capacity(threads, DEFAULT_CAPACITY, waker)
    }

    /// Like [`new`](Self::new), with room for `capacity` jobs (at least one) counting
    /// queued, running and finished-but-undrained ones, of every handle together.
    pub fn with_capacity(
        threads: usize,
        capacity: usize,
        waker: Arc<mio::Waker>,
    ) -> io::Result<Self> {
        let capacity = capacity.max(1);
        // `outstanding` bounds the queue. The channel itself is unbounded: a bounded
        // one preallocates and touches every slot up front (40 B a job, 2.6 MiB of
        // resident memory for 65,536 jobs), whereas this one grows with what is queued.
        let (tx, rx) = mpsc::channel::<Queued<R>>();
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            outstanding: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
        });
        let mut core = Core {
            id: POOLS.fetch_add(1, Ordering::Relaxed),
            jobs: Some(tx),
            shared,
            threads: Vec::new(),
            next_id: AtomicU64::new(0),
            capacity,
        };
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let shared = Arc::clone(&core.shared);
            let handle = std::thread::Builder::new()
                .name(format!("quill-worker-{i}"))
                .spawn(move || worker(&rx, &shared))?;
            // On error `core` drops here, which shuts down the threads already started.
            core.threads.push(handle);
        }
        Ok(WorkerPool {
            core: Arc::new(core),
            outbox: Outbox::new(waker),
        })
    }

    /// Another handle on the same threads, queue and bound, whose jobs' results go to
    /// its own queue and wake `waker` (another event loop's).
    pub fn share(&self, waker: Arc<mio::Waker>) -> Self {
        WorkerPool {
            core: Arc::clone(&self.core),
            outbox: Outbox::new(waker),
        }
    }

    /// Queues `job` to run on a worker; never blocks. Fails with [`PoolFull`] when
    /// `capacity` jobs are already queued, running or waiting to be drained (by any
    /// handle of the pool).
    pub fn submit<F>(&self, job: F) -> Result<JobId, PoolFull>
    where
        F: FnOnce() -> R + Send + 'static,
    {
        let core = &*self.core;
        let jobs = core.jobs.as_ref().ok_or(PoolFull)?;
        // Reserve a place first, so concurrent submitters cannot overshoot the bound.
        core.shared
            .outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < core.capacity).then_some(n + 1)
            })
            .map_err(|_| PoolFull)?;
        let id = JobId(core.next_id.fetch_add(1, Ordering::Relaxed));
        let queued = Queued {
            id,
            job: Box::new(job),
            reply: Arc::clone(&self.outbox),
        };
        match jobs.send(queued) {
            Ok(()) => Ok(id),
            Err(_) => {
                core.shared.outstanding.fetch_sub(1, Ordering::AcqRel);
                Err(PoolFull)
            }
        }
    }

    /// Hands every finished result of this handle's jobs to `f`, oldest first, and
    /// frees its place in the pool. Returns the number of results drained. Call it
    /// when the waker fires.
    pub fn drain_results(&self, mut f: impl FnMut(JobId, Result<R, JobPanicked>)) -> usize {
        let ready = std::mem::take(&mut lock(&self.outbox.state).results);
        let n = ready.len();
        self.core.shared.outstanding.fetch_sub(n, Ordering::AcqRel);
        for (id, result) in ready {
            f(id, result);
        }
        n
    }

    /// Jobs queued, running, or finished and not yet drained, of every handle.
    pub fn outstanding(&self) -> usize {
        self.core.shared.outstanding.load(Ordering::Acquire)
    }

    /// The bound on [`outstanding`](Self::outstanding).
    pub fn capacity(&self) -> usize {
        self.core.capacity
    }

    /// Worker threads (shared by every handle).
    pub fn threads(&self) -> usize {
        self.core.threads.len()
    }

    /// Which pool this handle belongs to: handles made by [`share`](Self::share) have
    /// their pool's; every pool made in the process has its own.
    pub fn id(&self) -> u64 {
        self.core.id
    }
}

impl<R: Send + 'static> Drop for WorkerPool<R> {
    fn drop(&mut self) {
        // Nobody will drain this handle's results: discard them and every later one,
        // and give their places back.
        let dropped = {
            let mut state = lock(&self.outbox.state);
            state.closed = true;
            std::mem::take(&mut state.results).len()
        };
        self.core
            .shared
            .outstanding
            .fetch_sub(dropped, Ordering::AcqRel);
    }
}

impl<R> Outbox<R> {
    fn new(waker: Arc<mio::Waker>) -> Arc<Self> {
        Arc::new(Outbox {
            state: Mutex::new(OutboxState {
                results: VecDeque::new(),
                closed: false,
            }),
            waker,
        })
    }
}

impl<R: Send + 'static> Drop for Core<R> {
    fn drop(&mut self) {
        self.shared.shutting_down.store(true, Ordering::Release);
        // Closing the channel ends each worker's `recv` once the queue is empty.
        self.jobs = None;
        for handle in self.threads.drain(..) {
            // A worker only ends by returning; job panics are caught inside it.
            let _ = handle.join();
        }
    }
}

fn worker<R: Send + 'static>(jobs: &Mutex<Receiver<Queued<R>>>, shared: &Shared) {
    loop {
        let next = lock(jobs).recv();
        let Ok(Queued { id, job, reply }) = next else {
            return; // channel closed: the last handle is being dropped
        };
        if shared.shutting_down.load(Ordering::Acquire) || lock(&reply.state).closed {
            drop(job); // not started: dropped, not run
            shared.outstanding.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let result = panic::catch_unwind(AssertUnwindSafe(job)).map_err(|payload| JobPanicked {
            message: panic_message(payload.as_ref()),
        });
        let delivered = {
            let mut state = lock(&reply.state);
            if state.closed {
                false
            } else {
                state.results.push_back((id, result));
                true
            }
        };
        if delivered {
            // The loop may already be gone (its handle dropped after the Poll).
            let _ = reply.waker.wake();
        } else {
            shared.outstanding.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Locks, ignoring poisoning: jobs run outside every lock, so a poisoned lock only
/// means a panic between two queue operations, which leave the queue consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Poll, Token};
    use std::sync::mpsc::channel;
    use std::time::{Duration, Instant};

    fn waker() -> (Poll, Arc<mio::Waker>) {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), Token(0)).unwrap());
        (poll, waker)
    }

    fn drain_until<R: Send + 'static>(
        pool: &WorkerPool<R>,
        n: usize,
    ) -> Vec<(JobId, Result<R, JobPanicked>)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut out = Vec::new();
        while out.len() < n {
            assert!(Instant::now() < deadline, "results did not arrive");
            pool.drain_results(|id, r| out.push((id, r)));
            std::thread::sleep(Duration::from_millis(1));
        }
        out
    }

    #[test]
    fn panic_message_reads_str_and_string_payloads() {
        assert_eq!(panic_message(&"boom"), "boom");
        assert_eq!(panic_message(&String::from("bang")), "bang");
        assert_eq!(panic_message(&42u32), "non-string panic payload");
    }

    #[test]
    fn job_ids_are_distinct_and_results_match() {
        let (_poll, waker) = waker();
        let pool = WorkerPool::new(2, waker).unwrap();
        let ids: Vec<JobId> = (0..10u64)
            .map(|i| pool.submit(move || i * i).unwrap())
            .collect();
        let mut got = drain_until(&pool, 10);
        got.sort_by_key(|(id, _)| *id);
        for ((id, r), (want_id, i)) in got.into_iter().zip(ids.into_iter().zip(0..10u64)) {
            assert_eq!(id, want_id);
            assert_eq!(r.unwrap(), i * i);
        }
        assert_eq!(pool.outstanding(), 0);
    }

    /// Resident memory of this process in KiB.
    #[cfg(target_os = "linux")]
    fn vm_rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_large_capacity_takes_no_memory_until_used() {
        // A bounded channel of 16 Mi places would touch ~640 MiB up front.
        let (_poll, waker) = waker();
        let before = vm_rss_kib();
        let pool = WorkerPool::<u64>::with_capacity(1, 1 << 24, waker).unwrap();
        let grown = vm_rss_kib().saturating_sub(before);
        assert!(grown < 256 * 1024, "a new pool took {grown} KiB");
        pool.submit(|| 7).unwrap();
        assert_eq!(drain_until(&pool, 1).remove(0).1.unwrap(), 7);
    }

    #[test]
    fn undrained_results_count_against_capacity() {
        let (_poll, waker) = waker();
        let pool = WorkerPool::with_capacity(1, 2, waker).unwrap();
        pool.submit(|| 1).unwrap();
        pool.submit(|| 2).unwrap();
        // Both may have finished, but their results are not drained yet.
        assert_eq!(pool.submit(|| 3), Err(PoolFull));
        assert_eq!(drain_until(&pool, 2).len(), 2);
        assert!(pool.submit(|| 4).is_ok());
    }

    #[test]
    fn drop_joins_workers_and_skips_jobs_not_started() {
        let (_poll, waker) = waker();
        let pool = WorkerPool::with_capacity(1, 8, waker).unwrap();
        let (started_tx, started_rx) = channel();
        let (release_tx, release_rx) = channel::<()>();
        let ran = Arc::new(AtomicUsize::new(0));
        pool.submit(move || {
            started_tx.send(()).unwrap();
            // Blocks until the test drops the sender.
            let _ = release_rx.recv();
        })
        .unwrap();
        for _ in 0..5 {
            let ran = Arc::clone(&ran);
            pool.submit(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        }
        started_rx.recv().unwrap();
        // Release the running job from another thread once drop has begun.
        let shared = Arc::clone(&pool.core.shared);
        let releaser = std::thread::spawn(move || {
            while !shared.shutting_down.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            drop(release_tx);
        });
        drop(pool);
        releaser.join().unwrap();
        // The queued jobs were dropped, not run (the flag was set before the running
        // job was released).
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    /// A pool of one thread and `capacity` places, and two handles on it with wakers
    /// of their own polls (kept alive alongside).
    fn two_handles<R: Send + 'static>(
        capacity: usize,
    ) -> ([Poll; 2], WorkerPool<R>, WorkerPool<R>) {
        let (poll_a, waker_a) = waker();
        let (poll_b, waker_b) = waker();
        let a = WorkerPool::with_capacity(1, capacity, waker_a).unwrap();
        let b = a.share(waker_b);
        ([poll_a, poll_b], a, b)
    }

    #[test]
    fn shared_handles_use_one_bound_and_get_their_own_results() {
        let (_polls, a, b) = two_handles(3);
        assert_eq!(a.id(), b.id());
        assert_eq!(b.threads(), 1);
        let ran_on = |tag: &'static str| move || (tag, std::thread::current().id());
        a.submit(ran_on("a")).unwrap();
        b.submit(ran_on("b")).unwrap();
        b.submit(ran_on("b")).unwrap();
        // The bound is the pool's, not the handle's.
        assert_eq!(a.submit(ran_on("a")), Err(PoolFull));
        assert_eq!(b.outstanding(), 3);
        let got_a = drain_until(&a, 1);
        let got_b = drain_until(&b, 2);
        assert!(got_a.iter().all(|(_, r)| r.as_ref().unwrap().0 == "a"));
        assert!(got_b.iter().all(|(_, r)| r.as_ref().unwrap().0 == "b"));
        // One thread ran them all.
        let thread = got_a[0].1.as_ref().unwrap().1;
        assert!(got_b.iter().all(|(_, r)| r.as_ref().unwrap().1 == thread));
        assert_eq!(a.outstanding(), 0);
        // Another pool is another pool.
        let (_poll_c, waker_c) = waker();
        let c = WorkerPool::<u8>::new(1, waker_c).unwrap();
        assert_ne!(c.id(), a.id());
    }

    #[test]
    fn dropping_a_handle_frees_the_places_of_its_results() {
        let (_polls, a, b) = two_handles(2);
        b.submit(|| 1).unwrap();
        b.submit(|| 2).unwrap();
        assert_eq!(a.submit(|| 3), Err(PoolFull));
        drop(b);
        // b's jobs were dropped or ran; either way their places come back.
        let deadline = Instant::now() + Duration::from_secs(5);
        while a.outstanding() > 0 {
            assert!(Instant::now() < deadline, "places not freed");
            std::thread::sleep(Duration::from_millis(1));
        }
        a.submit(|| 4).unwrap();
        assert_eq!(drain_until(&a, 1)[0].1.as_ref().unwrap(), &4);
    }
}
