//! Replicas converge on their own (the anti-entropy issue), with real node processes:
//! each test prints its time to convergence and checks the end state by reading every
//! replica directly (`read_replica`: no quorum, no read repair, no forwarding).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use dynamo::client::{BlockingClient, Coordination};
use dynamo::cluster::{ClusterSpec, LocalCluster};
use dynamo::config::AntiEntropyConfig;
use dynamo::store::StoreConfig;
use dynamo::version::Version;

/// A cluster whose anti-entropy runs fast, reaps tombstones after `reap_delay_ms`,
/// and whose grace period after a ring switch is short.
fn start_fast(nodes: usize, dir: &Path, store: StoreConfig, reap_delay_ms: u64) -> LocalCluster {
    start_with(nodes, dir, store, reap_delay_ms, true)
}

fn start_with(
    nodes: usize,
    dir: &Path,
    store: StoreConfig,
    reap_delay_ms: u64,
    exchanges: bool,
) -> LocalCluster {
    let mut spec = ClusterSpec::new(nodes, dir);
    spec.stores = vec![store];
    spec.partitions = 64;
    spec.membership_grace_ms = 500;
    spec.anti_entropy = AntiEntropyConfig {
        interval_ms: 100,
        confirm_delay_ms: 50,
        reap_delay_ms,
        enabled: exchanges,
        ..AntiEntropyConfig::default()
    };
    let cluster = LocalCluster::start(&spec, Path::new(EXE)).expect("cluster starts");
    // A node that started after its peers answered may take its new data directory for
    // a lost one and rebuild it (from empty peers, at once): let that finish, so that
    // what follows is anti-entropy's work alone.
    let c = client(&cluster.addresses(), Coordination::ServerDriven);
    // And every node sees every other up (one that called a peer before it listened
    // marked it down until its next probe).
    eventually(30, "every node sees every other up", || {
        cluster.addresses().iter().all(|a| {
            c.status(Some(a))
                .is_ok_and(|s| s.members.iter().all(|m| m.up))
        })
    });
    eventually(30, "no node is rebuilding", || {
        cluster.addresses().iter().all(|a| {
            c.status(Some(a))
                .ok()
                .and_then(|s| s.anti_entropy)
                .is_some_and(|ae| {
                    ae.trees_ready == ae.trees_total
                        && ae
                            .rebuild
                            .is_none_or(|r| r.stores.iter().all(|s| s.done == s.partitions))
                })
        })
    });
    cluster
}

fn index(name: &str) -> usize {
    name.trim_start_matches("node-").parse::<usize>().unwrap() - 1
}

/// Polls until every one of `keys` holds the same dots on every replica in `owners`
/// (from `owners_of`) and `ok` accepts them; returns the time it took.
fn converge(
    secs: u64,
    what: &str,
    c: &BlockingClient,
    cluster: &LocalCluster,
    keys: &[String],
    owners_of: impl Fn(&str) -> Vec<String>,
    ok: impl Fn(&str, &[Version]) -> bool,
) -> Duration {
    let started = Instant::now();
    let addrs = cluster.addresses();
    let mut pending: Vec<String> = keys.to_vec();
    eventually(secs, what, || {
        pending.retain(|k| {
            let owners = owners_of(k);
            let reads: Vec<Vec<Version>> = owners
                .iter()
                .map(|o| {
                    c.read_replica(&addrs[index(o)], "default", k.as_bytes())
                        .unwrap_or_default()
                })
                .collect();
            let first: BTreeSet<_> = reads[0].iter().map(|v| v.dot).collect();
            let same = reads
                .iter()
                .all(|r| r.iter().map(|v| v.dot).collect::<BTreeSet<_>>() == first);
            !(same && ok(k, &reads[0]))
        });
        pending.is_empty()
    });
    started.elapsed()
}

fn live(versions: &[Version]) -> Vec<Vec<u8>> {
    sorted(versions.iter().filter_map(|v| v.value.clone()).collect())
}

