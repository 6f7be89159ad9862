//! Changes toward legacy a fleet node makes on its own while the fleet's flags cannot be
//! reached, kept until they are pushed to the fleet.
//!
//! A latch or the kill switch only ever sends traffic to legacy, which is always safe, so a node
//! that cannot reach the fleet still makes one at once (the guard's rollback above all: an
//! outage must not stop it). It is then pending: once the fleet can be reached it is applied on
//! top of whatever the fleet's set became meanwhile and wins over it. Nothing else is made
//! alone: releasing the kill switch, clearing a latch or moving a share would let the nodes
//! disagree in the unsafe direction.

use std::sync::Arc;

use super::{ChangeError, FlagStore, SharedFlags, SharedSet, SharedUnavailable, Swap, shared_set};
use crate::audit::AuditEntry;
use crate::flags::store::unix_now;
use crate::flags::{FlagSet, KillSwitch, Latch};
use crate::labels::Trigger;
use crate::mutex::lock;
use crate::route::Route;
use crate::timestamp::rfc3339;

/// A change toward legacy made on this node only, while the fleet's flags were unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingLatch {
    pub(crate) trigger: Trigger,
    pub(crate) actor: String,
    pub(crate) reason: String,
    /// Unix seconds it was made on this node.
    pub(crate) at: u64,
    /// The routes it latches.
    pub(crate) latches: Vec<(Route, Latch)>,
    /// The kill switch it engages.
    pub(crate) kill_switch: Option<KillSwitch>,
    /// What it changed on this node, for the fleet's audit entry when it seeds an empty fleet.
    pub(crate) changes: Vec<String>,
}

impl PendingLatch {
    /// The change from `current` to `new` as a pending latch, if it moves toward legacy only:
    /// routes latched, the kill switch engaged, and the ramps those end — nothing else.
    pub(crate) fn toward_legacy(
        current: &FlagSet,
        new: &FlagSet,
        trigger: Trigger,
        actor: &str,
        reason: &str,
        at: u64,
    ) -> Option<PendingLatch> {
        let latches: Vec<(Route, Latch)> = Route::ALL
            .into_iter()
            .filter_map(
                |route| match (&current.route(route).latch, &new.route(route).latch) {
                    (None, Some(latch)) => Some((route, latch.clone())),
                    _ => None,
                },
            )
            .collect();
        let kill_switch = (!current.kill_switch.engaged && new.kill_switch.engaged)
            .then(|| new.kill_switch.clone());
        if latches.is_empty() && kill_switch.is_none() {
            return None;
        }
        let pending = PendingLatch {
            trigger,
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            at,
            latches,
            kill_switch,
            changes: current.diff(new),
        };
        let mut replayed = current.clone();
        pending.apply(&mut replayed);
        replayed.same_settings(new).then_some(pending)
    }

    /// The latches in `file` (this node's flags file when it started) that the fleet's `fleet`
    /// lacks and that are newer than the fleet's last change (`fleet_at`): the fleet cannot have
    /// seen them, let alone cleared them, so they were made while it was unreachable and the
    /// node restarted before it could push them. A fleet set of unknown age recovers none:
    /// a latch an operator cleared must not come back.
    pub(crate) fn from_file(
        file: &FlagSet,
        fleet: &FlagSet,
        fleet_at: Option<u64>,
    ) -> Vec<PendingLatch> {
        let Some(fleet_at) = fleet_at else {
            return Vec::new();
        };
        Route::ALL
            .into_iter()
            .filter(|route| fleet.route(*route).latch.is_none())
            .filter_map(|route| {
                let latch = file.route(route).latch.as_ref()?;
                if latch.at <= fleet_at {
                    return None;
                }
                let mut pending = PendingLatch {
                    trigger: latch.trigger,
                    actor: latch.actor.clone(),
                    reason: latch.reason.clone(),
                    at: latch.at,
                    latches: vec![(route, latch.clone())],
                    kill_switch: None,
                    changes: Vec::new(),
                };
                // What it changes on the fleet's set, in the audit's usual words.
                let mut latched = fleet.clone();
                pending.apply(&mut latched);
                pending.changes = fleet.diff(&latched);
                Some(pending)
            })
            .collect()
    }

