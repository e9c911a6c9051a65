//! Membership with real node processes: one ring from one history, gossip and seeds
//! (issue 12).

mod common;

use std::collections::BTreeSet;

use common::*;
use dynamo::client::{BlockingClient, Client, ClientOptions, Coordination, NodeStatus};
use dynamo::cluster::LocalCluster;

fn statuses(c: &BlockingClient, cluster: &LocalCluster) -> Vec<NodeStatus> {
    cluster
        .nodes
        .iter()
        .filter(|n| n.pid().is_some())
        .map(|n| c.status(Some(&n.address)).expect("status"))
        .collect()
}

/// Waits until every running node serves the same ring with `members` members, every
/// transfer finished, and returns that ring's digest.
fn converged(c: &BlockingClient, cluster: &LocalCluster, members: usize) -> String {
    let mut last = String::new();
    eventually(
        30,
        &format!("every node on one ring of {members} members"),
        || {
            let all = statuses(c, cluster);
            let rings: BTreeSet<&str> = all.iter().map(|s| s.ring_digest.as_str()).collect();
            last = format!(
                "{:?}",
                all.iter()
                    .map(|s| (&s.node, s.ring_version, s.members.len(), &s.ring_digest))
                    .collect::<Vec<_>>()
            );
            rings.len() == 1
                && all
                    .iter()
                    .all(|s| s.members.len() == members && s.ring_version == s.target_ring_version)
        },
    );
    let s = statuses(c, cluster);
    assert!(!s[0].ring_digest.is_empty(), "{last}");
    s[0].ring_digest.clone()
}

#[test]
fn a_node_configured_with_only_a_seed_learns_every_member_and_joins() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let c = client(&cluster.addresses(), Coordination::ServerDriven);
    let before = c.status(Some(&cluster.nodes[0].address)).unwrap();
    assert_eq!(before.ring_version, 1);
    assert_eq!(before.membership_changes, 1);

    let seed = cluster.nodes[1].address.clone();
    let i = cluster.add_node(&[seed]).unwrap();
    let digest = converged(&c, &cluster, 4);
    let fourth = c.status(Some(&cluster.nodes[i].address)).unwrap();
    let names: Vec<&str> = fourth.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["node-1", "node-2", "node-3", "node-4"]);
    assert_eq!(fourth.ring_digest, digest);
    assert_eq!(fourth.ring_version, 2, "creation plus one join");
    assert!(
        fourth.members.iter().all(|m| m.partitions > 0),
        "{fourth:?}"
    );
    let log = std::fs::read_to_string(&cluster.nodes[i].log_path).unwrap();
    assert!(log.contains("joined the cluster"), "{log}");

    // Restarted from its data directory, it neither joins again nor changes the ring.
    let changes = fourth.membership_changes;
    assert!(
        changes >= 3,
        "creation, join, and the receivers' settled: {fourth:?}"
    );
    cluster.stop(i).unwrap();
    cluster.restart(i).unwrap();
    assert_eq!(converged(&c, &cluster, 4), digest);
    assert_eq!(
        c.status(Some(&cluster.nodes[i].address))
            .unwrap()
            .membership_changes,
        changes
    );
}

#[test]
fn a_wiped_node_learns_the_ring_its_peers_moved_on_to() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let c = client(&cluster.addresses(), Coordination::ServerDriven);
    let seed = cluster.nodes[0].address.clone();
    cluster.add_node(&[seed]).unwrap();
    let digest = converged(&c, &cluster, 4);

    // node-2's data directory is lost; its config still lists the three creators.
    // Before, it built a fresh ring of those three while the others served four.
    cluster.stop(1).unwrap();
    let data = cluster.nodes[1].config_path.parent().unwrap().join("data");
    std::fs::remove_dir_all(&data).unwrap();
    cluster.restart(1).unwrap();
    let s = c.status(Some(&cluster.nodes[1].address)).unwrap();
    assert_eq!(s.ring_digest, digest, "{s:?}");
    assert_eq!(s.members.len(), 4);
    assert_eq!(converged(&c, &cluster, 4), digest);
}

