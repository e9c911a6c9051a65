//! Property tests of the membership history (`dynamo::membership::history`): any
//! permutation and duplication of the same changes gives the same ring, byte for byte,
//! and nodes that issue changes concurrently converge once they have merged.

use dynamo::membership::{ChangeKind, History, HistoryOrder};
use dynamo::node::Topology;
use dynamo::ring::Member;
use proptest::prelude::*;

/// One step of a simulated cluster of admin nodes: node `at` issues `kind`, or two
/// nodes gossip.
#[derive(Clone, Debug)]
enum Step {
    Issue { at: usize, kind: ChangeKind },
    Gossip { from: usize, to: usize },
}

fn name(i: u8) -> String {
    format!("n{i}")
}

fn step() -> impl Strategy<Value = Step> {
    let kind = prop_oneof![
        (0u8..12).prop_map(|i| ChangeKind::Join {
            member: Member::new(name(i))
        }),
        (0u8..12).prop_map(|i| ChangeKind::Leave { name: name(i) }),
        (0u8..12).prop_map(|i| ChangeKind::Remove { name: name(i) }),
        (0u8..12, 0u8..12).prop_map(|(a, b)| ChangeKind::Replace {
            old: name(a),
            new: Member::new(name(b)),
        }),
        (0u8..12, prop::option::of(0u8..3)).prop_map(|(i, z)| ChangeKind::SetZone {
            name: name(i),
            zone: z.map(|z| format!("z{z}")),
        }),
    ];
    prop_oneof![
        3 => (0usize..3, kind).prop_map(|(at, kind)| Step::Issue { at, kind }),
        2 => (0usize..3, 0usize..3).prop_map(|(from, to)| Step::Gossip { from, to }),
    ]
}

/// Runs the steps on three admin nodes that start from the same created cluster;
/// returns their histories.
fn simulate(partitions: u32, steps: &[Step]) -> Vec<History> {
    let base = History::created(
        partitions,
        3,
        (0..3).map(|i| Member::new(name(i))).collect(),
    );
    let mut nodes = vec![base.clone(), base.clone(), base];
    for s in steps {
        match s {
            Step::Issue { at, kind } => {
                nodes[*at].issue(&format!("admin-{at}"), kind.clone());
            }
            Step::Gossip { from, to } => {
                let src = nodes[*from].clone();
                let (_, errors) = nodes[*to].merge(&src);
                assert!(errors.is_empty(), "{errors:?}");
            }
        }
    }
    nodes
}

fn union(nodes: &[History]) -> History {
    let mut all = History::new();
    for n in nodes {
        all.merge(n);
    }
    all
}

/// Who records the next step as done: its receivers, or when it moves no replica, one
/// member (any member's record does).
fn settlers(t: &Topology) -> Vec<String> {
    if t.next_receivers().is_empty() {
        vec![t.ring().members()[0].name.clone()]
    } else {
        t.next_receivers().iter().cloned().collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_order_and_duplication_gives_the_same_ring(
        q in prop::sample::select(vec![8u32, 16, 64]),
        steps in prop::collection::vec(step(), 0..40),
        seed in any::<u64>(),
        settles in 0usize..6,
    ) {
        let mut all = union(&simulate(q, &steps));
        // Receivers settle the first few steps, as their transfers would.
        for _ in 0..settles {
            let t = Topology::replay(all.clone(), &[3]).unwrap();
            if t.next_step().is_none() {
                break;
            }
            for r in settlers(&t) {
                all.issue(&format!("{r}-node"), t.settlement(&r).unwrap());
            }
        }
        let changes: Vec<_> = all.changes().cloned().collect();
        // Shuffle deterministically from the seed, and repeat some changes.
        let mut order: Vec<usize> = (0..changes.len()).collect();
        let mut s = seed | 1;
        for i in (1..order.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            order.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let mut shuffled = History::new();
        for (k, &i) in order.iter().enumerate() {
            shuffled.insert(changes[i].clone()).unwrap();
            if k % 3 == 0 {
                // A duplicate delivery changes nothing.
                prop_assert_eq!(shuffled.insert(changes[i].clone()), Ok(false));
            }
        }
        prop_assert_eq!(shuffled.compare(&all), HistoryOrder::Same);
        prop_assert_eq!(shuffled.digest(), all.digest());
        let a = all.replay().unwrap();
        let b = shuffled.replay().unwrap();
        prop_assert_eq!(a.ring.to_json(), b.ring.to_json());
        prop_assert_eq!(a.skipped, b.skipped);
        // The serving ring and step, with transfers settled or not, are the same too.
        let ta = Topology::replay(all.clone(), &[3]).unwrap();
        let tb = Topology::replay(shuffled, &[3]).unwrap();
        prop_assert_eq!(ta.serving_step(), tb.serving_step());
        prop_assert_eq!(ta.ring().to_json(), tb.ring().to_json());
        prop_assert_eq!(ta.target().to_json(), a.ring.to_json());
    }

    #[test]
    fn concurrent_admins_converge_after_gossip(
        steps in prop::collection::vec(step(), 0..40),
    ) {
        let mut nodes = simulate(16, &steps);
        // Everyone gossips with everyone once more: all hold the union.
        for to in 0..nodes.len() {
            for from in 0..nodes.len() {
                let src = nodes[from].clone();
                nodes[to].merge(&src);
            }
        }
        let rings: Vec<String> = nodes.iter().map(|h| h.replay().unwrap().ring.to_json()).collect();
        prop_assert!(rings.windows(2).all(|w| w[0] == w[1]), "rings differ");
        // The ring keeps its invariants: at least one member, every partition owned
        // by a member.
        let ring = nodes[0].replay().unwrap().ring;
        prop_assert!(!ring.members().is_empty());
        for p in 0..ring.partition_count() {
            prop_assert!(ring.member(&ring.owner(p).name).is_some());
        }
    }

    #[test]
    fn a_served_step_is_never_taken_back(
        steps in prop::collection::vec(step(), 0..40),
        settle_every in 1usize..4,
    ) {
        // Admin nodes issue changes from their own, possibly lagging, views while the
        // receivers of the cluster-wide view settle its next step now and then (as a
        // receiver does once every member it reaches shared what it knows).
        let base = History::created(16, 3, (0..3).map(|i| Member::new(name(i))).collect());
        let mut nodes = vec![base.clone(), base.clone(), base];
        let mut served: Vec<String> = Vec::new();
        for (k, s) in steps.iter().enumerate() {
            match s {
                Step::Issue { at, kind } => {
                    nodes[*at].issue(&format!("admin-{at}"), kind.clone());
                }
                Step::Gossip { from, to } => {
                    let src = nodes[*from].clone();
                    nodes[*to].merge(&src);
                }
            }
            let mut all = union(&nodes);
            if k % settle_every == 0 {
                let t = Topology::replay(all.clone(), &[3]).unwrap();
                if t.next_step().is_some() {
                    for r in settlers(&t) {
                        nodes[0].issue(&format!("{r}-node"), t.settlement(&r).unwrap());
                    }
                    all = union(&nodes);
                }
            }
            let t = Topology::replay(all, &[3]).unwrap();
            let now: Vec<String> =
                t.steps()[..=t.serving_step()].iter().map(|s| s.ring.to_json()).collect();
            prop_assert!(now.len() >= served.len(), "the serving step went back");
            prop_assert_eq!(&now[..served.len()], &served[..], "a served ring changed");
            served = now;
        }
    }
}