    /// Applies this change on top of `flags` (the fleet's, when pushed): latches the routes
    /// not latched there, engages the kill switch unless it is, and ends the ramps that stops.
    /// A latch already there is kept (it holds the route on legacy just as well). Returns
    /// whether anything changed.
    pub(crate) fn apply(&self, flags: &mut FlagSet) -> bool {
        let before = flags.clone();
        for (route, latch) in &self.latches {
            let route_flags = flags.route_mut(*route);
            if route_flags.latch.is_none() {
                route_flags.latch = Some(latch.clone());
            }
        }
        if let Some(kill_switch) = &self.kill_switch
            && !flags.kill_switch.engaged
        {
            flags.kill_switch = kill_switch.clone();
        }
        let engaged = flags.kill_switch.engaged;
        for route in Route::ALL {
            let route_flags = flags.route_mut(route);
            if engaged || route_flags.latch.is_some() {
                route_flags.ramp = None;
            }
        }
        !before.same_settings(flags)
    }

    /// The routes it latches.
    pub(crate) fn routes(&self) -> Vec<Route> {
        self.latches.iter().map(|(route, _)| *route).collect()
    }
}

impl FlagStore {
    /// With the change lock held, after `error` kept the change `current` → `new` from the
    /// fleet: lets it be made on this node alone, pending a push, if the fleet is unreachable and
    /// the change moves toward legacy only. Any other change keeps its error.
    pub(super) fn hold_for_fleet(
        &self,
        current: &FlagSet,
        new: &FlagSet,
        trigger: Trigger,
        actor: &str,
        reason: &str,
        error: ChangeError,
    ) -> Result<(), ChangeError> {
        let ChangeError::Unavailable(unavailable) = error else {
            return Err(error);
        };
        let Some(pending) =
            PendingLatch::toward_legacy(current, new, trigger, actor, reason, unix_now())
        else {
            return Err(ChangeError::Unavailable(unavailable));
        };
        let routes: Vec<&str> = pending.routes().iter().map(|r| r.as_str()).collect();
        tracing::warn!(
            trigger = trigger.as_str(),
            actor,
            ?routes,
            kill_switch = pending.kill_switch.is_some(),
            error = %unavailable,
            "the fleet's flags are unreachable: this change toward legacy is made on this node alone, pending a fleet push"
        );
        let mut queue = lock(&self.pending);
        queue.push(pending);
        self.pending_changed(&queue);
        Ok(())
    }

    /// With the change lock held: pushes the oldest pending latch onto the fleet's set `loaded`,
    /// one version past both it and this node's, and takes the result; or seeds an empty fleet
    /// with this node's flags, which hold every pending latch. Losing the race to another node's
    /// change leaves it pending for the caller's next round.
    pub(super) fn push_pending(
        &self,
        shared: &dyn SharedFlags,
        loaded: Option<SharedSet>,
    ) -> Result<(), SharedUnavailable> {
        let current = self.snapshot();
        let Some(set) = loaded else {
            return self.seed_with_pending(shared, &current);
        };
        let mut base = FlagSet::parse(&set.text, "the fleet's flags").map_err(|error| {
            SharedUnavailable(format!(
                "the fleet's flags do not parse ({error}); this node's pending latches wait"
            ))
        })?;
        base.version = set.version;
        let Some(pending) = lock(&self.pending).first().cloned() else {
            return Ok(());
        };
        let mut merged = base.clone();
        if !pending.apply(&mut merged) {
            // Another node latched the same, or our own swap was made but its answer lost.
            tracing::info!(routes = ?pending.routes(), "a pending latch is on the fleet already");
            self.pop_pending();
            return Ok(());
        }
        merged.version = base.version.max(current.version) + 1;
        let fleet_set = shared_set(&merged, pending.trigger, &pending.actor, Some(unix_now()));
        if let Swap::Stale { .. } = shared.swap(Some(base.version), &fleet_set)? {
            return Ok(());
        }
        let changes = base.diff(&merged);
        // The fleet got this latch alone; this node keeps serving (and mirroring) the latches
        // still queued behind it, so none is off between rounds or if Redis drops again.
        let mut live = merged.clone();
        for rest in lock(&self.pending).iter().skip(1) {
            rest.apply(&mut live);
        }
        let persisted = self.mirror(&live);
        let live = self.swap_in(&live, pending.trigger, &pending.actor, persisted);
        self.record_push(&pending, base.version, live.version, changes);
        self.pop_pending();
        Ok(())
    }

