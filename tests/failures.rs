//! The failure paths, with real node processes: nodes killed with SIGKILL and
//! requests sent at once, stopped with SIGSTOP, bounced, slow, or with a failing
//! engine; each test names the point of the failure-paths issue it shows.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use dynamo::client::{BlockingClient, Coordination, NodeStatus};
use dynamo::cluster::LocalCluster;
use dynamo::error::ErrorKind;
use dynamo::store::StoreConfig;

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

fn statuses(c: &BlockingClient, addrs: &[String]) -> Vec<NodeStatus> {
    addrs
        .iter()
        .filter_map(|a| c.status(Some(a)).ok())
        .collect()
}

fn hints_for(c: &BlockingClient, addrs: &[String], owner: &str) -> u64 {
    statuses(c, addrs)
        .iter()
        .map(|s| s.hints.get(owner).copied().unwrap_or(0))
        .sum()
}

fn cli_get(nodes: &str, key: &str) -> serde_json::Value {
    let (ok, out, err) = cli(&["get", "--nodes", nodes, "--json", key]);
    assert!(ok, "get {key} failed: {err}");
    serde_json::from_str(&out).unwrap()
}

fn cli_values(g: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = g["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_str().unwrap_or("(deleted)").to_owned())
        .collect();
    v.sort();
    v
}

/// Point 1: a get whose replicas fail mid-request moves on to stand-ins, so reads and
/// updates sent right after two owners are SIGKILLed (no time for the failure detector)
/// all succeed, through the CLI.
#[test]
fn reads_and_updates_right_after_sigkill_of_two_owners_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(5, dir.path(), rocks());
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let ring = c.ring().unwrap().ring;
    let (a, b) = ("node-2", "node-4");
    let keys: Vec<String> = (0..2000)
        .map(|i| format!("sk{i}"))
        .filter(|k| {
            let top = top3(&ring, k);
            top.iter().any(|m| m == a) && top.iter().any(|m| m == b)
        })
        .take(10)
        .collect();
    assert_eq!(keys.len(), 10);
    for k in &keys {
        c.put("default", k.as_bytes(), b"v1", None, None).unwrap();
    }
    // Every owner holds it (the third replica write may finish after the answer).
    for k in &keys {
        for m in top3(&ring, k) {
            let addr = &addrs[index(&m)];
            eventually(10, &format!("{m} holds {k}"), || {
                replica_values(&c, addr, k.as_bytes()) == vec![b"v1".to_vec()]
            });
        }
    }
    cluster.kill(index(a)).unwrap();
    cluster.kill(index(b)).unwrap();
    let nodes = addrs.join(",");
    for k in &keys {
        let g = cli_get(&nodes, k);
        assert_eq!(cli_values(&g), vec!["v1"], "{k}");
        let ctx = g["context"].as_str().unwrap();
        let (ok, _, err) = cli(&["put", "--nodes", &nodes, "--context", ctx, k, "v2"]);
        assert!(ok, "update of {k} failed: {err}");
        assert_eq!(cli_values(&cli_get(&nodes, k)), vec!["v2"], "{k}");
    }
}

