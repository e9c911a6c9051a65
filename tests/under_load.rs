//! Issue 19 with real node processes: a node under overload sheds what it cannot serve
//! (`overloaded` or a deadline failure, never a lost or duplicated write), drops work
//! whose deadline passed before it reaches the engine, keeps other calls on a
//! connection working when one times out, never marks a busy peer down, and a write
//! retried through another coordinator leaves one version.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use dynamo::client::{Client, ClientOptions, Coordination, NodeStatus};
use dynamo::cluster::LocalCluster;
use dynamo::error::ErrorKind;

fn index(name: &str) -> usize {
    name.trim_start_matches("node-").parse::<usize>().unwrap() - 1
}

/// Stops node `i`, changes its config, starts it again.
fn reconfigure(
    cluster: &mut LocalCluster,
    i: usize,
    change: impl FnOnce(&mut dynamo::config::NodeConfig),
) {
    cluster.stop(i).unwrap();
    cluster.reconfigure(i, change).unwrap();
    cluster.restart(i).unwrap();
}

fn statuses(c: &dynamo::client::BlockingClient, addrs: &[String]) -> Vec<NodeStatus> {
    addrs.iter().map(|a| c.status(Some(a)).unwrap()).collect()
}

/// Every node sees every member up and has never marked a peer down.
fn assert_nobody_marked_down(c: &dynamo::client::BlockingClient, addrs: &[String]) {
    for s in statuses(c, addrs) {
        let load = s.load.as_ref().expect("load status");
        assert_eq!(
            load.peers_marked_down, 0,
            "{} marked a peer down: {s:?}",
            s.node
        );
        assert!(s.members.iter().all(|m| m.up), "{s:?}");
    }
}