/// A replica that missed writes and has no hint for them (three nodes and N=3: no
/// stand-in exists, so no hint is ever written; the same state as hints that were
/// lost) gets every one of them with no client read at all.
#[test]
fn a_replica_whose_hints_were_dropped_converges_with_no_client_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_fast(3, dir.path(), rocks(), 3_600_000);
    let addrs = cluster.addresses();
    let c = client(&addrs[..2], Coordination::ServerDriven);
    cluster.kill(2).unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("missed-{i}")).collect();
    for k in &keys {
        c.put("default", k.as_bytes(), k.as_bytes(), None, None)
            .unwrap();
    }
    for s in [&addrs[0], &addrs[1]] {
        let st = c.status(Some(s)).unwrap();
        assert!(st.hints.values().all(|n| *n == 0), "no hint exists: {st:?}");
    }
    cluster.restart(2).unwrap();
    let took = converge(
        60,
        "node-3 holds every missed write",
        &c,
        &cluster,
        &keys,
        |_| vec!["node-1".into(), "node-2".into(), "node-3".into()],
        |k, vs| live(vs) == vec![k.as_bytes().to_vec()],
    );
    println!("converged with no client reads in {took:?}");
    let st = c.status(Some(&addrs[2])).unwrap();
    let ae = st.anti_entropy.expect("anti-entropy status");
    // Anti-entropy did it (on whichever side started each exchange).
    let repaired: u64 = addrs
        .iter()
        .filter_map(|a| c.status(Some(a)).ok())
        .filter_map(|s| s.anti_entropy)
        .map(|a| a.keys_repaired)
        .sum();
    assert!(repaired >= keys.len() as u64, "{repaired} keys repaired");
    let rebuilt = ae
        .rebuild
        .as_ref()
        .map_or(0, |r| r.stores.iter().map(|s| s.keys).sum::<u64>());
    assert_eq!(
        rebuilt, 0,
        "node-3 did not lose its data: nothing was rebuilt"
    );
    assert!(ae.exchanges > 0, "{ae:?}");
    assert!(ae.oldest_exchange_age_ms.is_some(), "{ae:?}");
}

/// A node whose data directory was wiped gets every key of its partitions back; in the
/// meantime no read at R returns "not found" or fewer siblings for an acknowledged key,
/// even for writes that only it and one other replica had acknowledged.
#[test]
fn a_wiped_node_gets_its_keys_back_and_never_hides_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_fast(3, dir.path(), rocks(), 3_600_000);
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ServerDriven);
    let bulk: Vec<String> = (0..1500).map(|i| format!("bulk-{i}")).collect();
    for k in &bulk {
        c.put("default", k.as_bytes(), b"old", None, None).unwrap();
    }
    // Two siblings for some keys: concurrent writes with no context.
    let twins: Vec<String> = (0..50).map(|i| format!("twin-{i}")).collect();
    for k in &twins {
        c.put("default", k.as_bytes(), b"a", None, None).unwrap();
        c.put("default", k.as_bytes(), b"b", None, None).unwrap();
    }
    // Writes acknowledged by node-1 and node-3 only (node-2 is down; with three nodes
    // there is no stand-in, so node-2 gets no hint).
    cluster.stop(1).unwrap();
    let c13 = client(
        &[addrs[0].clone(), addrs[2].clone()],
        Coordination::ServerDriven,
    );
    let pair: Vec<String> = (0..300).map(|i| format!("pair-{i}")).collect();
    for k in &pair {
        c13.put("default", k.as_bytes(), b"pair", None, None)
            .unwrap();
    }
    // node-3 loses its data; node-2 comes back, so the pair writes are on node-1 alone.
    cluster.kill(2).unwrap();
    std::fs::remove_dir_all(dir.path().join("node-3").join("data")).unwrap();
    cluster.restart(1).unwrap();
    cluster.restart(2).unwrap();
    let started = Instant::now();
    // Right away, reads at R=2 through the wiped node (and client-driven ones) find
    // every acknowledged value and every sibling.
    let via3 = client(&[addrs[2].clone()], Coordination::ServerDriven);
    let direct = client(&addrs, Coordination::ClientDriven);
    for round in 0..2 {
        for (k, want) in pair.iter().map(|k| (k, vec![b"pair".to_vec()])).chain(
            twins
                .iter()
                .map(|k| (k, vec![b"a".to_vec(), b"b".to_vec()])),
        ) {
            for (mode, cl) in [("through node-3", &via3), ("client-driven", &direct)] {
                let g = cl.get("default", k.as_bytes(), None).unwrap();
                assert_eq!(values(&g), want, "{k} {mode}, round {round}");
            }
        }
    }
    let all: Vec<String> = bulk.iter().chain(&pair).chain(&twins).cloned().collect();
    let ring = c.ring().unwrap().ring;
    eventually(60, "node-3's rebuild finishes", || {
        c.status(Some(&addrs[2]))
            .ok()
            .and_then(|s| s.anti_entropy)
            .and_then(|a| a.rebuild)
            .is_some_and(|r| r.stores.iter().all(|s| s.done == s.partitions))
    });
    let took = converge(
        60,
        "node-3 holds every key again",
        &c,
        &cluster,
        &all,
        |k| top3(&ring, k),
        |k, vs| {
            let want: Vec<Vec<u8>> = if k.starts_with("twin") {
                vec![b"a".to_vec(), b"b".to_vec()]
            } else if k.starts_with("pair") {
                vec![b"pair".to_vec()]
            } else {
                vec![b"old".to_vec()]
            };
            live(vs) == want
        },
    );
    println!(
        "wiped node rebuilt {} keys; converged {:?} after its restart ({took:?} for the final check)",
        all.len(),
        started.elapsed()
    );
    let (ok, out, err) = cli(&["status", "--nodes", &addrs[2]]);
    assert!(ok, "{err}");
    assert!(out.contains("rebuild of store default"), "{out}");
}

