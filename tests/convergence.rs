//! Convergence: random interleavings of puts (stale, fresh or no context) at three
//! replicas, with replication messages delivered in random order and duplicated,
//! end with every replica holding the same siblings: exactly the versions no writer's
//! context covered.

use std::collections::BTreeSet;
use std::sync::Arc;

use dynamo::context::Context;
use dynamo::dot::Dot;
use dynamo::engines::memory::MemoryEngine;
use dynamo::store::{StoreConfig, VersionedStore};
use dynamo::version::Version;
use proptest::prelude::*;

const KEY: &[u8] = b"the-key";

#[derive(Clone, Debug)]
enum CtxChoice {
    None,
    Fresh,
    Stale(usize),
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        at: usize,
        ctx: CtxChoice,
        delete: bool,
    },
    Deliver {
        msg: usize,
        to: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let ctx = prop_oneof![
        Just(CtxChoice::None),
        Just(CtxChoice::Fresh),
        (0usize..64).prop_map(CtxChoice::Stale)
    ];
    prop_oneof![
        3 => (0usize..3, ctx, prop::bool::weighted(0.15))
            .prop_map(|(at, ctx, delete)| Op::Put { at, ctx, delete }),
        2 => (0usize..64, 0usize..3).prop_map(|(msg, to)| Op::Deliver { msg, to }),
    ]
}

fn replica() -> VersionedStore {
    VersionedStore::open(Arc::new(MemoryEngine::new()), StoreConfig::new("s"), 16).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn replicas_converge_and_keep_every_unseen_version(
        ops in prop::collection::vec(op(), 1..40),
        order in prop::collection::vec(any::<prop::sample::Index>(), 0..80),
    ) {
        let replicas = [replica(), replica(), replica()];
        let mut seen_contexts: Vec<Context> = Vec::new();
        let mut writer_contexts: Vec<Context> = Vec::new();
        let mut written: Vec<Version> = Vec::new();
        // Replication messages: the writer's full sibling set after each put.
        let mut messages: Vec<Vec<Version>> = Vec::new();
        let mut n = 0;
        for op in ops {
            match op {
                Op::Put { at, ctx, delete } => {
                    let ctx = match ctx {
                        CtxChoice::None => None,
                        CtxChoice::Fresh => Some(replicas[at].get(KEY).unwrap().context),
                        CtxChoice::Stale(i) if !seen_contexts.is_empty() => {
                            Some(seen_contexts[i % seen_contexts.len()].clone())
                        }
                        CtxChoice::Stale(_) => None,
                    };
                    n += 1;
                    let value = format!("v{n}");
                    let value = if delete { None } else { Some(value.as_bytes()) };
                    let w = replicas[at].put(KEY, value, ctx.as_ref()).unwrap();
                    writer_contexts.push(ctx.clone().unwrap_or_default());
                    if let Some(c) = ctx {
                        seen_contexts.push(c);
                    }
                    seen_contexts.push(w.context.clone());
                    written.push(w.version);
                    messages.push(w.siblings.into_versions());
                }
                Op::Deliver { msg, to } => {
                    if !messages.is_empty() {
                        let m = messages[msg % messages.len()].clone();
                        replicas[to].merge_remote(KEY, m).unwrap();
                    }
                }
            }
        }
        // Random order, with duplicates ...
        for idx in order {
            if messages.is_empty() { break; }
            let i = idx.index(messages.len() * 3);
            replicas[i % 3].merge_remote(KEY, messages[i / 3].clone()).unwrap();
        }
        // ... then every message reaches every replica at least once (anti-entropy).
        for m in messages.iter().rev() {
            for r in &replicas {
                r.merge_remote(KEY, m.clone()).unwrap();
            }
        }
        let finals: Vec<Vec<Version>> = replicas
            .iter()
            .map(|r| r.get(KEY).unwrap().siblings.into_versions())
            .collect();
        prop_assert_eq!(&finals[0], &finals[1]);
        prop_assert_eq!(&finals[1], &finals[2]);

        let present: BTreeSet<Dot> = finals[0].iter().map(|v| v.dot).collect();
        let expected: BTreeSet<Dot> = written
            .iter()
            .filter(|v| !writer_contexts.iter().any(|c| c.covers(&v.dot)))
            .map(|v| v.dot)
            .collect();
        prop_assert_eq!(present, expected,
            "kept must be exactly the versions no writer had seen");
        // Dots are never reused.
        let all: BTreeSet<Dot> = written.iter().map(|v| v.dot).collect();
        prop_assert_eq!(all.len(), written.len());
    }
}

/// A put, or a retry of an earlier put (same value, context and request id) through
/// another replica as coordinator, as a client does after a timeout or a lost reply.
#[derive(Clone, Debug)]
enum RetryOp {
    Put {
        at: usize,
        fresh: bool,
        delete: bool,
    },
    Retry {
        of: usize,
        at: usize,
    },
    Deliver {
        msg: usize,
        to: usize,
    },
}