/// Waits until every node has finished rebuilding (a restarted node of a new cluster
/// rebuilds once) and sees every member up.
fn settle(c: &dynamo::client::BlockingClient, addrs: &[String]) {
    eventually(30, "every node rebuilt and every member up", || {
        statuses(c, addrs).iter().all(|s| {
            let rebuilt = s
                .anti_entropy
                .as_ref()
                .and_then(|a| a.rebuild.as_ref())
                .is_none_or(|r| r.stores.iter().all(|st| st.done >= st.partitions));
            rebuilt && s.members.iter().all(|m| m.up)
        })
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Point 10: sixteen times more requests at once than a node admits. Every request
/// either succeeds or fails as `overloaded` or on its deadline; every acknowledged
/// write reads back as exactly its value, no write shows up twice, and no node marks a
/// peer down.
#[test]
fn at_sixteen_times_overload_nothing_is_lost_or_doubled_and_no_peer_is_marked_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let addrs = cluster.addresses();
    const LIMIT: usize = 4;
    for i in 0..3 {
        reconfigure(&mut cluster, i, |cfg| {
            cfg.node.max_in_flight = LIMIT;
            cfg.node.max_in_flight_per_connection = LIMIT;
        });
    }
    let c = client(&addrs, Coordination::ClientDriven);
    let async_client = Client::connect(
        &addrs,
        ClientOptions {
            timeout: Duration::from_secs(3),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let in_flight = 16 * LIMIT * 3;
    let mut outcomes: BTreeMap<String, Result<(), ErrorKind>> = BTreeMap::new();
    let rt = runtime();
    for round in 0..4 {
        let puts = (0..in_flight).map(|i| {
            let c = async_client.clone();
            let key = format!("load-{round}-{i}");
            async move {
                let r = c
                    .put("default", key.as_bytes(), key.as_bytes(), None, None)
                    .await;
                (key, r.map(|_| ()).map_err(|e| e.kind))
            }
        });
        for (key, r) in rt.block_on(futures::future::join_all(puts)) {
            outcomes.insert(key, r);
        }
    }
    let ok = outcomes.values().filter(|r| r.is_ok()).count();
    let kinds: Vec<ErrorKind> = outcomes.values().filter_map(|r| r.err()).collect();
    for k in &kinds {
        assert!(
            matches!(k, ErrorKind::Overloaded | ErrorKind::Timeout),
            "a failure under overload that is neither overloaded nor a deadline: {k:?}"
        );
    }
    let refused: u64 = statuses(&c, &addrs)
        .iter()
        .map(|s| s.load.as_ref().unwrap().overloaded)
        .sum();
    println!(
        "{} requests: {ok} acknowledged, {} failed; the nodes refused {refused} at the door",
        outcomes.len(),
        kinds.len()
    );
    assert!(refused > 0, "the in-flight limit never refused anything");
    assert!(ok > 0, "nothing got through");
    for (key, r) in &outcomes {
        let g = c.get("default", key.as_bytes(), Some(3)).unwrap();
        match r {
            Ok(()) => {
                assert_eq!(g.siblings.len(), 1, "{key}: {g:?}");
                assert_eq!(values(&g), vec![key.as_bytes().to_vec()], "{key}");
            }
            // A refused or expired write may or may not have been applied, once.
            Err(_) => assert!(g.siblings.len() <= 1, "{key} doubled: {g:?}"),
        }
    }
    assert_nobody_marked_down(&c, &addrs);
}

/// Point 10: a replica whose engine is busy past a write's deadline drops that write
/// from its queue unrun (counted), and the slow replica is not marked down.
#[test]
fn a_replica_drops_work_whose_deadline_passed_before_its_engine() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = dynamo::cluster::ClusterSpec::new(3, dir.path());
    spec.stores = vec![rocks()];
    spec.partitions = 64;
    spec.anti_entropy.enabled = false;
    let mut cluster = LocalCluster::start(&spec, std::path::Path::new(EXE)).unwrap();
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let ring = c.ring().unwrap().ring;
    // A key node-3 is not the first owner of: node-3 receives it as a replica write.
    let key = (0..)
        .map(|i| format!("late-{i}"))
        .find(|k| top3(&ring, k)[0] != "node-3")
        .unwrap();
    // node-3 has one engine thread, and an engine call for "hog" holds it for 2 s.
    reconfigure(&mut cluster, 2, |cfg| {
        cfg.node.engine_threads = 1;
        cfg.faults.slow_key = Some("hog".into());
        cfg.faults.slow_ms = 2000;
        cfg.faults.slow_engine = true;
    });
    // Its restart's rebuild is over (it would pull the key from the others).
    settle(&c, &addrs);
    eventually(30, "node-3's engine is idle", || {
        let l = c.status(Some(&addrs[2])).unwrap().load.unwrap();
        l.engine_busy == 0 && l.engine_queued == 0
    });
    let before = c.status(Some(&addrs[2])).unwrap().load.unwrap();
    let hogger = client_with_timeout(&addrs, Coordination::ClientDriven, Duration::from_secs(30));
    let hog_address = addrs[2].clone();
    let hog = std::thread::spawn(move || hogger.read_replica(&hog_address, "default", b"hog"));
    eventually(5, "node-3's engine is busy", || {
        c.status(Some(&addrs[2])).unwrap().load.unwrap().engine_busy > 0 || hog.is_finished()
    });
    let quick = client_with_timeout(
        &addrs,
        Coordination::ClientDriven,
        Duration::from_millis(600),
    );
    quick
        .put("default", key.as_bytes(), b"v", None, Some(1))
        .unwrap();
    hog.join().unwrap().unwrap();
    eventually(10, "node-3 drops the late write", || {
        let now = c.status(Some(&addrs[2])).unwrap().load.unwrap();
        now.engine_expired > before.engine_expired
    });
    assert!(
        replica_values(&c, &addrs[2], key.as_bytes()).is_empty(),
        "the expired write reached node-3's engine"
    );
    assert_nobody_marked_down(&c, &addrs);
}

/// Point 10: while one call to a peer times out, other calls on the same connection
/// go on and succeed, and the peer stays up.
#[test]
fn a_timed_out_call_leaves_the_other_calls_on_its_connection_working() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let addrs = cluster.addresses();
    reconfigure(&mut cluster, 1, |cfg| {
        cfg.faults.slow_key = Some("slow".into());
        cfg.faults.slow_ms = 2000;
    });
    let via1 = client(&addrs[..1], Coordination::ServerDriven);
    wait_health(&via1, &addrs[0], "node-2", true);
    let slow_reader = via1.clone();
    let slow = std::thread::spawn(move || slow_reader.get("default", b"slow", Some(3)));
    for i in 0..40 {
        let k = format!("fast{i}");
        via1.put("default", k.as_bytes(), b"v", None, Some(3))
            .unwrap();
        assert_eq!(
            values(&via1.get("default", k.as_bytes(), Some(3)).unwrap()),
            vec![b"v".to_vec()]
        );
    }
    let e = slow.join().unwrap().unwrap_err();
    assert_eq!(e.kind, ErrorKind::Quorum, "{e}");
    assert!(e.message.contains("timed out"), "{e}");
    assert!(via1.status(Some(&addrs[0])).unwrap().call_timeouts > 0);
    assert_nobody_marked_down(&via1, &addrs);
}

/// Points 6 and 10: the first attempt of a put lands on some replicas but its reply is
/// late, so the client retries it through another coordinator. That yields one
/// version, and a delete made with the context the put returned leaves no value.
#[test]
fn a_write_retried_through_another_coordinator_leaves_one_version_and_its_context_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(5, dir.path(), rocks());
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let ring = c.ring().unwrap().ring;
    let key = "retried-elsewhere";
    let owners = top3(&ring, key);
    // The first owner applies the write but answers late; the third is slow for the
    // key, so the first attempt reaches it only as a hint, if at all.
    reconfigure(&mut cluster, index(&owners[0]), |cfg| {
        cfg.faults.delay_write_reply_ms = 2500
    });
    reconfigure(&mut cluster, index(&owners[2]), |cfg| {
        cfg.faults.slow_key = Some(key.into());
        cfg.faults.slow_ms = 1200;
    });
    let impatient = client_with_timeout(&addrs, Coordination::ClientDriven, Duration::from_secs(1));
    let p = impatient
        .put("default", key.as_bytes(), b"once", None, None)
        .unwrap();
    assert_ne!(p.coordinator, owners[0], "the answer came from the retry");
    let g = c.get("default", key.as_bytes(), Some(2)).unwrap();
    assert_eq!(values(&g), vec![b"once".to_vec()]);
    assert_eq!(
        g.siblings.len(),
        1,
        "the retry made a second version: {g:?}"
    );
    // The delete uses the put's own context, not a read's.
    impatient
        .delete("default", key.as_bytes(), Some(&p.context), None)
        .unwrap();
    // Every replica, stand-ins included, once every hint has been handed off.
    eventually(30, "every hint handed off", || {
        statuses(&c, &addrs)
            .iter()
            .all(|s| s.hints.values().sum::<u64>() == 0)
    });
    let g = c.get("default", key.as_bytes(), Some(2)).unwrap();
    assert!(g.siblings.is_empty(), "a value survived the delete: {g:?}");
    for a in &addrs {
        assert!(
            replica_values(&c, a, key.as_bytes()).is_empty(),
            "{a} still holds a value of the deleted key"
        );
    }
}

/// Point 7: accepted connections are capped (one over the cap is closed at once, and
/// logged) and idle ones are closed; the node goes on serving new ones.
#[test]
fn connections_over_the_cap_and_idle_ones_are_closed_and_the_node_serves_on() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let addrs = cluster.addresses();
    reconfigure(&mut cluster, 0, |cfg| {
        cfg.node.max_connections = 8;
        cfg.node.idle_timeout_ms = 1000;
    });
    let mut raw: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(&addrs[0]).unwrap())
        .collect();
    for (i, s) in raw.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 16];
        // Nothing was sent on it: the node closes it, over the cap or idle. A signal
        // to the test process (a child exiting) interrupts the read: read again.
        let n = loop {
            match s.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // A reset is the node closing it too.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break 0,
                Err(e) => panic!("connection {i} was left open: {e}"),
                Ok(n) => break n,
            }
        };
        assert_eq!(n, 0, "connection {i} got data");
    }
    let log = std::fs::read_to_string(&cluster.nodes[0].log_path).unwrap();
    assert!(log.contains("node.max_connections"), "{log}");
    let c = client(&addrs[..1], Coordination::ServerDriven);
    c.put("default", b"after", b"v", None, None).unwrap();
    assert_eq!(
        values(&c.get("default", b"after", None).unwrap()),
        vec![b"v".to_vec()]
    );
}