#[test]
fn gossip_spreads_a_change_made_at_one_node_to_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let c = client(&cluster.addresses(), Coordination::ServerDriven);
    let created = converged(&c, &cluster, 3);
    // node-3 alone is told that node-2 is gone (an edited member list is a leave
    // issued there); only gossip can bring the others the change.
    cluster.stop(2).unwrap();
    cluster
        .reconfigure(2, |cfg| cfg.cluster.members.retain(|m| m.name != "node-2"))
        .unwrap();
    cluster.restart(2).unwrap();
    let after = converged(&c, &cluster, 2);
    assert_ne!(after, created);
    // The creation, the leave, and the settled transfers of the nodes that took over
    // node-2's replicas: the same history everywhere.
    let all = statuses(&c, &cluster);
    assert!(all[0].membership_changes >= 2, "{:?}", all[0]);
    assert!(
        all.iter()
            .all(|s| s.membership_digest == all[0].membership_digest),
        "{all:?}"
    );
}

#[test]
fn a_seed_only_node_whose_seeds_are_down_waits_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(1, dir.path(), rocks());
    let seed = cluster.nodes[0].address.clone();
    cluster.stop(0).unwrap();
    let i = cluster.add_node(&[seed]).unwrap();
    let alone = client(
        &[cluster.nodes[i].address.clone()],
        Coordination::ServerDriven,
    );
    let s = alone.status(Some(&cluster.nodes[i].address)).unwrap();
    assert_eq!(s.ring_version, 0);
    assert!(s.members.is_empty());
    let e = alone.put("default", b"k", b"v", None, None).unwrap_err();
    assert!(e.message.contains("has not learned its cluster"), "{e}");
    // The seed comes back: the node learns the cluster and joins it.
    cluster.restart(0).unwrap();
    let c = client(&cluster.addresses(), Coordination::ServerDriven);
    converged(&c, &cluster, 2);
    c.put("default", b"k", b"v", None, Some(1)).unwrap();
}

/// A client that updates keys (read, then write with the context read) until told to
/// stop, recording the last value acknowledged for each key.
fn start_writer(
    addrs: Vec<String>,
    mode: Coordination,
    prefix: &'static str,
    keys: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    progress: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::thread::JoinHandle<WriterResult> {
    std::thread::spawn(move || {
        // A generous timeout: fifteen multi-process tests share these 2 cores, and a
        // request that times out is a failure of the load, not of membership.
        let c = client_with_timeout(&addrs, mode, std::time::Duration::from_secs(15));
        let mut acked = std::collections::BTreeMap::new();
        let mut failures = 0;
        let mut round = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for k in 0..keys {
                let key = format!("{prefix}{k}");
                let value = format!("{key}-r{round}").into_bytes();
                let context = match c.get("default", key.as_bytes(), None) {
                    Ok(g) => Some(g.context),
                    Err(e) => {
                        eprintln!("load: get {key} failed: {e}");
                        failures += 1;
                        continue;
                    }
                };
                match c.put("default", key.as_bytes(), &value, context.as_deref(), None) {
                    Ok(_) => {
                        acked.insert(key, value);
                        progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("load: put {key} failed: {e}");
                        failures += 1;
                    }
                }
            }
            round += 1;
        }
        (acked, failures)
    })
}

/// Every acknowledged write reads back at R as the one value, without siblings.
fn check_acknowledged(c: &BlockingClient, acked: &std::collections::BTreeMap<String, Vec<u8>>) {
    assert!(!acked.is_empty());
    for (key, value) in acked {
        let g = c.get("default", key.as_bytes(), None).unwrap();
        assert_eq!(
            values(&g),
            vec![value.clone()],
            "{key}: the acknowledged value, and nothing else"
        );
    }
}

#[test]
fn a_fourth_node_joins_under_load_and_every_acknowledged_write_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    for k in 0..300 {
        c.put("default", format!("pre{k}").as_bytes(), b"pre", None, None)
            .unwrap();
    }
    let load = Load::start(&addrs);
    cluster.add_node(&[addrs[0].clone()]).unwrap();
    converged(&c, &cluster, 4);
    // The load goes on against the grown cluster for a while.
    load.wait_for_more_writes(40);
    load.finish(&c, false);
    for k in 0..300 {
        let g = c
            .get("default", format!("pre{k}").as_bytes(), None)
            .unwrap();
        assert_eq!(values(&g), vec![b"pre".to_vec()], "pre{k}");
    }
    // node-4 holds its share: reading only from it finds keys it now owns.
    let s = c.status(Some(&cluster.nodes[3].address)).unwrap();
    assert!(s.transfer.is_none(), "{s:?}");
    let ring = c.ring().unwrap().ring;
    let owned: Vec<String> = (0..300)
        .map(|k| format!("pre{k}"))
        .filter(|k| {
            let p = ring.partition_for_key("default", k.as_bytes());
            ring.walk(p, 3).iter().take(3).any(|m| m.name == "node-4")
        })
        .collect();
    assert!(!owned.is_empty());
    for k in &owned {
        let vs = c
            .read_replica(&cluster.nodes[3].address, "default", k.as_bytes())
            .unwrap();
        assert!(!vs.is_empty(), "node-4 received {k}");
    }
}

