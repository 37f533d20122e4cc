//! The pool that runs argon2: at most `workers` hashes at once, at most
//! `queue` more waiting (each at most `queue_wait`), everything else refused at
//! once. Each running hash borrows one of at most `workers` memory buffers,
//! kept between hashes (no allocation per sign-in, so the allocator never
//! fragments under bursts) and given back to the system once the pool has been
//! idle for `release_after`. So the pool's memory is at most
//! `workers × memory per hash`, whatever the load, and nothing after a quiet
//! minute.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use argon2::Block;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::StsError;

/// Why the pool did not run a hash: the service is busy; try again shortly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HashingBusy {
    /// Every worker is busy and the queue is full: refused without waiting.
    #[error("every password hashing worker is busy and the queue is full")]
    QueueFull,
    /// No worker became free within the queue's deadline.
    #[error("no password hashing worker became free in time")]
    WaitedTooLong,
}

/// How the pool is sized.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolShape {
    pub workers: usize,
    pub queue: usize,
    pub queue_wait: Duration,
    pub release_after: Duration,
    pub block_count: usize,
}

/// A place in the pool (queued or running), with the deadline to start by.
#[derive(Debug)]
pub(crate) struct Admitted {
    _permit: OwnedSemaphorePermit,
    deadline: Instant,
}

struct Buffers {
    idle: Vec<Box<[Block]>>,
    /// Buffers in existence (idle or lent out).
    held: usize,
    last_used: Instant,
    /// Whether a task will release the buffers when the pool goes quiet.
    release_scheduled: bool,
}

/// The bounded pool.
pub(crate) struct Pool {
    shape: PoolShape,
    admission: Arc<Semaphore>,
    running: Arc<Semaphore>,
    buffers: Mutex<Buffers>,
    refused: AtomicU64,
    warned_at: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// Refusals are logged at most this often (a flood must not flood the log).
const WARN_EVERY: Duration = Duration::from_secs(10);

impl Pool {
    pub(crate) fn new(shape: PoolShape) -> Arc<Self> {
        let workers = shape.workers.max(1);
        Arc::new(Self {
            shape: PoolShape { workers, ..shape },
            admission: Arc::new(Semaphore::new(workers + shape.queue)),
            running: Arc::new(Semaphore::new(workers)),
            buffers: Mutex::new(Buffers {
                idle: Vec::new(),
                held: 0,
                last_used: Instant::now(),
                release_scheduled: false,
            }),
            refused: AtomicU64::new(0),
            warned_at: Mutex::new(None),
        })
    }

    fn buffers(&self) -> MutexGuard<'_, Buffers> {
        self.buffers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hashes refused so far (queue full or waited too long).
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Hashing buffers in existence now (each `block_count` blocks).
    pub(crate) fn buffers_held(&self) -> usize {
        self.buffers().held
    }

    /// A place in the queue, or [`HashingBusy::QueueFull`] at once.
    pub(crate) fn admit(&self) -> Result<Admitted, HashingBusy> {
        match self.admission.clone().try_acquire_owned() {
            Ok(permit) => Ok(Admitted {
                _permit: permit,
                deadline: Instant::now() + self.shape.queue_wait,
            }),
            Err(_) => Err(self.refuse(HashingBusy::QueueFull)),
        }
    }

    fn refuse(&self, why: HashingBusy) -> HashingBusy {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut warned = self.warned_at.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *warned = Some(Instant::now());
            tracing::warn!(
                reason = %why,
                refused_so_far = refused,
                workers = self.shape.workers,
                queue = self.shape.queue,
                "password checks refused: the hashing pool is full (users are asked to try again)"
            );
        }
        why
    }

    /// Runs `job` on a worker with a hashing buffer, once one is free and
    /// before the admission's deadline. The places in the queue and among the
    /// workers are held until the job ends, even if the caller stops waiting:
    /// no more than `workers` hashes ever run at once.
    pub(crate) async fn run<T, F>(
        self: &Arc<Self>,
        admitted: Admitted,
        job: F,
    ) -> Result<Result<T, HashingBusy>, StsError>
    where
        T: Send + 'static,
        F: FnOnce(&mut [Block]) -> T + Send + 'static,
    {
        let worker = match tokio::time::timeout_at(admitted.deadline, self.running.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(StsError::internal("hashing pool closed")),
            Err(_) => return Ok(Err(self.refuse(HashingBusy::WaitedTooLong))),
        };
        let mut buffer = self.take_buffer();
        let pool = self.clone();
        let runtime = tokio::runtime::Handle::current();
        let handle = tokio::task::spawn_blocking(move || {
            let out = job(&mut buffer);
            pool.give_back(buffer, &runtime);
            drop(worker);
            drop(admitted);
            out
        });
        handle
            .await
            .map(Ok)
            .map_err(|e| StsError::internal(format!("hashing task: {e}")))
    }

    /// Takes every worker's place until the permit drops (tests keep the
    /// pool busy this way).
    #[cfg(feature = "testing")]
    pub(crate) async fn occupy_workers(&self) -> Result<OwnedSemaphorePermit, StsError> {
        let workers = u32::try_from(self.shape.workers).unwrap_or(u32::MAX);
        self.running
            .clone()
            .acquire_many_owned(workers)
            .await
            .map_err(|_| StsError::internal("hashing pool closed"))
    }