/// Point 2: a stand-in's "not found" never hides an owner's value. Gets at R=2 go
/// through a node that coordinates everything itself (never forwards), so it reads
/// its own empty replica as a stand-in, next to the one surviving owner.
#[test]
fn a_stand_ins_not_found_never_hides_the_acknowledged_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(5, dir.path(), rocks());
    let addrs = cluster.addresses();
    reconfigure(&mut cluster, 4, |cfg| cfg.faults.never_forward = true);
    let c = client(&addrs, Coordination::ClientDriven);
    let via5 = client(&addrs[4..], Coordination::ServerDriven);
    let ring = c.ring().unwrap().ring;
    let mut acked: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..200 {
        let k = format!("nf{i}");
        c.put("default", k.as_bytes(), b"v0", None, None).unwrap();
        acked.insert(k, b"v0".to_vec());
    }
    for (round, pair) in [
        ["node-1", "node-2"],
        ["node-3", "node-4"],
        ["node-1", "node-3"],
    ]
    .iter()
    .enumerate()
    {
        // Nothing owed from the last round: every replica is current before killing.
        eventually(30, "hints delivered", || {
            statuses(&c, &addrs).iter().all(|s| s.hints.is_empty())
        });
        for m in pair {
            cluster.kill(index(m)).unwrap();
        }
        let mut checked = 0;
        for (k, v) in acked.iter_mut() {
            let top = top3(&ring, k);
            if !pair.iter().all(|m| top.contains(&m.to_string())) {
                continue;
            }
            checked += 1;
            let g = via5.get("default", k.as_bytes(), Some(2)).unwrap();
            assert_eq!(values(&g), vec![v.clone()], "{k} via node-5, round {round}");
            let g = c.get("default", k.as_bytes(), Some(2)).unwrap();
            assert_eq!(values(&g), vec![v.clone()], "{k}, round {round}");
            let next = format!("v{}", round + 1).into_bytes();
            c.put("default", k.as_bytes(), &next, Some(&g.context), None)
                .unwrap();
            let g = c.get("default", k.as_bytes(), Some(2)).unwrap();
            assert_eq!(values(&g), vec![next.clone()], "{k}: no sibling");
            *v = next;
        }
        assert!(checked >= 20, "round {round} checked only {checked} keys");
        for m in pair {
            cluster.restart(index(m)).unwrap();
        }
        for m in pair {
            for a in &addrs {
                if *a != addrs[index(m)] {
                    wait_health(&c, a, m, true);
                }
            }
        }
    }
}

/// Point 3: a coordinator SIGKILLed inside the buffered engine's flush window loses its
/// last write locally, but the write lives on at the other replicas; after the
/// restart the coordinator must not issue that write's dot again.
#[test]
fn a_coordinator_killed_in_the_flush_window_never_reuses_a_dot() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreConfig {
        engine: "buffered:rocksdb".into(),
        ..StoreConfig::default()
    };
    let mut cluster = start(3, dir.path(), store);
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let ring = c.ring().unwrap().ring;
    for round in 0..3 {
        let k = format!("flush{round}");
        let coordinator = top3(&ring, &k)[0].clone();
        let first = c.put("default", k.as_bytes(), b"one", None, None).unwrap();
        assert_eq!(first.coordinator, coordinator);
        for a in &addrs {
            eventually(10, "every replica holds the first write", || {
                replica_values(&c, a, k.as_bytes()) == vec![b"one".to_vec()]
            });
        }
        // Let the first write reach the coordinator's disk, then kill it right after
        // the second is acknowledged.
        std::thread::sleep(Duration::from_millis(300));
        c.put("default", k.as_bytes(), b"two", Some(&first.context), None)
            .unwrap();
        cluster.kill(index(&coordinator)).unwrap();
        cluster.restart(index(&coordinator)).unwrap();
        let fresh = client(&addrs, Coordination::ClientDriven);
        let third = fresh
            .put(
                "default",
                k.as_bytes(),
                b"three",
                Some(&first.context),
                None,
            )
            .unwrap();
        assert_eq!(third.coordinator, coordinator);
        let g = fresh.get("default", k.as_bytes(), Some(3)).unwrap();
        assert_eq!(
            values(&g),
            vec![b"three".to_vec(), b"two".to_vec()],
            "both acknowledged writes survive, round {round}"
        );
    }
}

/// Point 5: blind 1 MiB puts to one key stop at the record limit with a clear error;
/// the key stays readable and a put with its context resolves it.
#[test]
fn blind_megabyte_puts_stop_at_the_record_limit_and_the_key_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(3, dir.path(), rocks());
    let c = client(&cluster.addresses(), Coordination::ClientDriven);
    let mut refused = 0;
    for i in 0..100u8 {
        let value = vec![i; 1 << 20];
        match c.put("default", b"big", &value, None, None) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::TooLarge, "{e}");
                assert!(e.message.contains("4 siblings"), "{e}");
                assert!(e.message.contains("context"), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 96);
    let g = c.get("default", b"big", None).unwrap();
    assert_eq!(g.siblings.len(), 4);
    assert!(g.values().iter().all(|v| v.len() == 1 << 20));
    c.put("default", b"big", b"resolved", Some(&g.context), None)
        .unwrap();
    assert_eq!(
        values(&c.get("default", b"big", Some(3)).unwrap()),
        vec![b"resolved".to_vec()]
    );
}

