//! The hook a fleet hangs its shared flags on. A single gateway has none and keeps the file as
//! the truth; a node of a Redis fleet sets one, and then the shared set
//! is the truth: every change is a compare-and-set on its version, and the file becomes this
//! node's mirror of it (what a node starting while the shared store is away serves from).
//!
//! The calls are blocking: the store runs every change on a blocking thread already (it writes
//! and fsyncs the file), and an implementation bounds each call by its own timeouts.

use crate::labels::Trigger;

/// The fleet's flags as last written, in the text of a flags file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharedSet {
    pub(crate) version: u64,
    pub(crate) text: String,
    /// Who made the change and how, for this node's status.
    pub(crate) trigger: Trigger,
    pub(crate) actor: String,
    /// Unix seconds of the change that made the set (the seeding node's last change for a
    /// seed); `None` for a set written before the fleet recorded it. A latch in a node's file
    /// that is newer than this was made where the fleet could not see it (see
    /// `FlagStore::share`).
    pub(crate) at: Option<u64>,
}

/// What a compare-and-set did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Swap {
    Done,
    /// Another node changed the flags first; they are at `current` (0: not seeded).
    Stale {
        current: u64,
    },
}

/// The shared store cannot be reached; changes are refused until it can.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the fleet's shared flags are unavailable ({0}); no change is made while the fleet cannot agree on it — retry when the backplane is up"
)]
pub(crate) struct SharedUnavailable(pub(crate) String);

/// Where a fleet keeps its live flags.
pub(crate) trait SharedFlags: Send + Sync {
    /// The shared set, or `None` if no node has seeded it yet.
    fn load(&self) -> Result<Option<SharedSet>, SharedUnavailable>;
    /// Replaces the shared set with `new` if it is at `expected` (`None`: not seeded yet), and
    /// tells every node.
    fn swap(&self, expected: Option<u64>, new: &SharedSet) -> Result<Swap, SharedUnavailable>;
}
