//! The laws stated in the `vclock` and `context` module docs, as property tests.

use dynamo::context::Context;
use dynamo::dot::{Actor, Dot};
use dynamo::vclock::{Causality, VClock};
use proptest::prelude::*;

fn actor(i: u64) -> Actor {
    Actor::new(0xabc0 + i, i % 2)
}

/// Timestamps are a function of the event, as they are for real dots.
fn ts(d: &Dot) -> u64 {
    d.actor.incarnation * 100 + d.counter
}

fn vclock() -> impl Strategy<Value = VClock> {
    prop::collection::vec((0u64..4, 1u64..6), 0..5).prop_map(|entries| {
        let mut c = VClock::new();
        for (a, n) in entries {
            let d = Dot::new(actor(a), n);
            c.witness(d.actor, n, ts(&d));
        }
        c
    })
}

fn context() -> impl Strategy<Value = Context> {
    (vclock(), prop::collection::vec((0u64..4, 1u64..9), 0..6)).prop_map(|(vv, dots)| {
        let mut c = Context::from_clock(vv);
        for (a, n) in dots {
            let d = Dot::new(actor(a), n);
            c.add(d, ts(&d));
        }
        c
    })
}

fn merged<T: Clone>(a: &T, b: &T, f: impl Fn(&mut T, &T)) -> T {
    let mut x = a.clone();
    f(&mut x, b);
    x
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn vclock_merge_is_a_semilattice(a in vclock(), b in vclock(), c in vclock()) {
        let m = |x: &VClock, y: &VClock| merged(x, y, VClock::merge);
        prop_assert_eq!(m(&a, &b), m(&b, &a));
        prop_assert_eq!(m(&m(&a, &b), &c), m(&a, &m(&b, &c)));
        prop_assert_eq!(m(&a, &a), a.clone());
        let ab = m(&a, &b);
        prop_assert!(ab.descends(&a) && ab.descends(&b));
    }

    #[test]
    fn vclock_descends_is_a_partial_order(a in vclock(), b in vclock(), c in vclock()) {
        prop_assert!(a.descends(&a));
        if a.descends(&b) && b.descends(&a) {
            prop_assert_eq!(a.compare(&b), Causality::Equal);
            let counters = |x: &VClock| x.entries().iter().map(|e| (e.actor, e.counter)).collect::<Vec<_>>();
            prop_assert_eq!(counters(&a), counters(&b));
        }
        if a.descends(&b) && b.descends(&c) {
            prop_assert!(a.descends(&c));
        }
        let expected = match (a.descends(&b), b.descends(&a)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (false, false) => Causality::Concurrent,
        };
        prop_assert_eq!(a.compare(&b), expected);
    }

    #[test]
    fn an_increment_is_after_its_origin(a in vclock(), who in 0u64..5) {
        let mut b = a.clone();
        let d = b.increment(actor(who), 1);
        prop_assert!(!a.covers(&d));
        prop_assert_eq!(b.compare(&a), Causality::After);
    }

    #[test]
    fn context_merge_is_set_union(a in context(), b in context(), c in context()) {
        let m = |x: &Context, y: &Context| merged(x, y, Context::merge);
        prop_assert_eq!(m(&a, &b), m(&b, &a));
        prop_assert_eq!(m(&m(&a, &b), &c), m(&a, &m(&b, &c)));
        prop_assert_eq!(m(&a, &a), a.clone());
        let ab = m(&a, &b);
        for a_ in 0..5u64 {
            for n in 1..10u64 {
                let d = Dot::new(actor(a_), n);
                prop_assert_eq!(ab.covers(&d), a.covers(&d) || b.covers(&d));
            }
        }
    }

    #[test]
    fn context_descends_is_inclusion_and_a_partial_order(a in context(), b in context(), c in context()) {
        prop_assert!(a.descends(&a));
        let included = (0..5u64).all(|x| (1..10u64).all(|n| {
            let d = Dot::new(actor(x), n);
            !b.covers(&d) || a.covers(&d)
        }));
        prop_assert_eq!(a.descends(&b), included);
        if a.descends(&b) && b.descends(&a) {
            prop_assert_eq!(&a, &b, "same dots, same representation");
        }
        if a.descends(&b) && b.descends(&c) {
            prop_assert!(a.descends(&c));
        }
    }

    #[test]
    fn a_new_dot_is_after_everything_its_context_covers(a in context(), who in 0u64..5) {
        let d = a.next_dot(actor(who));
        prop_assert!(!a.covers(&d));
        let mut b = a.clone();
        b.add(d, ts(&d));
        prop_assert_eq!(b.compare(&a), Causality::After);
    }

    #[test]
    fn contexts_round_trip_through_bytes_and_tokens(a in context(), fp in any::<u32>()) {
        prop_assert_eq!(Context::decode(&a.encode()).unwrap(), a.clone());
        prop_assert_eq!(Context::from_token(&a.to_token(fp), fp).unwrap(), a);
    }

    #[test]
    fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = Context::decode(&bytes);
    }
}