/// Point 6: hints owed to a down owner never hold up another owner's: with 600+ hints
/// for node-1 on one stand-in, a bounced node-2 gets its hints within seconds. Hints
/// for a node that is no longer a member show in status.
#[test]
fn a_bounced_owner_gets_its_hints_while_a_dead_owner_has_hundreds_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(5, dir.path(), rocks());
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let ring = c.ring().unwrap().ring;
    let names: Vec<String> = (1..=5).map(|i| format!("node-{i}")).collect();
    // Owner `dead` sorts before `bounced`, so its hints come first in a stand-in's
    // hint keyspace: a handoff that scanned everything would meet them first.
    let keys_for = |owner: &str, down: &[&str], stand_in: &str, n: usize| -> Vec<String> {
        (0..40_000)
            .map(|i| format!("{owner}-h{i}"))
            .filter(|k| {
                let top = top3(&ring, k);
                top.iter().any(|m| m == owner)
                    && down
                        .iter()
                        .all(|d| *d == owner || !top.iter().any(|m| m == d))
                    && stand_in_for(&ring, k, down, owner).as_deref() == Some(stand_in)
            })
            .take(n)
            .collect()
    };
    let mut found = None;
    'search: for d in 0..5 {
        for b in d + 1..5 {
            for s in (0..5).filter(|s| *s != d && *s != b) {
                let (dead, bounced, s) = (&names[d], &names[b], &names[s]);
                let for_dead = keys_for(dead, &[dead], s, 620);
                let for_bounced = keys_for(bounced, &[dead, bounced], s, 30);
                if for_dead.len() == 620 && for_bounced.len() == 30 {
                    found = Some((
                        dead.clone(),
                        bounced.clone(),
                        s.clone(),
                        for_dead,
                        for_bounced,
                    ));
                    break 'search;
                }
            }
        }
    }
    let (dead, bounced, stand_in, for_dead, for_bounced) =
        found.expect("a stand-in that holds hints for two owners");
    let (dead, bounced, stand_in) = (dead.as_str(), bounced.as_str(), stand_in.as_str());
    cluster.kill(index(dead)).unwrap();
    for k in &for_dead {
        c.put("default", k.as_bytes(), b"v", None, None).unwrap();
    }
    let s5 = &addrs[index(stand_in)];
    let owed = |owner: &str| -> u64 {
        c.status(Some(s5))
            .unwrap()
            .hints
            .get(owner)
            .copied()
            .unwrap_or(0)
    };
    // Stand-in writes may finish just after the put answered.
    eventually(10, "600+ hints for the dead owner", || owed(dead) >= 600);
    cluster.kill(index(bounced)).unwrap();
    for k in &for_bounced {
        c.put("default", k.as_bytes(), b"b", None, None).unwrap();
    }
    eventually(10, "hints for the bounced owner", || owed(bounced) >= 30);
    cluster.restart(index(bounced)).unwrap();
    eventually(10, "the bounced owner's hints delivered", || {
        owed(bounced) == 0
    });
    for k in &for_bounced {
        assert_eq!(
            replica_values(&c, &addrs[index(bounced)], k.as_bytes()),
            vec![b"b".to_vec()],
            "{k} on {bounced}"
        );
    }
    assert!(owed(dead) >= 600);

    // The dead owner leaves the stand-in's membership: its hints cannot be delivered,
    // and status says so.
    let i5 = index(stand_in);
    reconfigure(&mut cluster, i5, |cfg| {
        cfg.cluster.members.retain(|m| m.name != dead)
    });
    let s = c.status(Some(s5)).unwrap();
    assert!(
        s.hints_for_non_members.get(dead).copied().unwrap_or(0) >= 600,
        "{s:?}"
    );
    assert!(!s.hints.contains_key(dead));
    let (ok, out, _) = cli(&["status", "--nodes", s5]);
    assert!(ok);
    assert!(out.contains("no longer a member"), "{out}");
}