/// A node down across many writes, updates and deletes converges after it returns.
#[test]
fn a_node_down_across_writes_and_deletes_converges_after_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_fast(3, dir.path(), rocks(), 3_600_000);
    let addrs = cluster.addresses();
    let c = client(&addrs[..2], Coordination::ServerDriven);
    let keys: Vec<String> = (0..400).map(|i| format!("k-{i}")).collect();
    for k in &keys {
        c.put("default", k.as_bytes(), b"v1", None, None).unwrap();
    }
    eventually(30, "node-3 holds the first writes", || {
        keys.iter()
            .all(|k| replica_values(&c, &addrs[2], k.as_bytes()) == vec![b"v1".to_vec()])
    });
    cluster.kill(2).unwrap();
    for (i, k) in keys.iter().enumerate() {
        let g = c.get("default", k.as_bytes(), None).unwrap();
        match i % 4 {
            0 => {
                c.delete("default", k.as_bytes(), Some(&g.context), None)
                    .unwrap();
            }
            1 => {
                c.put("default", k.as_bytes(), b"v2", Some(&g.context), None)
                    .unwrap();
            }
            2 => {
                c.put("default", k.as_bytes(), b"v3", None, None).unwrap();
            }
            _ => {}
        }
    }
    let fresh: Vec<String> = (0..100).map(|i| format!("new-{i}")).collect();
    for k in &fresh {
        c.put("default", k.as_bytes(), b"n", None, None).unwrap();
    }
    cluster.restart(2).unwrap();
    let all: Vec<String> = keys.iter().chain(&fresh).cloned().collect();
    let took = converge(
        60,
        "node-3 caught up",
        &c,
        &cluster,
        &all,
        |_| vec!["node-1".into(), "node-2".into(), "node-3".into()],
        |k, vs| {
            if k.starts_with("new") {
                return live(vs) == vec![b"n".to_vec()];
            }
            let i: usize = k[2..].parse().unwrap();
            match i % 4 {
                // Deleted: the tombstone is held (the reap delay is an hour).
                0 => !vs.is_empty() && vs.iter().all(|v| v.value.is_none()),
                1 => live(vs) == vec![b"v2".to_vec()],
                2 => live(vs) == vec![b"v1".to_vec(), b"v3".to_vec()],
                _ => live(vs) == vec![b"v1".to_vec()],
            }
        },
    );
    println!("node down across writes and deletes converged in {took:?}");
}