    /// Seeds an empty fleet (Redis restarted empty) with this node's flags, pending latches and
    /// all; each is audited as pushed.
    fn seed_with_pending(
        &self,
        shared: &dyn SharedFlags,
        current: &Arc<FlagSet>,
    ) -> Result<(), SharedUnavailable> {
        let Some(first) = lock(&self.pending).first().cloned() else {
            return Ok(());
        };
        let seed = shared_set(current, first.trigger, &first.actor, Some(unix_now()));
        if shared.swap(None, &seed)? == Swap::Done {
            let pushed = std::mem::take(&mut *lock(&self.pending));
            self.pending_changed(&[]);
            for pending in pushed {
                let changes = pending.changes.clone();
                self.record_push(&pending, 0, current.version, changes);
            }
        }
        Ok(())
    }

    /// The fleet's audit entry of a pushed latch (stamped with this node's id by the log).
    fn record_push(
        &self,
        pending: &PendingLatch,
        old_version: u64,
        version: u64,
        changes: Vec<String>,
    ) {
        let reason = format!(
            "{} (made on this node at {} while the fleet's flags were unreachable; pushed to the fleet)",
            pending.reason,
            rfc3339(pending.at)
        );
        tracing::warn!(
            trigger = pending.trigger.as_str(),
            actor = pending.actor,
            routes = ?pending.routes(),
            version,
            "pushed a latch made while the fleet's flags were unreachable; it holds on every node"
        );
        self.audit.record(AuditEntry {
            at: unix_now(),
            actor: pending.actor.clone(),
            trigger: pending.trigger,
            reason,
            old_version,
            version,
            changes,
            node: None,
        });
    }

    fn pop_pending(&self) {
        let mut queue = lock(&self.pending);
        if !queue.is_empty() {
            queue.remove(0);
        }
        self.pending_changed(&queue);
    }

    /// Shows how many changes wait for a fleet push.
    fn pending_changed(&self, queue: &[PendingLatch]) {
        self.metrics
            .flags_fleet_push_pending
            .set(queue.len() as i64);
    }