    fn take_buffer(&self) -> Box<[Block]> {
        let mut buffers = self.buffers();
        if let Some(buffer) = buffers.idle.pop() {
            return buffer;
        }
        buffers.held += 1;
        drop(buffers);
        vec![Block::default(); self.shape.block_count].into_boxed_slice()
    }

    fn give_back(self: &Arc<Self>, buffer: Box<[Block]>, runtime: &tokio::runtime::Handle) {
        let mut buffers = self.buffers();
        buffers.idle.push(buffer);
        buffers.last_used = Instant::now();
        if !buffers.release_scheduled {
            buffers.release_scheduled = true;
            runtime.spawn(release_when_quiet(Arc::downgrade(self)));
        }
    }

    /// Frees the idle buffers if no hash ran for `release_after`; otherwise
    /// says how much longer to wait.
    fn release_if_quiet(&self) -> Option<Duration> {
        let mut buffers = self.buffers();
        let quiet = buffers.last_used.elapsed();
        if quiet < self.shape.release_after {
            return Some(self.shape.release_after - quiet);
        }
        if buffers.idle.len() < buffers.held {
            // A hash is running: it will schedule the release again when done.
            buffers.release_scheduled = false;
            return None;
        }
        let freed = buffers.idle.len();
        buffers.idle.clear();
        buffers.held = 0;
        buffers.release_scheduled = false;
        tracing::debug!(freed, "hashing buffers given back to the system after a quiet spell");
        None
    }
}

async fn release_when_quiet(pool: Weak<Pool>) {
    let mut wait = match pool.upgrade() {
        Some(p) => p.shape.release_after,
        None => return,
    };
    loop {
        tokio::time::sleep(wait).await;
        let Some(p) = pool.upgrade() else { return };
        match p.release_if_quiet() {
            Some(more) => wait = more,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(workers: usize, queue: usize) -> PoolShape {
        PoolShape {
            workers,
            queue,
            queue_wait: Duration::from_millis(300),
            release_after: Duration::from_secs(5),
            block_count: 8,
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_places_come_back() {
        let pool = Pool::new(shape(1, 1));
        let a = pool.admit().unwrap();
        let b = pool.admit().unwrap();
        assert_eq!(pool.admit().unwrap_err(), HashingBusy::QueueFull);
        drop(a);
        let c = pool.admit().unwrap();
        drop((b, c));
        assert_eq!(pool.refused(), 1);
    }

    #[tokio::test]
    async fn no_more_than_workers_run_at_once_even_when_callers_give_up() {
        let pool = Pool::new(shape(2, 8));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
            let admitted = pool.admit().unwrap();
            tasks.push(tokio::spawn(async move {
                let job = pool.run(admitted, move |memory: &mut [Block]| {
                    assert_eq!(memory.len(), 8);
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(40)); // a slow hash, on purpose
                    running.fetch_sub(1, Ordering::SeqCst);
                });
                // Half the callers stop waiting once their job started.
                if i % 2 == 0 {
                    let _ = tokio::time::timeout(Duration::from_millis(5), job).await;
                } else {
                    let _ = job.await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // Abandoned jobs finish on their own; wait for them (bounded: each takes 40 ms).
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.admission.available_permits() < 10 {
            assert!(Instant::now() < deadline, "abandoned jobs never gave their places back");
            tokio::time::sleep(Duration::from_millis(10)).await; // poll pause
        }
        assert!(most.load(Ordering::SeqCst) <= 2, "at most two at once");
        assert!(pool.buffers_held() <= 2, "a buffer per worker at most");
    }

    #[tokio::test]
    async fn a_wait_past_the_deadline_is_refused() {
        let pool = Pool::new(shape(1, 4));
        let first = pool.admit().unwrap();
        let (started, has_started) = tokio::sync::oneshot::channel();
        let blocker = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(first, move |_: &mut [Block]| {
                    let _ = started.send(());
                    std::thread::sleep(Duration::from_millis(800)) // a slow hash holding the only worker, on purpose
                })
                .await
            })
        };
        has_started.await.unwrap();
        let second = pool.admit().unwrap();
        let refused = pool.run(second, |_: &mut [Block]| ()).await.unwrap();
        assert_eq!(refused.unwrap_err(), HashingBusy::WaitedTooLong);
        blocker.await.unwrap().unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn buffers_are_reused_then_released_when_quiet() {
        let pool = Pool::new(shape(2, 2));
        for _ in 0..3 {
            let admitted = pool.admit().unwrap();
            pool.run(admitted, |_: &mut [Block]| ()).await.unwrap().unwrap();
        }
        assert_eq!(pool.buffers_held(), 1, "one after another: one buffer, reused");
        // The clock is paused: these sleeps advance it, firing the timers due.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(pool.buffers_held(), 1, "kept while the pool may be busy again");
        tokio::time::sleep(Duration::from_secs(2)).await; // paused clock
        tokio::task::yield_now().await;
        assert_eq!(pool.buffers_held(), 0, "given back after a quiet spell");
        let admitted = pool.admit().unwrap();
        pool.run(admitted, |_: &mut [Block]| ()).await.unwrap().unwrap();
        assert_eq!(pool.buffers_held(), 1, "allocated again when needed");
    }
}
