//! Telling every app connection of a listener that attache is shutting
//! down (Redis sessions and HTTP connections alike).
//!
//! A connection waits for this beside its socket and its replies, so its
//! wait is polled every time the connection's task wakes, several times
//! per request. A
//! `watch` receiver's wait takes a lock on every poll; this one is an
//! atomic load (and a waker comparison) once registered: each session
//! registers its waker once, and the shutdown wakes them all.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::sync::watch;

/// The shutdown of one listener's sessions (on one worker).
#[derive(Default)]
pub(crate) struct SessionShutdown {
    down: AtomicBool,
    next_key: AtomicU64,
    waiting: Mutex<HashMap<u64, Waker>>,
}

impl SessionShutdown {
    /// Fires when `shutdown` turns true, or when its sender is dropped (the
    /// listener went away). Spawned on the current runtime.
    pub(crate) fn following(mut shutdown: watch::Receiver<bool>) -> Arc<Self> {
        let this = Arc::new(Self::default());
        let fire = this.clone();
        tokio::spawn(async move {
            let _ = shutdown.wait_for(|&down| down).await;
            fire.fire();
        });
        this
    }

    fn fire(&self) {
        self.down.store(true, Ordering::Release);
        let waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in waiting.into_values() {
            waker.wake();
        }
    }

    /// Whether the shutdown has fired.
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// A future that resolves once the shutdown fired.
    pub(crate) fn wait(self: &Arc<Self>) -> ShutdownWait {
        ShutdownWait {
            shutdown: self.clone(),
            registered: None,
        }
    }
}

/// Resolves once the listener shuts down; see [`SessionShutdown`].
pub(crate) struct ShutdownWait {
    shutdown: Arc<SessionShutdown>,
    /// The key and waker it is registered with.
    registered: Option<(u64, Waker)>,
}

impl Future for ShutdownWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.shutdown.down.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if this
            .registered
            .as_ref()
            .is_some_and(|(_, waker)| waker.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let key = match &this.registered {
            Some((key, _)) => *key,
            None => this.shutdown.next_key.fetch_add(1, Ordering::Relaxed),
        };
        let mut waiting = this
            .shutdown
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Checked again under the lock: a shutdown that fired since has
        // already taken the list and would never wake this waker.
        if this.shutdown.down.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        waiting.insert(key, cx.waker().clone());
        this.registered = Some((key, cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for ShutdownWait {
    fn drop(&mut self) {
        if let Some((key, _)) = self.registered.take() {
            self.shutdown
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_waiting_session_wakes_and_late_ones_resolve_at_once() {
        let (tx, rx) = watch::channel(false);
        let shutdown = SessionShutdown::following(rx);
        let waits: Vec<_> = (0..3).map(|_| tokio::spawn(shutdown.wait())).collect();
        tokio::task::yield_now().await;
        assert!(waits.iter().all(|w| !w.is_finished()));
        tx.send(true).unwrap();
        for wait in waits {
            wait.await.unwrap();
        }
        shutdown.wait().await;
        assert!(shutdown.waiting.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_dropped_sender_counts_as_shutdown() {
        let (tx, rx) = watch::channel(false);
        let shutdown = SessionShutdown::following(rx);
        let wait = tokio::spawn(shutdown.wait());
        drop(tx);
        wait.await.unwrap();
    }

    #[tokio::test]
    async fn a_dropped_wait_leaves_nothing_registered() {
        let (_tx, rx) = watch::channel(false);
        let shutdown = SessionShutdown::following(rx);
        let mut wait = Box::pin(shutdown.wait());
        let waker = Waker::noop();
        assert!(wait
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_pending());
        assert_eq!(shutdown.waiting.lock().unwrap().len(), 1);
        drop(wait);
        assert!(shutdown.waiting.lock().unwrap().is_empty());
    }
}
