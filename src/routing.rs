//! The decision: which path serves an event on a route, and which (if any) shadows it.
//!
//! [`decide`] is a pure function of one flag snapshot, the route and the user id: no I/O, no
//! clock, no randomness, so the same inputs always give the same answer and a test can say
//! exactly which user lands where.

use crate::flags::{FlagSet, Percent};
pub(crate) use crate::route::{Decision, DecisionReason};
use crate::route::{PathKind, Route};

/// Basis points in 100%.
pub(crate) const BUCKETS: u32 = 10_000;

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

/// The primary path [`decide`] gives a user outside every pin and outside the canary cohort:
/// the path named on a response refused before its user was known. SSOT only when neither the
/// kill switch nor a latch holds the route and the route is at 100%.
pub(crate) fn default_path(flags: &FlagSet, route: Route) -> PathKind {
    let route_flags = flags.route(route);
    if !flags.kill_switch.engaged
        && route_flags.latch.is_none()
        && route_flags.ssot_percent == Percent::HUNDRED
    {
        PathKind::Ssot
    } else {
        PathKind::Legacy
    }
}

/// The user's sticky canary bucket in basis points: `murmur3_x86_32("{salt}:{user_id}", 0) %
/// 10000`. The same for every route, so a canary user is on SSOT everywhere at once.
pub(crate) fn cohort_bucket(salt: &str, user_id: &str) -> u32 {
    hash_key(&[salt.as_bytes(), b":", user_id.as_bytes()]) % BUCKETS
}

/// The bucket deciding whether a user's events are shadowed, independent of the cohort bucket
/// (a different key), so the shadow sample is spread across both cohorts.
fn shadow_bucket(salt: &str, user_id: &str) -> u32 {
    hash_key(&[b"shadow:", salt.as_bytes(), b":", user_id.as_bytes()]) % BUCKETS
}

