//! `CLIENT PAUSE` as attache saw it pass (single mode).
//!
//! A paused Redis holds every command of the kind paused (writes, or all)
//! on the connection that sent it, and whatever that connection sent after
//! it. On a shared connection that would hold other apps' reads behind one
//! app's write, and a pause longer than `timeout` would fail them all. So
//! while a pause attache forwarded lasts, a write goes on a connection of
//! its own, like a blocking command, and a reply held by the pause is due
//! `timeout` after the pause ends rather than after it was sent.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// What a `CLIENT PAUSE` / `CLIENT UNPAUSE` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseChange {
    /// `CLIENT PAUSE timeout [WRITE | ALL]`.
    Begin { millis: u64, all: bool },
    /// `CLIENT UNPAUSE`.
    End,
}

/// The last pause of one upstream server, shared by its connections.
#[derive(Debug)]
pub(crate) struct PauseWindow {
    epoch: Instant,
    /// Milliseconds after `epoch` at which the pause ends, plus one; zero
    /// when no pause was ever seen.
    end: AtomicU64,
    /// `ALL` rather than `WRITE`.
    all: AtomicBool,
}

impl Default for PauseWindow {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            end: AtomicU64::new(0),
            all: AtomicBool::new(false),
        }
    }
}

impl PauseWindow {
    /// Notes a pause the server accepted, as Redis keeps it: the later end
    /// wins, the newer kind replaces the older.
    pub(crate) fn change(&self, change: PauseChange) {
        let now = self.millis_now();
        match change {
            PauseChange::Begin { millis, all } => {
                self.all.store(all, Ordering::Relaxed);
                let end = now.saturating_add(millis).saturating_add(1);
                self.end.fetch_max(end, Ordering::Relaxed);
            }
            // Ends now: what it held is due `timeout` from here.
            PauseChange::End => {
                let _ = self
                    .end
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |end| {
                        (end > now + 1).then_some(now + 1)
                    });
            }
        }
    }

    /// Whether the server holds a command now (`write`: one flagged write
    /// or may-replicate). One load while no pause was ever seen.
    pub(crate) fn holds(&self, write: bool) -> bool {
        let end = self.end.load(Ordering::Relaxed);
        end != 0 && (write || self.all.load(Ordering::Relaxed)) && self.millis_now() + 1 < end
    }

    /// When a reply the pause may have held is late: `timeout` after the
    /// pause ends. `None` when no pause was seen.
    pub(crate) fn due(&self, timeout: Duration) -> Option<Instant> {
        let end = self.end.load(Ordering::Relaxed);
        (end != 0).then(|| {
            crate::clock::after(
                self.epoch,
                Duration::from_millis(end - 1).saturating_add(timeout),
            )
        })
    }

    fn millis_now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_its_kind_until_it_ends_or_is_lifted() {
        let pause = PauseWindow::default();
        assert!(!pause.holds(true));
        assert_eq!(pause.due(Duration::from_secs(1)), None);
        pause.change(PauseChange::Begin {
            millis: 2000,
            all: false,
        });
        assert!(pause.holds(true));
        assert!(!pause.holds(false), "WRITE lets reads through");
        let due = pause.due(Duration::from_secs(1)).unwrap();
        assert_eq!(due - pause.epoch, Duration::from_secs(3));
        // A shorter pause keeps the later end, and takes the new kind.
        pause.change(PauseChange::Begin {
            millis: 10,
            all: true,
        });
        assert!(pause.holds(false));
        assert_eq!(pause.due(Duration::from_secs(1)), Some(due));
        tokio::time::advance(Duration::from_millis(500)).await;
        pause.change(PauseChange::End);
        assert!(!pause.holds(true));
        assert_eq!(
            pause.due(Duration::from_secs(1)).unwrap() - pause.epoch,
            Duration::from_millis(1500)
        );
        // An UNPAUSE with no pause running moves nothing.
        tokio::time::advance(Duration::from_secs(5)).await;
        pause.change(PauseChange::End);
        assert_eq!(
            pause.due(Duration::from_secs(1)).unwrap() - pause.epoch,
            Duration::from_millis(1500)
        );
        pause.change(PauseChange::Begin {
            millis: 100,
            all: false,
        });
        assert!(pause.holds(true));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(!pause.holds(true), "over at its end");
    }
}