/// Runs `dynamo admin ...` and returns its stdout, panicking with stderr on failure.
fn admin(args: &[&str]) -> String {
    let mut all = vec!["admin"];
    all.extend_from_slice(args);
    let (ok, out, err) = cli(&all);
    assert!(ok, "dynamo {} failed: {err}{out}", all.join(" "));
    out
}

/// `dynamo admin transfers --watch` until every transfer finished.
fn watch_transfers(any: &str) {
    let out = admin(&["transfers", "--nodes", any, "--watch", "--timeout-s", "90"]);
    assert!(out.contains("every transfer finished"), "{out}");
}

/// Two writers (client- and server-driven) updating keys until stopped.
/// What a writer ends with: the last value acknowledged per key, and its failures.
type WriterResult = (std::collections::BTreeMap<String, Vec<u8>>, usize);

struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Writes acknowledged so far, all writers.
    progress: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    writers: Vec<std::thread::JoinHandle<WriterResult>>,
}

impl Load {
    /// Starts the writers and returns once they have had writes acknowledged.
    fn start(addrs: &[String]) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writers = [
            (Coordination::ClientDriven, "cd"),
            (Coordination::ServerDriven, "sd"),
        ]
        .into_iter()
        .map(|(mode, prefix)| {
            start_writer(
                addrs.to_vec(),
                mode,
                prefix,
                40,
                stop.clone(),
                progress.clone(),
            )
        })
        .collect();
        let load = Self {
            stop,
            progress,
            writers,
        };
        load.wait_for_more_writes(20);
        load
    }

    /// Waits until `n` more writes have been acknowledged.
    fn wait_for_more_writes(&self, n: usize) {
        let goal = self.progress.load(std::sync::atomic::Ordering::Relaxed) + n;
        eventually(60, &format!("{n} more acknowledged writes"), || {
            self.progress.load(std::sync::atomic::Ordering::Relaxed) >= goal
        });
    }

    /// Stops the writers and checks every acknowledged write through `c`.
    fn finish(self, c: &BlockingClient, may_fail: bool) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in self.writers {
            let (acked, failures) = w.join().unwrap();
            if !may_fail {
                assert_eq!(failures, 0, "no request failed");
            }
            check_acknowledged(c, &acked);
        }
    }
}

#[test]
fn admin_join_plans_then_joins_a_standalone_node_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let addrs = cluster.addresses();
    // A node started alone (no members, no seeds) is a cluster of its own.
    let i = cluster.add_node(&[]).unwrap();
    let new = cluster.nodes[i].address.clone();
    let c = client(&addrs, Coordination::ClientDriven);
    let load = Load::start(&addrs);
    let plan = admin(&[
        "plan", "join", "--nodes", &new, "--seed", &addrs[1], "--json",
    ]);
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert!(
        plan["change"].is_null(),
        "a dry run changes nothing: {plan}"
    );
    let moves = plan["plan"]["moves"].as_array().unwrap();
    assert!(!moves.is_empty());
    assert!(moves.iter().all(|m| m["to"] == "node-4"), "{plan}");
    assert_eq!(
        c.status(Some(&addrs[0])).unwrap().membership_changes,
        1,
        "the plan issued nothing"
    );
    let out = admin(&["join", "--nodes", &new, "--seed", &addrs[1]]);
    assert!(out.contains("join node-4: issued"), "{out}");
    watch_transfers(&addrs[0]);
    converged(&c, &cluster, 4);
    load.finish(&c, false);
    // Joining again is a no-op that says so.
    let again = admin(&["join", "--nodes", &new, "--seed", &addrs[2]]);
    assert!(again.contains("already a member"), "{again}");
}