/// murmur3 (seed 0) of the parts joined, without allocating for ordinary key lengths: the
/// decision runs for every event.
fn hash_key(parts: &[&[u8]]) -> u32 {
    const STACK: usize = 256;
    let len: usize = parts.iter().map(|part| part.len()).sum();
    if len > STACK {
        return murmur3_x86_32(&parts.concat(), 0);
    }
    let mut buffer = [0u8; STACK];
    let mut at = 0;
    for part in parts {
        buffer[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    murmur3_x86_32(&buffer[..len], 0)
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
    fn keys_hash_the_same_whatever_their_length() {
        for user_id in ["alice", &"u".repeat(300)] {
            let key = format!("switchyard:{user_id}");
            assert_eq!(
                cohort_bucket("switchyard", user_id),
                murmur3_x86_32(key.as_bytes(), 0) % BUCKETS
            );
        }
    }

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

    /// Properties of [`decide`] and the cohort buckets, over random salts, users and flags.
    mod properties {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, RngSeed};

        use super::super::*;
        use crate::flags::{Latch, Percent};
        use crate::labels::Trigger;

        /// Few cases, so the suite stays fast in debug builds. Failures are not written to a
        /// `proptest-regressions` file beside the source: the failing input is in the message.
        fn cases(n: u32) -> Config {
            Config {
                failure_persistence: None,
                ..Config::with_cases(n)
            }
        }

        fn salt() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9_-]{1,24}"
        }

        /// Ids as producers send them: no surrounding whitespace (which [`decide`] trims).
        fn user_id() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9._:@|-]{1,40}"
        }

        /// Any percentage with two decimals, 0.00..=100.00.
        fn percent() -> impl Strategy<Value = Percent> {
            (0u32..=BUCKETS).prop_map(basis_points)
        }

        fn basis_points(n: u32) -> Percent {
            Percent::from_f64(f64::from(n) / 100.0).expect("0..=10000 basis points is a percent")
        }

        fn route() -> impl Strategy<Value = Route> {
            prop::sample::select(Route::ALL.to_vec())
        }

        fn other(path: PathKind) -> PathKind {
            match path {
                PathKind::Legacy => PathKind::Ssot,
                PathKind::Ssot => PathKind::Legacy,
            }
        }

        /// The defaults with `salt` and every route at `percent`.
        fn flag_set(salt: &str, percent: Percent) -> FlagSet {
            let mut flags = FlagSet::defaults();
            flags.salt = salt.to_owned();
            for route in Route::ALL {
                flags.route_mut(route).ssot_percent = percent;
            }
            flags
        }

        fn latch() -> Latch {
            Latch {
                reason: "property test".to_owned(),
                trigger: Trigger::Api,
                actor: "ops".to_owned(),
                at: 0,
            }
        }

        proptest! {
            #![proptest_config(cases(64))]

            /// The bucket is the documented hash, in range, and the same on every call; so is
            /// the decision.
            #[test]
            fn the_bucket_is_deterministic(
                salt in salt(), user in user_id(), percent in percent(), route in route()
            ) {
                let bucket = cohort_bucket(&salt, &user);
                prop_assert!(bucket < BUCKETS);
                prop_assert_eq!(bucket, cohort_bucket(&salt, &user));
                prop_assert_eq!(
                    bucket,
                    murmur3_x86_32(format!("{salt}:{user}").as_bytes(), 0) % 10_000
                );
                let flags = flag_set(&salt, percent);
                prop_assert_eq!(decide(&flags, route, &user), decide(&flags.clone(), route, &user));
            }

            /// Raising the percentage never moves a user from SSOT back to legacy, and a user is
            /// on SSOT exactly when the bucket is below the percentage in basis points.
            #[test]
            fn raising_the_percentage_never_moves_a_user_back_to_legacy(
                salt in salt(), user in user_id(), a in percent(), b in percent(), route in route()
            ) {
                let (low, high) = (a.min(b), a.max(b));
                let at_low = decide(&flag_set(&salt, low), route, &user);
                let at_high = decide(&flag_set(&salt, high), route, &user);
                prop_assert_eq!(at_low.reason, DecisionReason::Cohort);
                prop_assert_eq!(
                    at_low.primary == PathKind::Ssot,
                    cohort_bucket(&salt, &user) < low.basis_points()
                );
                if at_low.primary == PathKind::Ssot {
                    prop_assert_eq!(at_high.primary, PathKind::Ssot, "{} → {}", low.as_f64(), high.as_f64());
                }
            }

            /// The boundary is exclusive: at exactly the user's bucket the user is still on
            /// legacy, one basis point more puts them on SSOT (so 0% is nobody and 100% everyone).
            #[test]
            fn a_user_joins_ssot_one_basis_point_above_their_bucket(
                salt in salt(), user in user_id(), route in route()
            ) {
                let bucket = cohort_bucket(&salt, &user);
                let at_bucket = decide(&flag_set(&salt, basis_points(bucket)), route, &user);
                let above = decide(&flag_set(&salt, basis_points(bucket + 1)), route, &user);
                prop_assert_eq!(at_bucket.primary, PathKind::Legacy, "bucket {}", bucket);
                prop_assert_eq!(above.primary, PathKind::Ssot, "bucket {}", bucket);
                prop_assert_eq!(
                    decide(&flag_set(&salt, Percent::ZERO), route, &user).primary,
                    PathKind::Legacy
                );
                prop_assert_eq!(
                    decide(&flag_set(&salt, Percent::HUNDRED), route, &user).primary,
                    PathKind::Ssot
                );
            }

            /// One salt for all routes: a user's bucket, and so the answer at a given percentage,
            /// does not depend on the route, whatever the other routes are set to.
            #[test]
            fn the_same_salt_gives_a_user_the_same_bucket_on_every_route(
                salt in salt(),
                user in user_id(),
                percents in prop::array::uniform4(percent()),
            ) {
                let bucket = cohort_bucket(&salt, &user);
                let mut flags = FlagSet::defaults();
                flags.salt = salt.clone();
                for (route, percent) in Route::ALL.into_iter().zip(percents) {
                    flags.route_mut(route).ssot_percent = percent;
                }
                for (route, percent) in Route::ALL.into_iter().zip(percents) {
                    let expected = if bucket < percent.basis_points() {
                        PathKind::Ssot
                    } else {
                        PathKind::Legacy
                    };
                    prop_assert_eq!(decide(&flags, route, &user).primary, expected, "{:?}", route);
                }
                let same_everywhere = flag_set(&salt, percents[0]);
                let first = decide(&same_everywhere, Route::ALL[0], &user).primary;
                for route in Route::ALL {
                    prop_assert_eq!(decide(&same_everywhere, route, &user).primary, first);
                }
            }

            /// Pins beat the cohort, and a user pinned both ways is on legacy (the documented
            /// precedence: pins, legacy before SSOT, then the cohort).
            #[test]
            fn pins_beat_the_cohort_and_legacy_pins_win(
                salt in salt(), user in user_id(), percent in percent(), route in route()
            ) {
                let mut flags = flag_set(&salt, Percent::ZERO);
                flags.route_mut(route).pin_ssot.insert(user.clone());
                let decision = decide(&flags, route, &user);
                prop_assert_eq!(decision.primary, PathKind::Ssot);
                prop_assert_eq!(decision.reason, DecisionReason::PinnedSsot);

                let mut flags = flag_set(&salt, Percent::HUNDRED);
                flags.route_mut(route).pin_legacy.insert(user.clone());
                let decision = decide(&flags, route, &user);
                prop_assert_eq!(decision.primary, PathKind::Legacy);
                prop_assert_eq!(decision.reason, DecisionReason::PinnedLegacy);

                // Not a state the file or the API accepts, but decide must still be safe.
                let mut flags = flag_set(&salt, percent);
                flags.route_mut(route).pin_ssot.insert(user.clone());
                flags.route_mut(route).pin_legacy.insert(user.clone());
                let decision = decide(&flags, route, &user);
                prop_assert_eq!(decision.primary, PathKind::Legacy);
                prop_assert_eq!(decision.reason, DecisionReason::PinnedLegacy);

                // A pin on one route says nothing about the others.
                let mut flags = flag_set(&salt, Percent::ZERO);
                flags.route_mut(route).pin_ssot.insert(user.clone());
                for other_route in Route::ALL.into_iter().filter(|r| *r != route) {
                    prop_assert_eq!(decide(&flags, other_route, &user).primary, PathKind::Legacy);
                }
            }

            /// The kill switch sends every user of every route to legacy, pins and latches
            /// included, and turns shadowing off.
            #[test]
            fn the_kill_switch_sends_everyone_to_legacy_without_shadow(
                salt in salt(),
                user in user_id(),
                percent in percent(),
                pin in prop::sample::select(vec!["none", "ssot", "legacy"]),
                latched in any::<bool>(),
            ) {
                let mut flags = flag_set(&salt, percent);
                flags.kill_switch.engaged = true;
                for route in Route::ALL {
                    let route_flags = flags.route_mut(route);
                    route_flags.shadow = true;
                    route_flags.shadow_sample_percent = Percent::HUNDRED;
                    match pin {
                        "ssot" => route_flags.pin_ssot.insert(user.clone()),
                        "legacy" => route_flags.pin_legacy.insert(user.clone()),
                        _ => false,
                    };
                    if latched {
                        route_flags.latch = Some(latch());
                    }
                }
                for route in Route::ALL {
                    prop_assert_eq!(
                        decide(&flags, route, &user),
                        Decision {
                            primary: PathKind::Legacy,
                            shadow: None,
                            reason: DecisionReason::KillSwitch,
                        },
                        "{:?}", route
                    );
                }
            }

            /// A latch sends its route to legacy, pinned users included, but keeps shadowing as
            /// configured; the other routes are untouched.
            #[test]
            fn a_latch_sends_its_route_to_legacy_and_keeps_shadow(
                salt in salt(),
                user in user_id(),
                percent in percent(),
                route in route(),
                pinned_ssot in any::<bool>(),
            ) {
                let mut flags = flag_set(&salt, percent);
                for route in Route::ALL {
                    flags.route_mut(route).shadow = true;
                    flags.route_mut(route).shadow_sample_percent = Percent::HUNDRED;
                }
                let unlatched = flags.clone();
                if pinned_ssot {
                    flags.route_mut(route).pin_ssot.insert(user.clone());
                }
                flags.route_mut(route).latch = Some(latch());
                prop_assert_eq!(
                    decide(&flags, route, &user),
                    Decision {
                        primary: PathKind::Legacy,
                        shadow: Some(PathKind::Ssot),
                        reason: DecisionReason::Latched,
                    }
                );
                for other_route in Route::ALL.into_iter().filter(|r| *r != route) {
                    let decision = decide(&flags, other_route, &user);
                    prop_assert_eq!(decision, decide(&unlatched, other_route, &user));
                    prop_assert_eq!(decision.reason, DecisionReason::Cohort);
                    prop_assert_eq!(decision.shadow, Some(other(decision.primary)));
                }
            }

            /// [`default_path`] is what [`decide`] gives a user outside every pin and the
            /// cohort, whatever the kill switch, the latch and the percentage say; other users
            /// are pinned.
            #[test]
            fn the_default_path_agrees_with_decide_outside_pins_and_cohort(
                salt in salt(),
                user in user_id(),
                percent in prop_oneof![Just(Percent::HUNDRED), Just(Percent::ZERO), percent()],
                route in route(),
                killed in any::<bool>(),
                latched in any::<bool>(),
            ) {
                prop_assume!(
                    percent == Percent::HUNDRED
                        || cohort_bucket(&salt, &user) >= percent.basis_points()
                );
                let mut flags = flag_set(&salt, percent);
                flags.kill_switch.engaged = killed;
                let route_flags = flags.route_mut(route);
                route_flags.pin_ssot.insert(format!("{user}-ssot"));
                route_flags.pin_legacy.insert(format!("{user}-legacy"));
                if latched {
                    route_flags.latch = Some(latch());
                }
                prop_assert_eq!(default_path(&flags, route), decide(&flags, route, &user).primary);
            }
        }

        proptest! {
            // Heavier (10,000 users a case), so fewer cases; and a fixed seed, because a
            // ±1.5-point band around a binomial share is about three standard deviations at
            // 50%: with fresh seeds it would fail about one run in a few hundred.
            #![proptest_config(Config {
                rng_seed: RngSeed::Fixed(0x5717_c4ad),
                ..cases(8)
            })]

            /// Over 10,000 users the share on SSOT is within 1.5 points of the target.
            #[test]
            fn the_ssot_share_is_close_to_the_target(salt in salt(), target in percent()) {
                const USERS: u32 = 10_000;
                let flags = flag_set(&salt, target);
                let on_ssot = (0..USERS)
                    .filter(|n| {
                        decide(&flags, Route::RouterBroadcast, &format!("user-{n}")).primary
                            == PathKind::Ssot
                    })
                    .count();
                let share = on_ssot as f64 * 100.0 / f64::from(USERS);
                prop_assert!(
                    (share - target.as_f64()).abs() <= 1.5,
                    "salt {:?}: {}% on SSOT for a target of {}%",
                    salt,
                    share,
                    target.as_f64()
                );
            }
        }
    }
}