/// Point 7: after a W=1 put answered, the replica writes still in flight run on; two
/// owners stopped during the put get stand-ins with hints, and the value reaches them
/// after they resume, without any get.
#[test]
fn replicas_stopped_during_a_w1_put_get_the_value_without_a_read() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(5, dir.path(), rocks());
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let ring = c.ring().unwrap().ring;
    let key = "w1-key";
    let top = top3(&ring, key);
    let stopped: Vec<u32> = top[1..]
        .iter()
        .map(|m| cluster.nodes[index(m)].pid().unwrap())
        .collect();
    for pid in &stopped {
        signal(*pid, "STOP");
    }
    let p = c.put("default", key.as_bytes(), b"v", None, Some(1));
    let running: Vec<String> = addrs
        .iter()
        .enumerate()
        .filter(|(i, _)| !top[1..].iter().any(|m| index(m) == *i))
        .map(|(_, a)| a.clone())
        .collect();
    let owed = || {
        top[1..]
            .iter()
            .map(|m| hints_for(&c, &running, m))
            .sum::<u64>()
    };
    let seen_hints = {
        let mut seen = false;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !seen && std::time::Instant::now() < deadline {
            seen = owed() >= 2;
            std::thread::sleep(Duration::from_millis(50));
        }
        seen
    };
    for pid in &stopped {
        signal(*pid, "CONT");
    }
    assert_eq!(p.unwrap().coordinator, top[0]);
    assert!(
        seen_hints,
        "stand-ins took the writes the stopped owners missed"
    );
    for m in &top[1..] {
        eventually(15, &format!("{m} holds the value"), || {
            replica_values(&c, &addrs[index(m)], key.as_bytes()) == vec![b"v".to_vec()]
        });
    }
    eventually(15, "hints delivered", || owed() == 0);
}

/// Point 8: a put whose reply is lost after it was applied is retried by the client on
/// another owner; the retry finds the version by its request id: one sibling.
#[test]
fn a_retried_put_whose_reply_was_lost_makes_one_sibling() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let ring = c.ring().unwrap().ring;
    let key = "retried";
    let first = top3(&ring, key)[0].clone();
    reconfigure(&mut cluster, index(&first), |cfg| {
        cfg.faults.delay_write_reply_ms = 3000
    });
    let impatient = client_with_timeout(&addrs, Coordination::ClientDriven, Duration::from_secs(1));
    let p = impatient
        .put("default", key.as_bytes(), b"once", None, None)
        .unwrap();
    assert_ne!(p.coordinator, first, "the reply came from the retry");
    let g = c.get("default", key.as_bytes(), Some(3)).unwrap();
    assert_eq!(values(&g), vec![b"once".to_vec()]);
    assert_eq!(g.siblings.len(), 1);
    let d = impatient
        .delete("default", key.as_bytes(), Some(&g.context), None)
        .unwrap();
    assert_ne!(d.coordinator, first);
    assert!(c
        .get("default", key.as_bytes(), Some(3))
        .unwrap()
        .siblings
        .is_empty());
}