#[test]
fn a_node_leaves_a_four_node_cluster_under_load_and_only_then_stops_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(4, dir.path(), rocks());
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let load = Load::start(&addrs);
    let out = admin(&["leave", "--nodes", &addrs[0], "node-2", "--json"]);
    let reply: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reply["action"], "leave node-2");
    assert!(reply["change"].is_string(), "{reply}");
    watch_transfers(&addrs[0]);
    converged(&c, &cluster, 3);
    let s = c.status(Some(&addrs[0])).unwrap();
    assert!(s.members.iter().all(|m| m.name != "node-2"), "{s:?}");
    // node-2 handed everything off: with it gone, every write is still readable.
    cluster.kill(1).unwrap();
    load.finish(&c, true);
}

#[test]
fn admin_refuses_what_cannot_be_done_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(3, dir.path(), rocks());
    let a = cluster.nodes[0].address.clone();
    for (args, needle) in [
        (vec!["leave", "--nodes", &a, "node-9"], "not in the ring"),
        (vec!["remove", "--nodes", &a, "node-2"], "--force"),
        (
            vec!["remove", "--nodes", &a, "node-2", "--force"],
            "node-2 answers",
        ),
        (
            vec!["remove", "--nodes", &a, "node-1", "--force"],
            "is the node answering",
        ),
        (
            vec!["join", "--nodes", &a, "--seed", "127.0.0.1:1"],
            "127.0.0.1:1",
        ),
        (
            vec!["join", "--nodes", &a, "--seed", &cluster.nodes[1].address],
            "already a member",
        ),
    ] {
        let mut all = vec!["admin"];
        all.extend(args.iter().copied());
        let (ok, out, err) = cli(&all);
        let text = format!("{out}{err}");
        assert!(text.contains(needle), "{all:?}: {text}");
        if needle != "already a member" {
            assert!(!ok, "{all:?} must fail: {text}");
        }
    }
    let c = client(&cluster.addresses(), Coordination::ServerDriven);
    assert_eq!(c.status(Some(&a)).unwrap().membership_changes, 1);
}

#[test]
fn two_nodes_join_at_once_through_different_seeds_and_every_node_ends_on_one_ring() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let addrs = cluster.addresses();
    let d = cluster.add_node(&[]).unwrap();
    let e = cluster.add_node(&[]).unwrap();
    let c = client(&addrs, Coordination::ClientDriven);
    let load = Load::start(&addrs);
    let joins: Vec<_> = [(d, addrs[0].clone()), (e, addrs[2].clone())]
        .into_iter()
        .map(|(i, seed)| {
            let new = cluster.nodes[i].address.clone();
            std::thread::spawn(move || admin(&["join", "--nodes", &new, "--seed", &seed]))
        })
        .collect();
    for j in joins {
        assert!(j.join().unwrap().contains("issued"));
    }
    watch_transfers(&addrs[1]);
    converged(&c, &cluster, 5);
    // Byte for byte: every node's ring JSON is the same.
    let rings: BTreeSet<String> = cluster
        .nodes
        .iter()
        .map(|n| {
            client(std::slice::from_ref(&n.address), Coordination::ClientDriven)
                .ring()
                .unwrap()
                .ring
                .to_json()
        })
        .collect();
    assert_eq!(rings.len(), 1);
    load.finish(&c, false);
}

#[test]
fn a_dead_node_removed_with_force_leaves_every_key_with_n_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(4, dir.path(), rocks());
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let keys: Vec<String> = (0..200).map(|k| format!("rm{k}")).collect();
    for k in &keys {
        c.put("default", k.as_bytes(), b"kept", None, None).unwrap();
    }
    cluster.kill(2).unwrap();
    let load = Load::start(&addrs);
    let out = admin(&["remove", "--nodes", &addrs[0], "node-3", "--force"]);
    assert!(out.contains("remove node-3: issued"), "{out}");
    watch_transfers(&addrs[0]);
    converged(&c, &cluster, 3);
    load.finish(&c, true);
    let ring = c.ring().unwrap().ring;
    for k in &keys {
        let p = ring.partition_for_key("default", k.as_bytes());
        let owners: Vec<String> = ring
            .walk(p, 3)
            .iter()
            .take(3)
            .map(|m| m.name.clone())
            .collect();
        assert_eq!(owners.len(), 3);
        for o in &owners {
            let a = &cluster.nodes[cluster.index_of(o).unwrap()].address;
            assert_eq!(
                c.read_replica(a, "default", k.as_bytes())
                    .unwrap()
                    .iter()
                    .filter_map(|v| v.value.clone())
                    .collect::<Vec<_>>(),
                vec![b"kept".to_vec()],
                "{k} on {o}"
            );
        }
    }
}

