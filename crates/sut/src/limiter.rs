//! A concurrency limit that can be resized while requests hold permits.
//!
//! Both the orders service's worker pool and the gateway's upstream connection pool are such a
//! limit: a learner lowers or raises it through `/config` under load, so it must change without
//! dropping the permits in flight. Growing adds permits at once; shrinking takes free permits
//! away at once and the others as their holders return them.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The resizable limit.
pub struct Limiter {
    semaphore: Arc<Semaphore>,
    /// The limit as configured (the semaphore converges to it).
    limit: AtomicUsize,
    counts: Arc<Counts>,
    /// Serialises resizes, so two quick changes cannot interleave their arithmetic.
    resize: std::sync::Mutex<()>,
}

#[derive(Default)]
struct Counts {
    /// Permits to take out of circulation as holders return them (after a shrink).
    debt: AtomicUsize,
    held: AtomicI64,
    waiting: AtomicI64,
}

/// A held slot; the slot returns when this is dropped.
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    counts: Arc<Counts>,
    /// How long the caller queued for the slot.
    pub waited: Duration,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.held.fetch_sub(1, Ordering::SeqCst);
        if let Some(permit) = self.permit.take() {
            // Pay off a shrink: this permit leaves circulation instead of going back.
            let paid = self
                .counts
                .debt
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| d.checked_sub(1));
            if paid.is_ok() {
                permit.forget();
            }
        }
    }
}

/// One caller counted as waiting, until dropped.
struct Queued<'a>(&'a AtomicI64);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Limiter {
    /// A limit of `limit` concurrent holders.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            semaphore: Arc::new(Semaphore::new(limit)),
            limit: AtomicUsize::new(limit),
            counts: Arc::default(),
            resize: std::sync::Mutex::new(()),
        })
    }

    fn slot(&self, permit: OwnedSemaphorePermit, waited: Duration) -> Slot {
        self.counts.held.fetch_add(1, Ordering::SeqCst);
        Slot {
            permit: Some(permit),
            counts: self.counts.clone(),
            waited,
        }
    }

    /// Waits for a slot.
    pub async fn acquire(&self) -> Slot {
        let start = Instant::now();
        self.counts.waiting.fetch_add(1, Ordering::SeqCst);
        // Counted out on drop, so a caller cancelled while it waits (a client that gave up) is
        // not counted as waiting for ever.
        let queued = Queued(&self.counts.waiting);
        let permit = self.semaphore.clone().acquire_owned().await;
        drop(queued);
        match permit {
            Ok(permit) => self.slot(permit, start.elapsed()),
            // The semaphore is never closed; if it were, waiting forever is what a full pool does.
            Err(_) => std::future::pending().await,
        }
    }

    /// Takes a slot only if one is free now.
    pub fn try_acquire(&self) -> Option<Slot> {
        let permit = self.semaphore.clone().try_acquire_owned().ok()?;
        Some(self.slot(permit, Duration::ZERO))
    }

    /// The configured limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::SeqCst)
    }

    /// Callers queued for a slot now.
    pub fn waiting(&self) -> i64 {
        self.counts.waiting.load(Ordering::SeqCst)
    }

    /// Slots held now (may exceed the limit briefly after a shrink, until holders finish).
    pub fn in_use(&self) -> i64 {
        self.counts.held.load(Ordering::SeqCst)
    }

    /// Changes the limit. Growing is immediate; shrinking removes free permits now and the rest
    /// as holders return them.
    pub fn resize(&self, new_limit: usize) {
        let _guard = self.resize.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.limit.swap(new_limit, Ordering::SeqCst);
        if new_limit > old {
            // Cancel outstanding debt first; only the rest becomes new permits.
            let mut grow = new_limit - old;
            let _ = self.counts.debt.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| {
                let cancel = d.min(grow);
                grow -= cancel;
                Some(d - cancel)
            });
            self.semaphore.add_permits(grow);
        } else if new_limit < old {
            let shrink = old - new_limit;
            let forgotten = self.semaphore.forget_permits(shrink);
            self.counts.debt.fetch_add(shrink - forgotten, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shrinks_and_grows_under_load() {
        let limiter = Limiter::new(3);
        let a = limiter.acquire().await;
        let b = limiter.acquire().await;
        limiter.resize(1);
        assert!(limiter.try_acquire().is_none(), "two held, limit one: no slot");
        drop(a);
        drop(b);
        // The returned permits pay off the shrink; then exactly one slot exists.
        let one = tokio::time::timeout(Duration::from_secs(2), limiter.acquire())
            .await
            .unwrap();
        assert!(limiter.try_acquire().is_none());
        drop(one);
        limiter.resize(4);
        let held: Vec<_> = (0..4).map(|_| limiter.try_acquire().unwrap()).collect();
        assert!(limiter.try_acquire().is_none());
        assert_eq!(limiter.in_use(), 4);
        drop(held);
    }

    #[tokio::test]
    async fn a_caller_cancelled_while_waiting_is_no_longer_counted() {
        let limiter = Limiter::new(1);
        let held = limiter.acquire().await;
        // Two callers give up after waiting 50 ms (a client that went away).
        for _ in 0..2 {
            let waited = tokio::time::timeout(Duration::from_millis(50), limiter.acquire()).await;
            assert!(waited.is_err());
        }
        assert_eq!(limiter.waiting(), 0);
        drop(held);
        assert!(limiter.try_acquire().is_some());
    }

    #[test]
    fn growing_cancels_a_pending_shrink() {
        let limiter = Limiter::new(2);
        let a = limiter.try_acquire().unwrap();
        let b = limiter.try_acquire().unwrap();
        limiter.resize(1); // one permit owed
        limiter.resize(2); // back to two: nothing owed any more
        drop(a);
        drop(b);
        let held: Vec<_> = (0..2).map(|_| limiter.try_acquire().unwrap()).collect();
        assert!(limiter.try_acquire().is_none());
        assert_eq!((limiter.in_use(), limiter.limit()), (2, 2));
        drop(held);
        assert_eq!(limiter.in_use(), 0);
    }
}