/// An owner that refuses one hint for ever (its value is over the owner's own
/// max_value_size) still receives every other hint, and the stand-in reports the
/// refused one in status instead of retrying it in a tight loop. Anti-entropy is off
/// here, so only hinted handoff can bring the owner its writes.
#[test]
fn an_owner_that_refuses_one_hint_still_receives_every_other_hint() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_with(4, dir.path(), rocks(), 3_600_000, false);
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let ring = c.ring().unwrap().ring;
    let owner = "node-3";
    // The stand-in for node-3 of keys it owns, when only node-3 is down.
    let keys_with = |stand_in: &str, n: usize, prefix: &str| -> Vec<String> {
        (0..20_000)
            .map(|i| format!("{prefix}{i}"))
            .filter(|k| {
                top3(&ring, k).iter().any(|m| m == owner)
                    && stand_in_for(&ring, k, &[owner], owner).as_deref() == Some(stand_in)
            })
            .take(n)
            .collect()
    };
    let stand_in = (1..=4)
        .map(|i| format!("node-{i}"))
        .find(|s| s != owner && !keys_with(s, 1, "a").is_empty())
        .unwrap();
    // The refused key sorts first among the stand-in's hints for node-3.
    let bad = keys_with(&stand_in, 1, "a-bad-").remove(0);
    let good = keys_with(&stand_in, 120, "z-good-");
    assert_eq!(good.len(), 120);
    // node-3 takes values of at most 1000 bytes; the others take the default.
    cluster.stop(index(owner)).unwrap();
    cluster
        .reconfigure(index(owner), |cfg| cfg.stores[0].max_value_size = 1000)
        .unwrap();
    c.put("default", bad.as_bytes(), &[7u8; 5000], None, None)
        .unwrap();
    for k in &good {
        c.put("default", k.as_bytes(), b"small", None, None)
            .unwrap();
    }
    let si = &addrs[index(&stand_in)];
    eventually(10, "the stand-in holds the hints", || {
        c.status(Some(si))
            .map(|s| s.hints.get(owner).copied().unwrap_or(0) >= 121)
            .unwrap_or(false)
    });
    cluster.restart(index(owner)).unwrap();
    let started = Instant::now();
    eventually(30, "every other hint reaches node-3", || {
        good.iter().all(|k| {
            replica_values(&c, &addrs[index(owner)], k.as_bytes()) == vec![b"small".to_vec()]
        })
    });
    println!(
        "120 hints delivered past a refused one in {:?}",
        started.elapsed()
    );
    eventually(10, "the stand-in reports the refused hint", || {
        c.status(Some(si))
            .ok()
            .and_then(|s| s.anti_entropy)
            .is_some_and(|a| {
                a.refused_hints
                    .iter()
                    .any(|h| h.owner == owner && h.key.contains("a-bad-"))
            })
    });
    eventually(30, "only the refused hint is left", || {
        c.status(Some(si))
            .is_ok_and(|s| s.hints.get(owner).copied() == Some(1))
    });
    let s = c.status(Some(si)).unwrap();
    let refused = s.anti_entropy.unwrap().refused_hints;
    let h = refused.iter().find(|h| h.key.contains("a-bad-")).unwrap();
    assert!(h.reason.contains("max_value_size"), "{h:?}");
    // Backoff, not a tight loop: a few attempts in several seconds.
    std::thread::sleep(Duration::from_secs(3));
    let later = c
        .status(Some(si))
        .unwrap()
        .anti_entropy
        .unwrap()
        .refused_hints;
    let h2 = later.iter().find(|h| h.key.contains("a-bad-")).unwrap();
    assert!(h2.attempts <= 4, "{h2:?}");
    let (ok, out, _) = cli(&["status", "--nodes", si]);
    assert!(ok);
    assert!(out.contains("refused hint"), "{out}");
    // The value is still there to read (the stand-in keeps its copy).
    let g = c.get("default", bad.as_bytes(), None).unwrap();
    assert_eq!(values(&g), vec![vec![7u8; 5000]]);
}