/// Point 2: a store with `durability = "sync"` acknowledges concurrent writes (they wait
/// for a shared flush, group commit) and every one reads back.
#[test]
fn a_sync_store_acknowledges_concurrent_writes_after_a_shared_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = rocks();
    store.n = 1;
    store.r = 1;
    store.w = 1;
    store.durability = dynamo::store::group_commit::StoreDurability::Sync;
    let cluster = start(1, dir.path(), store);
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let async_client = Client::connect(&addrs, ClientOptions::default()).unwrap();
    let rt = runtime();
    let puts = (0..32).map(|i| {
        let c = async_client.clone();
        async move {
            let key = format!("synced-{i}");
            c.put("default", key.as_bytes(), b"v", None, None).await
        }
    });
    for r in rt.block_on(futures::future::join_all(puts)) {
        r.unwrap();
    }
    for i in 0..32 {
        let key = format!("synced-{i}");
        assert_eq!(
            values(&c.get("default", key.as_bytes(), None).unwrap()),
            vec![b"v".to_vec()]
        );
    }
}

/// Point 6: a replica that already holds a version of a request answers a write of
/// another attempt of it (another dot, same request id) with the version it holds,
/// and keeps one version of the request whichever attempt arrives first.
#[test]
fn a_replica_answers_another_attempt_of_a_request_with_the_version_it_holds() {
    use dynamo::dot::{Actor, Dot};
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(3, dir.path(), rocks());
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let key = b"attempted-twice";
    c.put("default", key, b"once", None, None).unwrap();
    let replica = &addrs[0];
    eventually(10, "the replica holds the put", || {
        c.read_replica(replica, "default", key)
            .is_ok_and(|v| v.len() == 1)
    });
    let held = c.read_replica(replica, "default", key).unwrap().remove(0);
    let id = held.request_id.expect("the client sends a request id");
    let attempt = |incarnation: u64| dynamo::version::Version {
        dot: Dot::new(Actor::new(incarnation, 1), 1),
        request_id: Some(id),
        ..held.clone()
    };
    let write = |v: dynamo::version::Version| {
        internode(replica, |node, address| async move {
            let encoded = dynamo::rpc::encode_versions(&[v]);
            let w = dynamo::rpc::ReplicaWrite {
                store: "default",
                key,
                encoded: &encoded,
                hint_for: None,
                step: "",
                reaped: None,
                deadline: None,
            };
            dynamo::rpc::call_replica_write(&node, &address, &w).await
        })
        .unwrap()
    };
    // A later dot: the replica keeps its own version and names it.
    let later = attempt(u64::MAX);
    assert!(later.dot > held.dot);
    let ack = write(later);
    assert_eq!(ack.held.len(), 1, "{ack:?}");
    assert_eq!(ack.held[0].dot, held.dot);
    let now = c.read_replica(replica, "default", key).unwrap();
    assert_eq!(now.len(), 1, "two versions of one request: {now:?}");
    assert_eq!(now[0].dot, held.dot);
    // An earlier dot stands for the request from now on, on every replica alike.
    let earlier = attempt(1);
    assert!(earlier.dot < held.dot);
    let dot = earlier.dot;
    let ack = write(earlier);
    assert!(ack.held.is_empty(), "{ack:?}");
    let now = c.read_replica(replica, "default", key).unwrap();
    assert_eq!(now.len(), 1, "two versions of one request: {now:?}");
    assert_eq!(now[0].dot, dot);
    assert_eq!(now[0].value.as_deref(), Some(&b"once"[..]));
}

/// Point 2: reads the engine can answer from memory (RocksDB's memtable and block
/// cache) are served on the event loop, without a hop to the engine pool; `dynamo
/// status` counts them.
#[test]
fn reads_of_keys_in_memory_are_served_without_an_engine_pool_hop() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = rocks();
    store.n = 1;
    store.r = 1;
    store.w = 1;
    let cluster = start(1, dir.path(), store);
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let before = c
        .status(Some(&addrs[0]))
        .unwrap()
        .load
        .unwrap()
        .cached_reads;
    for i in 0..20 {
        let key = format!("hot-{i}");
        c.put("default", key.as_bytes(), b"v", None, None).unwrap();
        assert_eq!(
            values(&c.get("default", key.as_bytes(), None).unwrap()),
            vec![b"v".to_vec()]
        );
    }
    let after = c
        .status(Some(&addrs[0]))
        .unwrap()
        .load
        .unwrap()
        .cached_reads;
    assert!(after - before >= 20, "{before} -> {after}");
}
