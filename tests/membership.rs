//! Membership with real node processes: one ring from one history, gossip and seeds
//! (issue 12).

mod common;

use std::collections::BTreeSet;

use common::*;
use dynamo::client::{BlockingClient, Coordination, NodeStatus};
use dynamo::cluster::LocalCluster;

fn statuses(c: &BlockingClient, cluster: &LocalCluster) -> Vec<NodeStatus> {
    cluster
        .nodes
        .iter()
        .filter(|n| n.pid().is_some())
        .map(|n| c.status(Some(&n.address)).expect("status"))
        .collect()
}

/// Waits until every running node serves the same ring with `members` members, and
/// returns that ring's digest.
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
            rings.len() == 1 && all.iter().all(|s| s.members.len() == members)
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
    cluster.stop(i).unwrap();
    cluster.restart(i).unwrap();
    assert_eq!(converged(&c, &cluster, 4), digest);
    assert_eq!(
        c.status(Some(&cluster.nodes[i].address))
            .unwrap()
            .membership_changes,
        2
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
    for s in statuses(&c, &cluster) {
        assert_eq!(s.membership_changes, 2, "{s:?}");
    }
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