    /// On the first read of the fleet's set after [`FlagStore::share`]: queues, ahead of the
    /// rest, the latches of the file the node started from that the fleet cannot have seen
    /// ([`PendingLatch::from_file`]). An empty fleet is seeded from the live flags, latches
    /// and all, so it needs none.
    pub(super) fn recover_file_latches(&self, loaded: Option<&SharedSet>) {
        let Some(set) = loaded else {
            return;
        };
        let mut file_at_start = lock(&self.file_at_start);
        let Some(file) = file_at_start.as_ref() else {
            return;
        };
        let Ok(fleet) = FlagSet::parse(&set.text, "the fleet's flags") else {
            // Tried again once the fleet's set parses; catching up logs why it does not.
            return;
        };
        let recovered = PendingLatch::from_file(file, &fleet, set.at);
        *file_at_start = None;
        if recovered.is_empty() {
            return;
        }
        for latch in &recovered {
            tracing::warn!(
                routes = ?latch.routes(),
                trigger = latch.trigger.as_str(),
                at = rfc3339(latch.at),
                "this node's flags file holds a latch newer than the fleet's flags and missing from them (made while the fleet was unreachable, before a restart): pushing it"
            );
        }
        let mut queue = lock(&self.pending);
        queue.splice(0..0, recovered);
        self.pending_changed(&queue);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::flags::store::tests::TempDir;
    use crate::flags::{Percent, Ramp};
    use crate::metrics::Metrics;

    /// The fleet's shared flags as a Redis hash holds them, with the two things a test must
    /// control: whether they can be reached, and another node's change landing just before
    /// this node's next swap (a lost race).
    #[derive(Default)]
    struct Fleet {
        set: Mutex<Option<SharedSet>>,
        down: AtomicBool,
        /// Edits another node makes just before this node's next swap, one per swap.
        races: Mutex<Vec<Edit>>,
        swaps: AtomicUsize,
    }

    type Edit = Box<dyn FnOnce(&mut FlagSet) + Send>;

    impl Fleet {
        fn reachable(&self) -> Result<(), SharedUnavailable> {
            if self.down.load(Ordering::SeqCst) {
                return Err(SharedUnavailable("connection refused".to_owned()));
            }
            Ok(())
        }

        /// The fleet's set, parsed.
        fn flags(&self) -> FlagSet {
            let set = lock(&self.set).clone().expect("seeded");
            let mut flags = FlagSet::parse(&set.text, "fleet").unwrap();
            flags.version = set.version;
            flags
        }

        /// Another node's change, made through the fleet's compare-and-set.
        fn other_node_changes(&self, edit: impl FnOnce(&mut FlagSet)) {
            let mut flags = self.flags();
            edit(&mut flags);
            flags.version += 1;
            *lock(&self.set) = Some(shared_set(&flags, Trigger::Api, "b", Some(unix_now())));
        }
    }

    impl SharedFlags for Fleet {
        fn load(&self) -> Result<Option<SharedSet>, SharedUnavailable> {
            self.reachable()?;
            Ok(lock(&self.set).clone())
        }

        fn swap(&self, expected: Option<u64>, new: &SharedSet) -> Result<Swap, SharedUnavailable> {
            self.reachable()?;
            self.swaps.fetch_add(1, Ordering::SeqCst);
            let race = lock(&self.races).pop();
            if let Some(race) = race {
                self.other_node_changes(race);
            }
            let mut set = lock(&self.set);
            let current = set.as_ref().map(|set| set.version);
            if current != expected {
                return Ok(Swap::Stale {
                    current: current.unwrap_or(0),
                });
            }
            *set = Some(new.clone());
            Ok(Swap::Done)
        }
    }

    fn latch(reason: &str, at: u64) -> Latch {
        Latch {
            reason: reason.to_owned(),
            trigger: Trigger::Guard,
            actor: "guard".to_owned(),
            at,
        }
    }

    fn percent(value: f64) -> Percent {
        Percent::from_f64(value).unwrap()
    }

    /// The guard's rollback of `route`, as `guard::run` makes it.
    fn guard_rolls_back(store: &FlagStore, route: Route) -> Result<Arc<FlagSet>, ChangeError> {
        store.change(
            Trigger::Guard,
            "guard",
            "ssot delivery fell",
            None,
            |flags| {
                flags.route_mut(route).latch = Some(latch("ssot delivery fell", unix_now()));
                Ok(())
            },
        )
    }

    fn fleet_node(name: &str, fleet: &Arc<Fleet>) -> (TempDir, FlagStore) {
        let dir = TempDir::new(name);
        let store = FlagStore::open(&dir.0.join("flags.toml"), Arc::new(Metrics::new())).unwrap();
        store.share(Arc::clone(fleet) as Arc<dyn SharedFlags>);
        (dir, store)
    }

    #[test]
    fn a_latch_made_while_the_fleet_is_unreachable_holds_at_once_and_lands_on_the_fleets_newer_set()
    {
        let fleet = Arc::new(Fleet::default());
        let (dir, store) = fleet_node("pending-race", &fleet);
        store
            .change(Trigger::Api, "ops", "start", None, |flags| {
                flags.route_mut(Route::Broadcast).ssot_percent = percent(60.0);
                Ok(())
            })
            .unwrap();
        assert_eq!(fleet.flags().version, 1);

        fleet.down.store(true, Ordering::SeqCst);
        let latched = guard_rolls_back(&store, Route::Broadcast).unwrap();
        // Live on this node at once, mirrored and audited here; the fleet knows nothing yet.
        assert!(latched.route(Route::Broadcast).latch.is_some());
        assert_eq!(store.snapshot(), latched);
        let file = std::fs::read_to_string(dir.0.join("flags.toml")).unwrap();
        assert!(file.contains("[routes.broadcast.latch]"), "{file}");
        assert_eq!(store.audit(1)[0].trigger, Trigger::Guard);
        assert_eq!(store.pending_fleet_push().len(), 1);
        assert_eq!(store.metrics.flags_fleet_push_pending.get(), 1);
        assert_eq!(fleet.flags().route(Route::Broadcast).latch, None);
        // Nothing else is made alone, and the follower's check cannot reach the fleet either.
        let refused = store.change(Trigger::Api, "ops", "more", None, |flags| {
            flags.route_mut(Route::UserEvent).ssot_percent = percent(50.0);
            Ok(())
        });
        assert!(
            matches!(refused, Err(ChangeError::Unavailable(_))),
            "{refused:?}"
        );
        assert!(store.sync_with_fleet().is_err());
        assert_eq!(store.snapshot(), latched);

        // Meanwhile the fleet moved on: another node's changes, one of them on the same route,
        // and one more landing just before this node's first push (it loses that race).
        fleet.other_node_changes(|flags| {
            flags.route_mut(Route::UserEvent).ssot_percent = percent(30.0)
        });
        fleet.other_node_changes(|flags| {
            flags.route_mut(Route::Broadcast).ssot_percent = percent(40.0)
        });
        lock(&fleet.races).push(Box::new(|flags: &mut FlagSet| {
            flags.route_mut(Route::RouterBroadcast).shadow = true
        }));
        fleet.down.store(false, Ordering::SeqCst);
        store.sync_with_fleet().unwrap();

        let swaps = fleet.swaps.load(Ordering::SeqCst);
        assert_eq!(swaps, 4, "seed, the first change, the lost race, the push");
        let on_fleet = fleet.flags();
        assert_eq!(on_fleet.version, 5);
        let kept = on_fleet.route(Route::Broadcast).latch.as_ref().unwrap();
        assert_eq!(kept.trigger, Trigger::Guard);
        assert_eq!(on_fleet.route(Route::Broadcast).ssot_percent, percent(40.0));
        assert_eq!(on_fleet.route(Route::UserEvent).ssot_percent, percent(30.0));
        assert!(on_fleet.route(Route::RouterBroadcast).shadow);
        let set = lock(&fleet.set).clone().unwrap();
        assert_eq!((set.trigger, set.actor.as_str()), (Trigger::Guard, "guard"));
        assert_eq!(*store.snapshot(), on_fleet);
        assert!(store.pending_fleet_push().is_empty());
        assert_eq!(store.metrics.flags_fleet_push_pending.get(), 0);
        let entry = &store.audit(1)[0];
        assert_eq!(
            (entry.trigger, entry.old_version, entry.version),
            (Trigger::Guard, 4, 5)
        );
        assert!(entry.reason.contains("pushed to the fleet"), "{entry:?}");
        assert_eq!(entry.changes.len(), 4, "the latch's four keys: {entry:?}");
        // Settled: the next check takes nothing and pushes nothing.
        store.sync_with_fleet().unwrap();
        assert_eq!(fleet.swaps.load(Ordering::SeqCst), swaps);
        assert_eq!(*store.snapshot(), on_fleet);
    }

    #[test]
    fn a_fleet_restarted_empty_is_seeded_with_the_pending_latch() {
        let fleet = Arc::new(Fleet::default());
        let (_dir, store) = fleet_node("pending-seed", &fleet);
        fleet.down.store(true, Ordering::SeqCst);
        let latched = guard_rolls_back(&store, Route::UserEvent).unwrap();
        *lock(&fleet.set) = None;
        fleet.down.store(false, Ordering::SeqCst);
        store.sync_with_fleet().unwrap();
        assert_eq!(fleet.flags(), *latched);
        assert!(store.pending_fleet_push().is_empty());
        let entry = &store.audit(1)[0];
        assert_eq!(
            (entry.trigger, entry.version),
            (Trigger::Guard, latched.version)
        );
        assert!(entry.reason.contains("pushed to the fleet"), "{entry:?}");
    }

    #[test]
    fn a_latch_another_node_made_meanwhile_is_kept_and_not_pushed_again() {
        let fleet = Arc::new(Fleet::default());
        let (_dir, store) = fleet_node("pending-same", &fleet);
        fleet.down.store(true, Ordering::SeqCst);
        guard_rolls_back(&store, Route::UserEvent).unwrap();
        fleet.other_node_changes(|flags| {
            flags.route_mut(Route::UserEvent).latch = Some(latch("b saw it too", 1_800_000_000))
        });
        fleet.down.store(false, Ordering::SeqCst);
        store.sync_with_fleet().unwrap();
        assert_eq!(fleet.swaps.load(Ordering::SeqCst), 1, "only the seed");
        assert!(store.pending_fleet_push().is_empty());
        let live = store.snapshot();
        assert_eq!(
            live.route(Route::UserEvent).latch.as_ref().unwrap().reason,
            "b saw it too"
        );
    }

    /// What may be made alone while the fleet is unreachable: a step toward legacy only.
    #[test]
    fn only_changes_toward_legacy_may_be_made_alone() {
        let mut latched = FlagSet::defaults();
        latched.route_mut(Route::Broadcast).latch = Some(latch("earlier", 1_800_000_000));
        let mut engaged = FlagSet::defaults();
        engaged.kill_switch = KillSwitch {
            engaged: true,
            reason: "drill".to_owned(),
        };
        let check = |name: &str, current: &FlagSet, edit: &dyn Fn(&mut FlagSet), alone: bool| {
            let mut new = current.clone();
            edit(&mut new);
            new.settle_ramps(1_800_000_000);
            new.version += 1;
            let pending = PendingLatch::toward_legacy(current, &new, Trigger::Api, "ops", "r", 1);
            assert_eq!(pending.is_some(), alone, "{name}");
        };
        let defaults = FlagSet::defaults();
        check(
            "a latch",
            &defaults,
            &|f| f.route_mut(Route::UserEvent).latch = Some(latch("x", 1)),
            true,
        );
        check(
            "the kill switch engaged",
            &defaults,
            &|f| f.kill_switch = engaged.kill_switch.clone(),
            true,
        );
        check(
            "a latch beside another",
            &latched,
            &|f| f.route_mut(Route::UserEvent).latch = Some(latch("x", 1)),
            true,
        );
        check(
            "the kill switch released",
            &engaged,
            &|f| f.kill_switch.engaged = false,
            false,
        );
        check(
            "a latch cleared",
            &latched,
            &|f| f.route_mut(Route::Broadcast).latch = None,
            false,
        );
        check(
            "a share moved",
            &defaults,
            &|f| f.route_mut(Route::UserEvent).ssot_percent = percent(5.0),
            false,
        );
        check(
            "a latch and a share",
            &defaults,
            &|f| {
                f.route_mut(Route::UserEvent).latch = Some(latch("x", 1));
                f.route_mut(Route::Broadcast).ssot_percent = percent(5.0);
            },
            false,
        );
        check(
            "a latch replaced",
            &latched,
            &|f| f.route_mut(Route::Broadcast).latch = Some(latch("y", 2)),
            false,
        );
        // A latch ends the route's ramp in the same change: still a step toward legacy.
        let mut ramping = FlagSet::defaults();
        ramping.route_mut(Route::UserEvent).ramp =
            Some(crate::flags::Ramp::new(&[5.0, 50.0], 60, None).unwrap());
        ramping.settle_ramps(1_800_000_000);
        check(
            "a latch ending a ramp",
            &ramping,
            &|f| f.route_mut(Route::UserEvent).latch = Some(latch("x", 1)),
            true,
        );
    }

    /// A latch recovered from the file says what it changes as every audit entry does: the
    /// latch's keys, and the ramp it ends on the fleet's set.
    #[test]
    fn a_latch_recovered_from_the_file_lists_its_changes_as_the_audit_does() {
        let fleet_at = 1_800_000_000;
        let mut file = FlagSet::defaults();
        file.route_mut(Route::Broadcast).latch = Some(latch("made alone", fleet_at + 60));
        let latch_lines = [
            "routes.broadcast.latch.actor: (none) → \"guard\"",
            "routes.broadcast.latch.at: (none) → \"2027-01-15T08:01:00Z\"",
            "routes.broadcast.latch.reason: (none) → \"made alone\"",
            "routes.broadcast.latch.trigger: (none) → \"guard\"",
        ];
        let recovered = PendingLatch::from_file(&file, &FlagSet::defaults(), Some(fleet_at));
        assert_eq!(recovered.len(), 1, "{recovered:?}");
        assert_eq!(recovered[0].changes, latch_lines);
        // Where the fleet ramps the route, the latch ends the ramp, and says so.
        let mut ramping = FlagSet::defaults();
        ramping.route_mut(Route::Broadcast).ramp = Some(Ramp {
            steps: vec![percent(10.0), percent(50.0)],
            step_seconds: 60,
            at: None,
        });
        let recovered = PendingLatch::from_file(&file, &ramping, Some(fleet_at));
        let changes = &recovered[0].changes;
        let (latch_changes, ramp_changes): (Vec<&String>, Vec<&String>) = changes
            .iter()
            .partition(|line| line.starts_with("routes.broadcast.latch."));
        assert_eq!(latch_changes, latch_lines, "{changes:?}");
        assert!(!ramp_changes.is_empty(), "{changes:?}");
        for line in ramp_changes {
            assert!(
                line.starts_with("routes.broadcast.ramp.") && line.ends_with(" → (none)"),
                "{changes:?}"
            );
        }
    }

    /// A node restarted while the fleet was unreachable: its file holds a latch it made alone.
    #[test]
    fn a_latch_in_the_file_the_fleet_cannot_have_seen_is_pushed_at_start() {
        let fleet_at = 1_800_000_000;
        let check = |name: &str, latch_at: u64, set_at: Option<u64>, pushed: bool| {
            let fleet = Arc::new(Fleet::default());
            let mut on_fleet = FlagSet::defaults();
            on_fleet.version = 7;
            *lock(&fleet.set) = Some(shared_set(&on_fleet, Trigger::Api, "ops", set_at));
            let dir = TempDir::new(&format!("pending-file-{}", name.replace(' ', "-")));
            let path = dir.0.join("flags.toml");
            let mut in_file = FlagSet::defaults();
            in_file.version = 6;
            in_file.route_mut(Route::Broadcast).latch = Some(latch("made alone", latch_at));
            std::fs::write(&path, in_file.to_toml()).unwrap();
            let store = FlagStore::open(&path, Arc::new(Metrics::new())).unwrap();
            store.share(Arc::clone(&fleet) as Arc<dyn SharedFlags>);
            let live = store.snapshot();
            assert_eq!(
                *live,
                fleet.flags(),
                "{name}: the node runs the fleet's set"
            );
            let latch = live.route(Route::Broadcast).latch.as_ref();
            assert_eq!(latch.is_some(), pushed, "{name}: {live:?}");
            assert_eq!(live.version, if pushed { 8 } else { 7 }, "{name}");
            assert!(store.pending_fleet_push().is_empty(), "{name}");
        };
        check("newer than the fleet", fleet_at + 60, Some(fleet_at), true);
        check(
            "older than the fleet's last change",
            fleet_at - 60,
            Some(fleet_at),
            false,
        );
        check("the fleet's age unknown", fleet_at + 60, None, false);
    }
}
