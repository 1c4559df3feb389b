//! A concurrency limit that can be resized while requests hold permits.
//!
//! Both the orders service's worker pool and the gateway's upstream connection pool are such a
//! limit: a learner lowers or raises it through `/config` under load, so it must change without
//! dropping the permits in flight. Growing adds permits at once; shrinking takes permits away
//! as they come back.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

/// The resizable limit.
pub struct Limiter {
    semaphore: Arc<Semaphore>,
    /// The limit as configured (the semaphore converges to it).
    limit: AtomicUsize,
    /// Serialises resizes, so two quick changes cannot interleave their arithmetic.
    resize: Mutex<()>,
    waiting: AtomicI64,
}

/// A held slot; the slot returns when this is dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    /// How long the caller queued for the slot.
    pub waited: Duration,
}

impl Limiter {
    /// A limit of `limit` concurrent holders.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            semaphore: Arc::new(Semaphore::new(limit)),
            limit: AtomicUsize::new(limit),
            resize: Mutex::new(()),
            waiting: AtomicI64::new(0),
        })
    }

    /// Waits for a slot.
    pub async fn acquire(&self) -> Slot {
        let start = Instant::now();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = self.semaphore.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        match permit {
            Ok(permit) => Slot {
                _permit: permit,
                waited: start.elapsed(),
            },
            // The semaphore is never closed; if it were, waiting forever is what a full pool does.
            Err(_) => std::future::pending().await,
        }
    }

    /// Takes a slot only if one is free now.
    pub fn try_acquire(&self) -> Option<Slot> {
        self.semaphore.clone().try_acquire_owned().ok().map(|permit| Slot {
            _permit: permit,
            waited: Duration::ZERO,
        })
    }

    /// The configured limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Callers queued for a slot now.
    pub fn waiting(&self) -> i64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Slots held now (may exceed the limit briefly after a shrink, until holders finish).
    pub fn in_use(&self) -> i64 {
        let limit = self.limit() as i64;
        (limit - self.semaphore.available_permits() as i64).max(0)
    }

    /// Changes the limit. Growing is immediate; shrinking removes free permits now and the rest
    /// as holders release them.
    pub async fn resize(self: &Arc<Self>, new_limit: usize) {
        let _guard = self.resize.lock().await;
        let old = self.limit.swap(new_limit, Ordering::SeqCst);
        if new_limit > old {
            self.semaphore.add_permits(new_limit - old);
        } else if new_limit < old {
            let mut remaining = old - new_limit;
            remaining -= self.semaphore.forget_permits(remaining);
            if remaining > 0 {
                let semaphore = self.semaphore.clone();
                tokio::spawn(async move {
                    if let Ok(permits) = semaphore.acquire_many_owned(remaining as u32).await {
                        permits.forget();
                    }
                });
            }
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
        limiter.resize(1).await;
        assert!(limiter.try_acquire().is_none(), "two held, limit one: no slot");
        drop(a);
        drop(b);
        // The background shrink takes the returned permits; then exactly one slot exists.
        let one = tokio::time::timeout(Duration::from_secs(2), limiter.acquire())
            .await
            .unwrap();
        assert!(limiter.try_acquire().is_none());
        drop(one);
        limiter.resize(4).await;
        let held: Vec<_> = (0..4).map(|_| limiter.try_acquire().unwrap()).collect();
        assert!(limiter.try_acquire().is_none());
        assert_eq!(limiter.in_use(), 4);
        drop(held);
    }
}