fn retry_op() -> impl Strategy<Value = RetryOp> {
    prop_oneof![
        3 => (0usize..3, any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(at, fresh, delete)| RetryOp::Put { at, fresh, delete }),
        2 => (0usize..64, 0usize..3).prop_map(|(of, at)| RetryOp::Retry { of, at }),
        2 => (0usize..64, 0usize..3).prop_map(|(msg, to)| RetryOp::Deliver { msg, to }),
    ]
}

/// One client request and every version its attempts made.
#[derive(Clone)]
struct Request {
    id: u64,
    value: Option<Vec<u8>>,
    ctx: Option<Context>,
    attempts: Vec<Version>,
}

/// Fewer requests than a context remembers, so no request is forgotten.
const MAX_REQUESTS: usize = dynamo::context::MAX_CONTEXT_REQUESTS;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn retried_requests_leave_one_version_and_a_context_from_one_attempt_supersedes_all(
        ops in prop::collection::vec(retry_op(), 1..40),
        order in prop::collection::vec(any::<prop::sample::Index>(), 0..80),
    ) {
        let replicas = [replica(), replica(), replica()];
        let mut requests: Vec<Request> = Vec::new();
        let mut answers: Vec<Context> = Vec::new();
        let mut messages: Vec<Vec<Version>> = Vec::new();
        for op in ops {
            let (id, value, ctx, at) = match op {
                RetryOp::Put { at, fresh, delete } if requests.len() < MAX_REQUESTS => {
                    let id = 1000 + requests.len() as u64;
                    let value = (!delete).then(|| format!("v{id}").into_bytes());
                    // A fresh read at the coordinator, or the answer of an earlier put.
                    let ctx = if fresh || answers.is_empty() {
                        Some(replicas[at].get(KEY).unwrap().context)
                    } else {
                        answers.last().cloned()
                    };
                    requests.push(Request { id, value: value.clone(), ctx: ctx.clone(), attempts: Vec::new() });
                    (id, value, ctx, at)
                }
                RetryOp::Put { .. } => continue,
                RetryOp::Retry { of, at } => {
                    if requests.is_empty() { continue; }
                    let r = requests[of % requests.len()].clone();
                    (r.id, r.value, r.ctx, at)
                }
                RetryOp::Deliver { msg, to } => {
                    if !messages.is_empty() {
                        let m = messages[msg % messages.len()].clone();
                        replicas[to].merge_remote(KEY, m).unwrap();
                    }
                    continue;
                }
            };
            let w = replicas[at]
                .put_with(KEY, value.as_deref(), ctx.as_ref(), Some(id), &mut |_| Ok(()))
                .unwrap();
            prop_assert_eq!(w.version.request_id, Some(id));
            let attempts = &mut requests.iter_mut().find(|r| r.id == id).unwrap().attempts;
            if !attempts.iter().any(|v| v.dot == w.version.dot) {
                attempts.push(w.version.clone());
            }
            answers.push(w.context.clone());
            messages.push(w.siblings.into_versions());
        }
        for idx in order {
            if messages.is_empty() { break; }
            let i = idx.index(messages.len() * 3);
            replicas[i % 3].merge_remote(KEY, messages[i / 3].clone()).unwrap();
        }
        for m in messages.iter().rev() {
            for r in &replicas {
                r.merge_remote(KEY, m.clone()).unwrap();
            }
        }
        let finals: Vec<Vec<Version>> = replicas
            .iter()
            .map(|r| r.get(KEY).unwrap().siblings.into_versions())
            .collect();
        prop_assert_eq!(&finals[0], &finals[1]);
        prop_assert_eq!(&finals[1], &finals[2]);
        // One version per request ...
        let ids: Vec<u64> = finals[0].iter().filter_map(|v| v.request_id).collect();
        let distinct: BTreeSet<u64> = ids.iter().copied().collect();
        prop_assert_eq!(ids.len(), distinct.len(), "two versions of one request: {:?}", finals[0]);
        // ... and exactly the requests no later writer had seen an attempt of.
        let writers: Vec<Context> = requests.iter().filter_map(|r| r.ctx.clone()).collect();
        let expected: BTreeSet<u64> = requests
            .iter()
            .filter(|r| {
                !r.attempts
                    .iter()
                    .any(|a| writers.iter().any(|c| c.covers_write(&a.dot, a.request_id)))
            })
            .map(|r| r.id)
            .collect();
        prop_assert_eq!(distinct, expected);
        // No dot names two writes (a write born superseded still used its dot up).
        let all: Vec<Dot> = requests.iter().flat_map(|r| r.attempts.iter().map(|v| v.dot)).collect();
        let unique: BTreeSet<Dot> = all.iter().copied().collect();
        prop_assert_eq!(all.len(), unique.len());
        // The answer of any attempt supersedes every attempt of its request.
        for Request { attempts, .. } in &requests {
            for answer in &answers {
                if attempts.iter().any(|a| answer.covers(&a.dot)) {
                    prop_assert!(attempts.iter().all(|a| answer.covers_write(&a.dot, a.request_id)));
                }
            }
        }
    }
}
