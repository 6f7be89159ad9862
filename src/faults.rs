//! Fault injection for drills and tests (README.md, Endpoints, `/admin/faults`): make one path of one route fail a share
//! of its deliveries, or answer late, so the guard, the dashboards and the alerts can be
//! exercised for real. Off unless the process config sets `admin.allow_fault_injection`.
//!
//! Drops are deterministic, not random: with ratio r, frame n is dropped when ⌊(n+1)·r⌋ > ⌊n·r⌋,
//! so exactly the asked share fails however few frames there are. A dropped frame is counted as
//! `write_error` and is not among the path's successful sends.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::route::{Origin, PathKind, Route};

/// One active fault.
#[derive(Debug)]
pub(crate) struct Fault {
    pub(crate) drop_ratio: f64,
    pub(crate) delay: Duration,
    frames: AtomicU64,
}

impl Fault {
    pub(crate) fn new(drop_ratio: f64, delay: Duration) -> Fault {
        Fault {
            drop_ratio,
            delay,
            frames: AtomicU64::new(0),
        }
    }
}

/// The active faults, by route and path.
#[derive(Default)]
pub(crate) struct Faults {
    /// Lets the hot path skip the lock when no fault is set.
    any: AtomicBool,
    active: RwLock<BTreeMap<(Route, PathKind), Arc<Fault>>>,
}

impl Faults {
    pub(crate) fn set(&self, route: Route, path: PathKind, fault: Fault) {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        active.insert((route, path), Arc::new(fault));
        self.any.store(true, Ordering::Release);
    }

    pub(crate) fn clear(&self) {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        active.clear();
        self.any.store(false, Ordering::Release);
    }

    pub(crate) fn list(&self) -> Vec<(Route, PathKind, f64, Duration)> {
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        active
            .iter()
            .map(|((route, path), fault)| (*route, *path, fault.drop_ratio, fault.delay))
            .collect()
    }

    fn get(&self, origin: Origin) -> Option<Arc<Fault>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let active = self.active.read().unwrap_or_else(|e| e.into_inner());
        active.get(&(origin.route, origin.path)).cloned()
    }

    /// Whether the next frame of `origin` is to fail.
    pub(crate) fn drops(&self, origin: Origin) -> bool {
        let Some(fault) = self.get(origin) else {
            return false;
        };
        if fault.drop_ratio <= 0.0 {
            return false;
        }
        let n = fault.frames.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * fault.drop_ratio).floor() > (n * fault.drop_ratio).floor()
    }

    /// The delay to add before serving an event of `origin`.
    pub(crate) fn delay(&self, origin: Origin) -> Option<Duration> {
        self.get(origin)
            .map(|fault| fault.delay)
            .filter(|delay| !delay.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_exactly_the_share_asked() {
        let faults = Faults::default();
        let origin = Origin {
            route: Route::RouterBroadcast,
            path: PathKind::Ssot,
        };
        assert!(!faults.drops(origin));
        faults.set(origin.route, origin.path, Fault::new(0.2, Duration::ZERO));
        let dropped = (0..1000).filter(|_| faults.drops(origin)).count();
        assert_eq!(dropped, 200);
        let other = Origin {
            route: Route::RouterBroadcast,
            path: PathKind::Legacy,
        };
        assert!((0..100).all(|_| !faults.drops(other)));
        faults.clear();
        assert!(!faults.drops(origin));
    }
}
