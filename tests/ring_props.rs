//! Property tests of the ring's invariants (see the `ring` module doc).

use std::collections::BTreeSet;

use dynamo::ring::{Member, Ring};
use proptest::prelude::*;

const TARGET_N: usize = 3;
/// Spread is checked when at least this many members remain.
const SPREAD_MIN: usize = TARGET_N + 2;

fn counts(r: &Ring) -> Vec<usize> {
    r.ownership_counts().into_iter().map(|(_, c)| c).collect()
}

fn assert_balanced(r: &Ring) -> Result<(), TestCaseError> {
    let q = r.partition_count() as usize;
    let s = r.members().len();
    let (lo, hi) = (q / s, q.div_ceil(s));
    for (name, c) in r.ownership_counts() {
        prop_assert!(
            c >= lo && c <= hi,
            "{name} owns {c}, outside [{lo}, {hi}] (Q={q}, S={s})"
        );
    }
    prop_assert_eq!(counts(r).iter().sum::<usize>(), q);
    Ok(())
}

/// One membership change: join a new member, or remove the member at this index.
#[derive(Clone, Debug)]
enum Change {
    Join,
    Leave(usize),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![Just(Change::Join), (0usize..64).prop_map(Change::Leave)]
}

fn q_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![Just(8u32), Just(16), Just(64), Just(256)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn balance_moves_and_spread_hold_through_joins_and_leaves(
        q in q_strategy(),
        start in 1usize..20,
        changes in prop::collection::vec(change(), 0..12),
    ) {
        let members: Vec<Member> = (0..start).map(|i| Member::new(format!("m{i}"))).collect();
        let mut ring = Ring::new(q, TARGET_N, members).unwrap();
        assert_balanced(&ring)?;
        if start >= SPREAD_MIN {
            prop_assert_eq!(ring.spread_violations(), 0, "fresh ring of {} members", start);
        }
        let mut next = start;
        for c in changes {
            let before = ring.clone();
            let s = ring.members().len();
            let violations_before = ring.spread_violations();
            match c {
                Change::Join => {
                    let name = format!("m{next}");
                    next += 1;
                    let moves = ring.join(Member::new(&name)).unwrap();
                    let qs = q as usize;
                    // Exactly floor(Q/(S+1)) move, never more than ceil(Q/(S+1)).
                    prop_assert_eq!(moves.len(), qs / (s + 1));
                    prop_assert!(moves.len() <= qs.div_ceil(s + 1));
                    prop_assert!(moves.iter().all(|t| t.to == name), "a move not to the newcomer");
                    prop_assert_eq!(before.diff(&ring), moves);
                    if s + 1 >= SPREAD_MIN {
                        prop_assert!(ring.spread_violations() <= violations_before,
                            "join raised spread violations {} -> {}", violations_before, ring.spread_violations());
                    }
                }
                Change::Leave(i) => {
                    if s == 1 { continue; }
                    let name = ring.members()[i % s].name.clone();
                    let owned = ring.partitions_of(&name);
                    let moves = ring.leave(&name).unwrap();
                    // Every partition of the leaver moves, to a remaining member ...
                    let from_leaver: Vec<u32> = moves.iter().filter(|t| t.from == name).map(|t| t.partition).collect();
                    prop_assert_eq!(&from_leaver, &owned, "every partition of the leaver moves");
                    prop_assert!(moves.iter().all(|t| t.to != name));
                    // ... and spread repair swaps at most one pair per such partition.
                    prop_assert!(moves.len() <= 3 * owned.len(),
                        "{} moves for a leaver of {} partitions", moves.len(), owned.len());
                    prop_assert_eq!(before.diff(&ring), moves);
                    if s > SPREAD_MIN {
                        prop_assert!(ring.spread_violations() <= violations_before,
                            "leave raised spread violations {} -> {}", violations_before, ring.spread_violations());
                    }
                }
            }
            assert_balanced(&ring)?;
            prop_assert!(ring.version() > before.version());
        }
    }

    #[test]
    fn preference_lists_hold_min_n_s_distinct_members(
        q in q_strategy(),
        s in 1usize..12,
        n in 1usize..6,
    ) {
        let members: Vec<Member> = (0..s).map(|i| Member::new(format!("m{i}"))).collect();
        let ring = Ring::new(q, TARGET_N, members).unwrap();
        for p in 0..q {
            let pl = ring.preference_list(p, n);
            let distinct: BTreeSet<&str> = pl.iter().map(|m| m.name.as_str()).collect();
            prop_assert_eq!(pl.len(), n.min(s));
            prop_assert_eq!(distinct.len(), n.min(s));
            // Without zones the list starts at the partition's owner.
            prop_assert_eq!(&pl[0].name, &ring.owner(p).name);
            // The walk lists every member once, preference list first.
            let walk = ring.walk(p, n);
            prop_assert_eq!(walk.len(), s);
            prop_assert_eq!(&walk[..pl.len()], &pl[..]);
        }
    }

    #[test]
    fn zones_are_distinct_whenever_enough_zones_exist(
        q in q_strategy(),
        zone_of in prop::collection::vec(0usize..4, 1..10),
        n in 1usize..5,
    ) {
        let members: Vec<Member> = zone_of
            .iter()
            .enumerate()
            .map(|(i, z)| Member::in_zone(format!("m{i}"), format!("z{z}")))
            .collect();
        let zones: BTreeSet<usize> = zone_of.iter().copied().collect();
        let ring = Ring::new(q, TARGET_N, members).unwrap();
        for p in 0..q {
            let pl = ring.preference_list(p, n);
            prop_assert_eq!(pl.len(), n.min(zone_of.len()));
            let got: BTreeSet<&str> = pl.iter().filter_map(|m| m.zone.as_deref()).collect();
            prop_assert_eq!(got.len(), n.min(zones.len()),
                "partition {}: zones {:?} of {} available", p, got, zones.len());
        }
    }

    #[test]
    fn serialised_rings_round_trip(q in q_strategy(), s in 1usize..8, joins in 0usize..3) {
        let members: Vec<Member> = (0..s).map(|i| Member::new(format!("m{i}"))).collect();
        let mut ring = Ring::new(q, TARGET_N, members).unwrap();
        for j in 0..joins {
            ring.join(Member::in_zone(format!("late{j}"), "z")).unwrap();
        }
        let back = Ring::from_json(&ring.to_json()).unwrap();
        prop_assert_eq!(back, ring);
    }
}
