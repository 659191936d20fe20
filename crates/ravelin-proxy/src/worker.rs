//! Which per-core worker a thread is, and values kept once per worker.
//!
//! With [`RuntimeModel::PerCore`](crate::RuntimeModel::PerCore) every worker thread runs its
//! own current-thread runtime. An upstream connection is driven by a task on the runtime that
//! opened it, so a pool shared by every worker hands a request from one worker to a connection
//! driven by another: two cross-thread wake-ups per request, which is the cost the per-core
//! model exists to avoid. [`PerWorker`] gives each worker its own value (its own connection
//! pool); threads that are not workers (a multi-threaded runtime, the admin listener, tests)
//! share one.

use std::cell::Cell;
use std::sync::OnceLock;

use crate::server::ServerConfig;

thread_local! {
    /// The index of the per-core worker running on this thread, if it is one.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Marks the current thread as per-core worker `index` (for the thread's lifetime).
pub(crate) fn enter(index: usize) {
    WORKER.with(|worker| worker.set(Some(index)));
}

/// The per-core worker running on this thread, if any.
pub(crate) fn current() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// One `T` per per-core worker, made on first use by that worker, and one shared by every
/// other thread.
pub(crate) struct PerWorker<T> {
    shared: T,
    /// Indexed by worker; boxed so an unused slot costs a pointer, not a `T`.
    workers: Box<[OnceLock<Box<T>>]>,
    make: Box<dyn Fn() -> T + Send + Sync>,
}

impl<T> PerWorker<T> {
    /// `make` builds each worker's value (and the shared one, now).
    pub(crate) fn new(make: impl Fn() -> T + Send + Sync + 'static) -> Self {
        let workers = (0..ServerConfig::MAX_WORKERS_LIMIT)
            .map(|_| OnceLock::new())
            .collect();
        Self {
            shared: make(),
            workers,
            make: Box::new(make),
        }
    }

    /// The value of the worker running on this thread, or the shared one.
    pub(crate) fn get(&self) -> &T {
        let Some(index) = current() else {
            return &self.shared;
        };
        // A worker index is below MAX_WORKERS_LIMIT (the server refuses more workers); a
        // slot that is missing anyway falls back to the shared value, which is correct, only
        // not per worker.
        match self.workers.get(index) {
            Some(slot) => slot.get_or_init(|| Box::new((self.make)())),
            None => &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn threads_that_are_not_workers_share_one_value() {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&made);
        let values = PerWorker::new(move || counter.fetch_add(1, Ordering::Relaxed));
        assert_eq!(*values.get(), 0);
        assert_eq!(*values.get(), 0);
        assert_eq!(made.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn each_worker_gets_its_own_value_made_once() {
        let made = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&made);
        let values = Arc::new(PerWorker::new(move || {
            counter.fetch_add(1, Ordering::Relaxed)
        }));
        let seen: Vec<(usize, usize)> = (0..3)
            .map(|index| {
                let values = Arc::clone(&values);
                std::thread::spawn(move || {
                    enter(index);
                    let first = *values.get();
                    let again = *values.get();
                    (first, again)
                })
            })
            .map(|thread| thread.join().unwrap())
            .collect();
        // The shared value was 0; each worker made its own once and kept it.
        for (first, again) in &seen {
            assert_ne!(*first, 0);
            assert_eq!(first, again);
        }
        assert_eq!(made.load(Ordering::Relaxed), 4);
        assert_eq!(*values.get(), 0, "this thread is not a worker");
    }
}
