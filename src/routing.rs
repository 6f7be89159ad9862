//! The decision: which path serves an event on a route, and which (if any) shadows it.
//!
//! [`decide`] is a pure function of one flag snapshot, the route and the user id: no I/O, no
//! clock, no randomness, so the same inputs always give the same answer and a test can say
//! exactly which user lands where.

use crate::flags::FlagSet;
use crate::paths::{PathKind, Route};

/// Basis points in 100%.
pub(crate) const BUCKETS: u32 = 10_000;

/// Why the decision came out as it did (for logs, `switchyard cohort` and the admin API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecisionReason {
    KillSwitch,
    Latched,
    PinnedLegacy,
    PinnedSsot,
    Cohort,
}

impl DecisionReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DecisionReason::KillSwitch => "kill_switch",
            DecisionReason::Latched => "latched",
            DecisionReason::PinnedLegacy => "pinned_legacy",
            DecisionReason::PinnedSsot => "pinned_ssot",
            DecisionReason::Cohort => "cohort",
        }
    }
}

/// The paths for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) primary: PathKind,
    /// The other path, computed as a dry run and compared, when shadowing is on.
    pub(crate) shadow: Option<PathKind>,
    pub(crate) reason: DecisionReason,
}

/// Decides the paths for one event of `route` addressed to `user_id`.
///
/// Precedence: the kill switch, then a route's rollback latch, then pins (legacy before SSOT),
/// then the sticky cohort. The kill switch also turns shadowing off: it is the "do nothing new"
/// button. A latch keeps shadowing as configured, so operators can watch a fix before clearing it.
pub(crate) fn decide(flags: &FlagSet, route: Route, user_id: &str) -> Decision {
    let route_flags = flags.route(route);
    let user_id = user_id.trim();
    let (primary, reason) = if flags.kill_switch.engaged {
        (PathKind::Legacy, DecisionReason::KillSwitch)
    } else if route_flags.latch.is_some() {
        (PathKind::Legacy, DecisionReason::Latched)
    } else if route_flags.pin_legacy.contains(user_id) {
        (PathKind::Legacy, DecisionReason::PinnedLegacy)
    } else if route_flags.pin_ssot.contains(user_id) {
        (PathKind::Ssot, DecisionReason::PinnedSsot)
    } else if cohort_bucket(&flags.salt, user_id) < route_flags.ssot_percent.basis_points() {
        (PathKind::Ssot, DecisionReason::Cohort)
    } else {
        (PathKind::Legacy, DecisionReason::Cohort)
    };
    let shadow = (!flags.kill_switch.engaged
        && route_flags.shadow
        && shadow_bucket(&flags.salt, user_id) < route_flags.shadow_sample_percent.basis_points())
    .then_some(match primary {
        PathKind::Legacy => PathKind::Ssot,
        PathKind::Ssot => PathKind::Legacy,
    });
    Decision {
        primary,
        shadow,
        reason,
    }
}

/// The user's sticky canary bucket in basis points: `murmur3_x86_32("{salt}:{user_id}", 0) %
/// 10000`. The same for every route, so a canary user is on SSOT everywhere at once.
pub(crate) fn cohort_bucket(salt: &str, user_id: &str) -> u32 {
    let key = format!("{salt}:{user_id}");
    murmur3_x86_32(key.as_bytes(), 0) % BUCKETS
}

/// The bucket deciding whether a user's events are shadowed, independent of the cohort bucket
/// (a different key), so the shadow sample is spread across both cohorts.
fn shadow_bucket(salt: &str, user_id: &str) -> u32 {
    let key = format!("shadow:{salt}:{user_id}");
    murmur3_x86_32(key.as_bytes(), 0) % BUCKETS
}

/// MurmurHash3, x86 32-bit variant (Austin Appleby's reference algorithm).
pub(crate) fn murmur3_x86_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mix = |mut k: u32| {
        k = k.wrapping_mul(C1);
        k = k.rotate_left(15);
        k.wrapping_mul(C2)
    };
    let mut hash = seed;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        hash ^= mix(k);
        hash = hash.rotate_left(13);
        hash = hash.wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    if !tail.is_empty() {
        let k = tail
            .iter()
            .enumerate()
            .fold(0u32, |k, (i, byte)| k | (u32::from(*byte) << (8 * i)));
        hash ^= mix(k);
    }
    // The reference hashes lengths as 32-bit; longer inputs wrap the same way it does.
    hash ^= data.len() as u32;
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85eb_ca6b);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xc2b2_ae35);
    hash ^= hash >> 16;
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_reference_vectors() {
        for (input, seed, expected) in [
            ("", 0, 0),
            ("", 1, 0x514e_28b7),
            ("", 0xffff_ffff, 0x81f1_6f39),
            ("a", 0, 0x3c25_69b2),
            ("abc", 0, 0xb3dd_93fa),
            ("hello", 0, 0x248b_fa47),
            ("Hello, world!", 1234, 0xfaf6_cdb3),
            (
                "The quick brown fox jumps over the lazy dog",
                0,
                0x2e4f_f723,
            ),
            ("switchyard:alice", 0, 0x5f35_3dcc),
        ] {
            assert_eq!(
                murmur3_x86_32(input.as_bytes(), seed),
                expected,
                "murmur3({input:?}, {seed})"
            );
        }
    }
}