/// Point 9: a timed-out call fails that call only (other calls to the same peer go on
/// and the peer stays up), and connections given up are closed: no descriptors leak
/// across 100 timeouts to a stopped peer.
#[test]
fn timeouts_fail_one_call_and_leak_no_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let addrs = cluster.addresses();
    // node-2 answers reads and writes of one key late; node-1 probes often.
    reconfigure(&mut cluster, 1, |cfg| {
        cfg.faults.slow_key = Some("slow".into());
        cfg.faults.slow_ms = 1500;
    });
    reconfigure(&mut cluster, 0, |cfg| {
        cfg.node.ping_interval_ms = 20;
        cfg.node.request_timeout_ms = 200;
    });
    let via1 = client(&addrs[..1], Coordination::ServerDriven);
    wait_health(&via1, &addrs[0], "node-2", true);
    let before = via1.status(Some(&addrs[0])).unwrap().call_timeouts;
    // A read at R=3 needs node-2's slow reply: it times out, alone.
    let e = via1.get("default", b"slow", Some(3)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Quorum, "{e}");
    assert!(e.message.contains("timed out"), "{e}");
    assert!(via1.status(Some(&addrs[0])).unwrap().call_timeouts > before);
    for i in 0..20 {
        let k = format!("fast{i}");
        via1.put("default", k.as_bytes(), b"v", None, Some(3))
            .unwrap();
    }
    let s = via1.status(Some(&addrs[0])).unwrap();
    assert!(
        s.members.iter().all(|m| m.up),
        "one slow reply marks nobody down: {s:?}"
    );

    let pid1 = cluster.nodes[0].pid().unwrap();
    let pid3 = cluster.nodes[2].pid().unwrap();
    let fds_before = open_fds(pid1);
    signal(pid3, "STOP");
    let start = via1.status(Some(&addrs[0])).unwrap().call_timeouts;
    eventually(60, "100 timeouts to the stopped peer", || {
        via1.status(Some(&addrs[0])).unwrap().call_timeouts >= start + 100
    });
    let fds_after = open_fds(pid1);
    signal(pid3, "CONT");
    assert!(
        fds_after <= fds_before + 5,
        "node-1 had {fds_before} descriptors before 100 timeouts and {fds_after} after"
    );
}

/// Point 9: a panic inside an engine call is an error naming the store and key; the
/// node then reports itself unhealthy and stops answering pings.
#[test]
fn an_engine_panic_is_an_error_and_the_node_stops_looking_alive() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let addrs = cluster.addresses();
    reconfigure(&mut cluster, 1, |cfg| {
        cfg.faults.panic_on_key = Some("boom".into())
    });
    let c = client(&addrs, Coordination::ClientDriven);
    let e = c.read_replica(&addrs[1], "default", b"boom").unwrap_err();
    assert!(e.message.contains("panicked"), "{e}");
    assert!(
        e.message.contains("\"default\"") && e.message.contains("boom"),
        "{e}"
    );
    let s = c.status(Some(&addrs[1])).unwrap();
    let why = s.unhealthy.expect("the node says it is unhealthy");
    assert!(why.contains("boom"), "{why}");
    let log = std::fs::read_to_string(&cluster.nodes[1].log_path).unwrap();
    assert!(log.contains("panicked on key \"boom\""), "{log}");
    wait_health(&c, &addrs[0], "node-2", false);
    wait_health(&c, &addrs[2], "node-2", false);
    // The cluster goes on without it.
    c.put("default", b"after", b"v", None, None).unwrap();
    assert_eq!(
        values(&c.get("default", b"after", None).unwrap()),
        vec![b"v".to_vec()]
    );
    let e = c.read_replica(&addrs[1], "default", b"after").unwrap_err();
    assert!(e.message.contains("storage"), "{e}");
}

/// Point 10: a node outside a key's top N that coordinates a put (here it never
/// forwards) does not count itself toward W nor keep the version: the owners get it.
#[test]
fn an_outsider_coordinating_a_put_writes_to_the_owners_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(5, dir.path(), rocks());
    let addrs = cluster.addresses();
    reconfigure(&mut cluster, 4, |cfg| cfg.faults.never_forward = true);
    let c = client(&addrs, Coordination::ClientDriven);
    let ring = c.ring().unwrap().ring;
    let keys: Vec<String> = (0..500)
        .map(|i| format!("out{i}"))
        .filter(|k| !top3(&ring, k).contains(&"node-5".to_string()))
        .take(5)
        .collect();
    let via5 = client(&addrs[4..], Coordination::ServerDriven);
    for k in &keys {
        let p = via5.put("default", k.as_bytes(), b"v", None, None).unwrap();
        assert_eq!(p.coordinator, "node-5");
        for m in top3(&ring, k) {
            eventually(10, &format!("{m} holds {k}"), || {
                replica_values(&c, &addrs[index(&m)], k.as_bytes()) == vec![b"v".to_vec()]
            });
        }
        assert!(replica_values(&c, &addrs[4], k.as_bytes()).is_empty());
    }
    assert!(c.status(Some(&addrs[4])).unwrap().hints.is_empty());
}

/// Stops a `dynamo cluster up` child (Ctrl-C) however the test ends.
struct ClusterUp(std::process::Child);