/// Waits until the node at `address` reports a transfer in progress.
fn wait_transfer_running(c: &BlockingClient, address: &str) {
    eventually(30, &format!("a transfer running on {address}"), || {
        c.status(Some(address))
            .map(|s| s.transfer.is_some_and(|t| t.phase != "settled"))
            .unwrap_or(false)
    });
}

fn join_with_a_kill(victim_is_target: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let value = vec![b'x'; 1024];
    for k in 0..2000 {
        c.put("default", format!("bulk{k}").as_bytes(), &value, None, None)
            .unwrap();
    }
    let new = cluster.add_node(&[]).unwrap();
    let new_addr = cluster.nodes[new].address.clone();
    let load = Load::start(&addrs);
    admin(&["join", "--nodes", &new_addr, "--seed", &addrs[1]]);
    wait_transfer_running(&c, &new_addr);
    let victim = if victim_is_target { new } else { 0 };
    cluster.kill(victim).unwrap();
    cluster.restart(victim).unwrap();
    watch_transfers(&addrs[1]);
    converged(&c, &cluster, 4);
    load.finish(&c, true);
    for k in (0..2000).step_by(7) {
        let g = c
            .get("default", format!("bulk{k}").as_bytes(), None)
            .unwrap();
        assert_eq!(values(&g), vec![value.clone()], "bulk{k}");
    }
}

#[test]
fn a_source_killed_during_a_transfer_comes_back_and_the_transfer_completes() {
    join_with_a_kill(false);
}

#[test]
fn a_target_killed_during_its_transfer_starts_it_again_and_completes() {
    join_with_a_kill(true);
}

#[test]
fn a_client_follows_the_ring_version_its_replies_carry() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let addrs = cluster.addresses();
    // A ring refresh far away: only replies can tell this client of the switch.
    let c = Client::connect(
        &addrs,
        ClientOptions {
            coordination: Coordination::ClientDriven,
            ring_refresh: std::time::Duration::from_secs(3600),
            ..ClientOptions::default()
        },
    )
    .unwrap()
    .blocking();
    for k in 0..100 {
        c.put("default", format!("f{k}").as_bytes(), b"v0", None, None)
            .unwrap();
    }
    assert_eq!(c.ring_version(), Some(1));
    let new = cluster.add_node(&[]).unwrap();
    let new_addr = cluster.nodes[new].address.clone();
    admin(&["join", "--nodes", &new_addr, "--seed", &addrs[0]]);
    watch_transfers(&addrs[0]);
    let admin_view = client(&addrs, Coordination::ServerDriven);
    converged(&admin_view, &cluster, 4);
    // One round trip tells the client; the request after it routes on the new ring.
    let g = c.get("default", b"f1", None).unwrap();
    assert_eq!(values(&g), vec![b"v0".to_vec()]);
    c.put("default", b"f2", b"v1", None, None).unwrap();
    assert_eq!(c.ring_version(), Some(2));
    for k in 0..100 {
        let g = c.get("default", format!("f{k}").as_bytes(), None).unwrap();
        assert!(!values(&g).is_empty(), "f{k}");
    }
}

#[test]
fn a_replica_flags_writes_planned_with_another_view_while_a_transfer_is_pending() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = dynamo::cluster::ClusterSpec::new(3, dir.path());
    spec.stores = vec![rocks()];
    spec.partitions = 64;
    // Receivers wait twice the request timeout before they copy: a long pending step.
    spec.request_timeout_ms = 10_000;
    let mut cluster = LocalCluster::start(&spec, std::path::Path::new(EXE)).unwrap();
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let pending = || {
        let s = c.status(Some(&addrs[0])).unwrap();
        s.target_ring_version > s.ring_version
    };
    cluster.add_node(&[addrs[0].clone()]).unwrap();
    eventually(30, "node-1 knows the pending join", pending);
    let write = |step: &'static str| {
        internode(&addrs[0], |node, address| async move {
            let w = dynamo::rpc::ReplicaWrite {
                store: "default",
                key: b"k",
                encoded: &[],
                hint_for: None,
                step,
                reaped: None,
                deadline: None,
            };
            dynamo::rpc::call_replica_write(&node, &address, &w).await
        })
    };
    // The write of a coordinator whose view lacks the pending join (or has another) is
    // flagged, so it learns the view and plans the write again, reaching the joiner.
    assert!(!write("an-older-view/-").unwrap().agrees, "flagged");
    // Callers that do not name a view (read repair) are not checked.
    assert!(write("").unwrap().agrees, "not flagged");
    assert!(pending(), "the join was still pending during the writes");
    // Node-coordinated writes during the change all succeed: the coordinators' views
    // match, or they learn and plan again.
    let nc = client(&addrs, Coordination::ServerDriven);
    for k in 0..50 {
        let key = format!("w{k}");
        nc.put("default", key.as_bytes(), b"v", None, None).unwrap();
        assert_eq!(
            values(&c.get("default", key.as_bytes(), None).unwrap()),
            vec![b"v".to_vec()]
        );
    }
}