/// Deletes on five nodes with one owner down: nothing is reaped until it is back and
/// holds the tombstones; then every replica drops them; and a replica restored with
/// the old values (its data directory copied before the delete) does not bring them
/// back, through a quorum read or on any replica.
#[test]
fn tombstones_are_reaped_only_when_every_owner_holds_them_and_never_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_fast(5, dir.path(), rocks(), 1_000);
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let ring = c.ring().unwrap().ring;
    let down = "node-5";
    let keys: Vec<String> = (0..5000)
        .map(|i| format!("gone-{i}"))
        .filter(|k| top3(&ring, k).iter().any(|m| m == down))
        .take(60)
        .collect();
    let mut contexts = Vec::new();
    for k in &keys {
        let p = c.put("default", k.as_bytes(), b"old", None, None).unwrap();
        contexts.push(p.context);
    }
    let all_nodes: Vec<String> = (1..=5).map(|i| format!("node-{i}")).collect();
    converge(
        30,
        "every owner holds the values",
        &c,
        &cluster,
        &keys,
        |k| top3(&ring, k),
        |_, vs| live(vs) == vec![b"old".to_vec()],
    );
    // The backup: node-5's data directory as it was before the deletes.
    cluster.stop(index(down)).unwrap();
    let data = dir.path().join(down).join("data");
    let backup = dir.path().join("node-5-backup");
    copy_dir(&data, &backup);
    for (k, ctx) in keys.iter().zip(&contexts) {
        c.delete("default", k.as_bytes(), Some(ctx), None).unwrap();
    }
    // Well past the reap delay, with node-5 down: nothing is reaped.
    std::thread::sleep(Duration::from_secs(4));
    let reaped = |c: &BlockingClient| -> u64 {
        addrs[..4]
            .iter()
            .filter_map(|a| c.status(Some(a)).ok())
            .filter_map(|s| s.anti_entropy)
            .map(|a| a.reaped)
            .sum()
    };
    assert_eq!(reaped(&c), 0, "nothing is reaped while an owner is down");
    for k in &keys {
        for o in top3(&ring, k).iter().filter(|o| *o != down) {
            let vs = c
                .read_replica(&addrs[index(o)], "default", k.as_bytes())
                .unwrap();
            assert!(
                !vs.is_empty() && vs.iter().all(|v| v.value.is_none()),
                "{k} on {o} still holds its tombstone: {vs:?}"
            );
        }
    }
    cluster.restart(index(down)).unwrap();
    let started = Instant::now();
    let took = converge(
        60,
        "every replica dropped the tombstones",
        &c,
        &cluster,
        &keys,
        |_| all_nodes.clone(),
        |_, vs| vs.is_empty(),
    );
    println!(
        "{} tombstones reaped on every replica {:?} after the owner returned ({took:?})",
        keys.len(),
        started.elapsed()
    );
    assert!(reaped(&c) > 0);
    // node-5 comes back from the backup, holding the old values.
    cluster.stop(index(down)).unwrap();
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&backup, &data);
    cluster.restart(index(down)).unwrap();
    let via5 = client(&[addrs[index(down)].clone()], Coordination::ServerDriven);
    for k in &keys {
        for (mode, cl) in [("client-driven", &c), ("through node-5", &via5)] {
            let g = cl.get("default", k.as_bytes(), None).unwrap();
            assert!(values(&g).is_empty(), "{k} came back ({mode}): {g:?}");
        }
    }
    let took = converge(
        60,
        "the restored replica dropped the old values too",
        &c,
        &cluster,
        &keys,
        |_| all_nodes.clone(),
        |_, vs| vs.is_empty(),
    );
    println!("restored replica converged to the reaped state in {took:?}");
    for k in &keys {
        let g = c.get("default", k.as_bytes(), None).unwrap();
        assert!(values(&g).is_empty(), "{k} came back: {g:?}");
    }
    // A write after the reap is a new value, not the old one back.
    let k = &keys[0];
    c.put("default", k.as_bytes(), b"new", Some(&contexts[0]), None)
        .unwrap();
    let g = c.get("default", k.as_bytes(), None).unwrap();
    assert_eq!(values(&g), vec![b"new".to_vec()]);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