impl Drop for ClusterUp {
    fn drop(&mut self) {
        signal(self.0.id(), "INT");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cluster_file(dir: &std::path::Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("cluster.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn pid_of(file: &serde_json::Value, node: &str) -> Option<u32> {
    file["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == node)?["pid"]
        .as_u64()
        .map(|p| p as u32)
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped) is not alive.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// Point 11: `dynamo cluster up` reports a node's death and keeps the others
/// running; `dynamo cluster restart` starts it again; `cluster.json` holds the live
/// pids; Ctrl-C stops every node.
#[test]
fn cluster_up_survives_a_node_death_and_restarts_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("c");
    let err_path = dir.path().join("up.err");
    let up = std::process::Command::new(EXE)
        .args(["cluster", "up", "--nodes", "3", "--dir"])
        .arg(&d)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("up.out")).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let up = ClusterUp(up);
    eventually(90, "cluster.json lists 3 running nodes", || {
        cluster_file(&d).is_some_and(|f| {
            ["node-1", "node-2", "node-3"]
                .iter()
                .all(|n| pid_of(&f, n).is_some())
        })
    });
    let file = cluster_file(&d).unwrap();
    let addrs: Vec<String> = file["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["address"].as_str().unwrap().to_owned())
        .collect();
    let pids: Vec<u32> = ["node-1", "node-2", "node-3"]
        .iter()
        .map(|n| pid_of(&file, n).unwrap())
        .collect();
    signal(pids[1], "KILL");
    eventually(10, "cluster up reports the death", || {
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        err.contains("node-2 died") && err.contains("signal: 9") && err.contains("node.log")
    });
    let file = cluster_file(&d).unwrap();
    assert_eq!(pid_of(&file, "node-2"), None, "{file}");
    assert_eq!(pid_of(&file, "node-1"), Some(pids[0]));
    assert!(alive(pids[0]) && alive(pids[2]));
    let c = client(&addrs, Coordination::ClientDriven);
    c.put("default", b"still", b"up", None, None).unwrap();
    assert_eq!(
        values(&c.get("default", b"still", None).unwrap()),
        vec![b"up".to_vec()]
    );

    let (ok, out, err) = cli(&["cluster", "restart", "--dir", d.to_str().unwrap(), "node-2"]);
    assert!(ok, "restart failed: {err}");
    assert!(out.contains("node-2"), "{out}");
    let file = cluster_file(&d).unwrap();
    let new_pid = pid_of(&file, "node-2").expect("a pid after the restart");
    assert_ne!(new_pid, pids[1]);
    assert!(alive(new_pid));
    assert_eq!(c.status(Some(&addrs[1])).unwrap().node, "node-2");
    let (ok, _, err) = cli(&["cluster", "restart", "--dir", d.to_str().unwrap(), "node-9"]);
    assert!(!ok && err.contains("no node \"node-9\""), "{err}");

    drop(up);
    for pid in [pids[0], new_pid, pids[2]] {
        eventually(20, &format!("node pid {pid} stopped"), || !alive(pid));
    }
    let (ok, _, err) = cli(&["cluster", "restart", "--dir", d.to_str().unwrap(), "node-2"]);
    assert!(
        !ok && err.contains("no `dynamo cluster up` is running"),
        "{err}"
    );
}

/// Point 12: absurd local cluster sizes are refused with a clear error.
#[test]
fn absurd_cluster_sizes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for n in ["0", "100000", "70000"] {
        let (ok, _, err) = cli(&["cluster", "up", "--nodes", n, "--dir", d]);
        assert!(!ok, "--nodes {n} was accepted");
        assert!(err.contains("1 to 100"), "--nodes {n}: {err}");
    }
    let (ok, _, err) = cli(&[
        "cluster",
        "up",
        "--nodes",
        "3",
        "--base-port",
        "65534",
        "--dir",
        d,
    ]);
    assert!(!ok);
    assert!(err.contains("past 65535"), "{err}");
    let (ok, _, err) = cli(&["put", "--nodes", "127.0.0.1:1", "--w", "300", "k", "v"]);
    assert!(!ok);
    assert!(err.contains("300"), "{err}");
}