#[test]
fn a_node_that_left_drops_its_data_once_the_grace_period_is_over() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = dynamo::cluster::ClusterSpec::new(4, dir.path());
    spec.stores = vec![rocks()];
    spec.partitions = 64;
    spec.membership_grace_ms = 1500;
    spec.drop_moved_partitions = true;
    let cluster = LocalCluster::start(&spec, std::path::Path::new(EXE)).unwrap();
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let keys: Vec<String> = (0..200).map(|k| format!("d{k}")).collect();
    for k in &keys {
        c.put("default", k.as_bytes(), b"v", None, None).unwrap();
    }
    let held = |k: &String| {
        !c.read_replica(&addrs[1], "default", k.as_bytes())
            .unwrap()
            .is_empty()
    };
    assert!(
        keys.iter().any(held),
        "node-2 holds some keys before it leaves"
    );
    admin(&["leave", "--nodes", &addrs[0], "node-2"]);
    watch_transfers(&addrs[0]);
    converged(&c, &cluster, 3);
    eventually(30, "node-2 dropped every partition it gave up", || {
        !keys.iter().any(held)
    });
    for k in &keys {
        let g = c.get("default", k.as_bytes(), None).unwrap();
        assert_eq!(values(&g), vec![b"v".to_vec()], "{k}");
    }
    // A coordinator whose ring is older still takes node-2 for an owner: asked as one,
    // node-2 fails the read rather than answer "none" for a key it dropped; a current
    // owner answers.
    let owner = |key: &str| {
        let ring = c.ring().unwrap().ring;
        let p = ring.partition_for_key("default", key.as_bytes());
        let name = ring.preference_list(p, 3)[0].name.clone();
        addrs[name.trim_start_matches("node-").parse::<usize>().unwrap() - 1].clone()
    };
    let read_as_owner = |address: String, key: String| {
        internode(&address, |node, address| async move {
            dynamo::rpc::call_replica_read(&node, &address, "default", key.as_bytes(), true, None)
                .await
                .map(|(reply, _)| reply.versions)
        })
    };
    let k = keys[0].clone();
    let e = read_as_owner(addrs[1].clone(), k.clone()).unwrap_err();
    // Not Unavailable: the caller must not take node-2 for down.
    assert_eq!(e.kind, dynamo::error::ErrorKind::Quorum, "{e}");
    assert!(e.message.contains("no owner"), "{e}");
    assert!(c
        .read_replica(&addrs[1], "default", k.as_bytes())
        .unwrap()
        .is_empty());
    let versions = read_as_owner(owner(&k), k.clone()).unwrap();
    assert_eq!(versions.len(), 1);
}

#[test]
fn a_replacement_takes_exactly_the_old_nodes_place_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let before = c.ring().unwrap().ring;
    let new = cluster.add_node(&[]).unwrap();
    let new_addr = cluster.nodes[new].address.clone();
    let load = Load::start(&addrs);
    let plan = admin(&[
        "plan", "replace", "--nodes", &addrs[0], "node-2", &new_addr, "--json",
    ]);
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert!(plan["change"].is_null());
    let out = admin(&["replace", "--nodes", &addrs[0], "node-2", &new_addr]);
    assert!(out.contains("replace node-2 by node-4: issued"), "{out}");
    watch_transfers(&addrs[0]);
    converged(&c, &cluster, 3);
    let after = c.ring().unwrap().ring;
    let names: Vec<&str> = after.members().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["node-1", "node-3", "node-4"]);
    assert_eq!(
        before.partitions_of("node-2"),
        after.partitions_of("node-4"),
        "node-4 owns exactly what node-2 owned"
    );
    // node-2 handed everything over: with it gone, every write is still readable.
    cluster.kill(1).unwrap();
    load.finish(&c, true);
}
