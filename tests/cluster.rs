//! Multi-node tests: real `dynamo node` processes on 127.0.0.1 (ports chosen by the
//! OS), N=3/R=2/W=2 unless stated, driven through `dynamo::Client` and the CLI. Every
//! cluster is stopped when its `LocalCluster` is dropped, failed assertion or not.

mod common;

use std::process::Command;

use common::*;
use dynamo::client::{BlockingClient, Client, ClientOptions, Coordination};
use dynamo::error::ErrorKind;
use dynamo::store::StoreConfig;

#[test]
fn put_get_round_trip_siblings_and_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(3, dir.path(), rocks());
    for mode in [Coordination::ClientDriven, Coordination::ServerDriven] {
        let c = client(&cluster.addresses(), mode);
        let key = format!("cart-{mode:?}");
        let k = key.as_bytes();
        assert!(c.get("default", k, None).unwrap().siblings.is_empty());
        c.put("default", k, b"apple", None, None).unwrap();
        let g = c.get("default", k, None).unwrap();
        assert_eq!(values(&g), vec![b"apple".to_vec()]);

        // A second put without a context does not overwrite: two siblings.
        c.put("default", b"conflict", b"x", None, None).ok();
        let fresh = format!("fresh-{mode:?}");
        c.put("default", fresh.as_bytes(), b"a", None, None)
            .unwrap();
        c.put("default", fresh.as_bytes(), b"b", None, None)
            .unwrap();
        let g = c.get("default", fresh.as_bytes(), None).unwrap();
        assert_eq!(values(&g), vec![b"a".to_vec(), b"b".to_vec()]);
        // A put with the merged context resolves them.
        c.put("default", fresh.as_bytes(), b"ab", Some(&g.context), None)
            .unwrap();
        let g = c.get("default", fresh.as_bytes(), None).unwrap();
        assert_eq!(values(&g), vec![b"ab".to_vec()]);

        // Delete with the context: the key reads as absent.
        c.delete("default", fresh.as_bytes(), Some(&g.context), None)
            .unwrap();
        assert!(c
            .get("default", fresh.as_bytes(), None)
            .unwrap()
            .siblings
            .is_empty());
    }
}

#[test]
fn sigkill_of_one_node_keeps_puts_and_gets_working() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let c = client(&cluster.addresses(), Coordination::ClientDriven);
    for i in 0..20 {
        c.put("default", format!("k{i}").as_bytes(), b"before", None, None)
            .unwrap();
    }
    cluster.kill(1).unwrap();
    // No waiting for failure detection: the very first requests must succeed.
    for i in 0..20 {
        let k = format!("k{i}");
        let g = c.get("default", k.as_bytes(), None).unwrap();
        assert_eq!(values(&g), vec![b"before".to_vec()], "{k}");
        c.put("default", k.as_bytes(), b"after", Some(&g.context), None)
            .unwrap();
        let g = c.get("default", k.as_bytes(), None).unwrap();
        assert_eq!(values(&g), vec![b"after".to_vec()], "{k}");
    }
    for i in 0..20 {
        let k = format!("new{i}");
        c.put("default", k.as_bytes(), b"v", None, None).unwrap();
        assert_eq!(
            values(&c.get("default", k.as_bytes(), None).unwrap()),
            vec![b"v".to_vec()]
        );
    }
}

#[test]
fn hints_accumulate_on_stand_ins_and_are_delivered_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(5, dir.path(), rocks());
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let ring = c.ring().unwrap().ring;
    let victim = 2usize;
    let victim_name = cluster.nodes[victim].name.clone();
    let victim_addr = cluster.nodes[victim].address.clone();
    // Keys whose preference list holds the victim.
    let keys: Vec<String> = (0..400)
        .map(|i| format!("h{i}"))
        .filter(|k| {
            ring.key_preference_list("default", k.as_bytes(), 3)
                .iter()
                .any(|m| m.name == victim_name)
        })
        .take(30)
        .collect();
    assert_eq!(keys.len(), 30);

    // Server-driven: a node outside a key's top N forwards to an owner, which coordinates.
    let top: Vec<String> = ring
        .key_preference_list("default", b"fwd", 3)
        .iter()
        .map(|m| m.name.clone())
        .collect();
    let outsider = cluster
        .nodes
        .iter()
        .find(|n| !top.contains(&n.name))
        .unwrap();
    let via = client(
        std::slice::from_ref(&outsider.address),
        Coordination::ServerDriven,
    );
    let p = via
        .put("default", b"fwd", b"forwarded", None, None)
        .unwrap();
    assert!(
        top.contains(&p.coordinator),
        "{} coordinated, not one of {top:?}",
        p.coordinator
    );
    let g = via.get("default", b"fwd", None).unwrap();
    assert!(top.contains(&g.coordinator));
    assert_eq!(values(&g), vec![b"forwarded".to_vec()]);
    for k in &keys {
        c.put("default", k.as_bytes(), b"v1", None, None).unwrap();
    }
    cluster.kill(victim).unwrap();
    let live: Vec<String> = addrs
        .iter()
        .filter(|a| **a != victim_addr)
        .cloned()
        .collect();
    for a in &live {
        wait_health(&c, a, &victim_name, false);
    }
    let mut latest = Vec::new();
    for k in &keys {
        let g = c.get("default", k.as_bytes(), None).unwrap();
        c.put("default", k.as_bytes(), b"v2", Some(&g.context), None)
            .unwrap();
        latest.push(k.clone());
    }
    let backlog = |c: &BlockingClient| -> u64 {
        live.iter()
            .map(|a| {
                c.status(Some(a))
                    .unwrap()
                    .hints
                    .get(&victim_name)
                    .copied()
                    .unwrap_or(0)
            })
            .sum()
    };
    let held = backlog(&c);
    assert!(
        held >= keys.len() as u64,
        "every write for {victim_name} left a hint: {held}"
    );

    cluster.restart(victim).unwrap();
    eventually(30, "hints delivered and removed", || backlog(&c) == 0);
    // The restarted owner serves the latest versions from its own replica.
    for k in &latest {
        let versions = c
            .read_replica(&victim_addr, "default", k.as_bytes())
            .unwrap();
        let vals: Vec<&[u8]> = versions.iter().filter_map(|v| v.value.as_deref()).collect();
        assert_eq!(vals, vec![&b"v2"[..]], "{k} on {victim_name}");
    }
}

/// In both modes a full read hears a stale replica and repairs it. Client-driven, the
/// client library reads the replicas itself and repairs them (paper section 6.4): the
/// answer names no node as coordinator. Server-driven, a node coordinates and repairs.
#[test]
fn read_repair_heals_a_stale_replica() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let addrs = cluster.addresses();
    for mode in [Coordination::ClientDriven, Coordination::ServerDriven] {
        let c = client(&addrs, mode);
        let key = format!("rr-{mode:?}");
        let key = key.as_bytes();
        c.put("default", key, b"old", None, None).unwrap();
        // The third replica's write may still be in flight after the W=2 acknowledgement.
        eventually(10, "node-3 holds the first write", || {
            c.read_replica(&addrs[2], "default", key)
                .map(|v| v.len() == 1)
                .unwrap_or(false)
        });
        cluster.kill(2).unwrap();
        let g = c.get("default", key, None).unwrap();
        c.put("default", key, b"new", Some(&g.context), None)
            .unwrap();
        cluster.restart(2).unwrap();
        let stale = &addrs[2];
        let on_stale = |c: &BlockingClient| -> Vec<Vec<u8>> {
            let vs = c.read_replica(stale, "default", key).unwrap();
            sorted(vs.into_iter().filter_map(|v| v.value).collect())
        };
        assert_eq!(
            on_stale(&c),
            vec![b"old".to_vec()],
            "node-3 missed the write"
        );
        for a in &addrs[..2] {
            wait_health(&c, a, "node-3", true);
        }
        // A full read (R=3) hears node-3's stale answer; the newest version wins.
        let g = c.get("default", key, Some(3)).unwrap();
        assert_eq!(values(&g), vec![b"new".to_vec()]);
        match mode {
            Coordination::ClientDriven => assert_eq!(g.coordinator, "client"),
            Coordination::ServerDriven => assert!(g.coordinator.starts_with("node-")),
        }
        eventually(10, "read repair of node-3", || {
            on_stale(&c) == vec![b"new".to_vec()]
        });
    }
}

#[test]
fn two_of_three_down_fails_the_write_quorum_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let p = c.put("default", b"q", b"acknowledged", None, None).unwrap();
    cluster.kill(1).unwrap();
    cluster.kill(2).unwrap();
    let survivor = client(&addrs[..1], Coordination::ServerDriven);
    wait_health(&survivor, &addrs[0], "node-2", false);
    wait_health(&survivor, &addrs[0], "node-3", false);
    let err = survivor
        .put("default", b"q", b"half", Some(&p.context), None)
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Quorum, "{err}");
    for needle in ["W=2", "node-2", "node-3", "node-1", "nothing was written"] {
        assert!(err.message.contains(needle), "{needle:?} missing in: {err}");
    }
    // What the survivor holds is the acknowledged value only.
    let g = survivor.get("default", b"q", Some(1)).unwrap();
    assert_eq!(values(&g), vec![b"acknowledged".to_vec()]);
    let err = survivor.get("default", b"q", None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Quorum, "{err}");
    assert!(err.message.contains("R=2"), "{err}");
}

#[test]
fn nodes_restarted_on_rocksdb_keep_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start(3, dir.path(), rocks());
    let addrs = cluster.addresses();
    let c = client(&addrs, Coordination::ClientDriven);
    let ids: Vec<String> = addrs
        .iter()
        .map(|a| c.status(Some(a)).unwrap().node_id)
        .collect();
    for i in 0..30 {
        c.put(
            "default",
            format!("p{i}").as_bytes(),
            format!("v{i}").as_bytes(),
            None,
            None,
        )
        .unwrap();
    }
    for i in 0..3 {
        let status = cluster.stop(i).unwrap().expect("was running");
        assert!(status.success(), "SIGTERM is a clean shutdown: {status}");
        let log = std::fs::read_to_string(&cluster.nodes[i].log_path).unwrap();
        assert!(log.contains("stopped"), "{log}");
    }
    for i in 0..3 {
        cluster.restart(i).unwrap();
    }
    let c = client(&addrs, Coordination::ClientDriven);
    for i in 0..30 {
        let g = c.get("default", format!("p{i}").as_bytes(), None).unwrap();
        assert_eq!(values(&g), vec![format!("v{i}").into_bytes()]);
        // Every replica has it, not just a quorum.
        for a in &addrs {
            assert_eq!(
                c.read_replica(a, "default", format!("p{i}").as_bytes())
                    .unwrap()
                    .len(),
                1
            );
        }
    }
    let again: Vec<String> = addrs
        .iter()
        .map(|a| c.status(Some(a)).unwrap().node_id)
        .collect();
    assert_eq!(ids, again, "the identity survives a restart");

    // A node whose data directory is wiped comes back as a new incarnation.
    cluster.kill(2).unwrap();
    std::fs::remove_dir_all(dir.path().join("node-3").join("data")).unwrap();
    cluster.restart(2).unwrap();
    let fresh = c.status(Some(&addrs[2])).unwrap().node_id;
    assert_ne!(fresh, ids[2]);
    assert!(c
        .read_replica(&addrs[2], "default", b"p0")
        .unwrap()
        .is_empty());
    let g = c.get("default", b"p0", None).unwrap();
    assert_eq!(values(&g), vec![b"v0".to_vec()]);
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(EXE).args(args).output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_reader_that_goes_away_ends_the_cli_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(3, dir.path(), StoreConfig::default());
    let nodes = cluster.addresses().join(",");
    let (ok, _, err) = cli(&["put", "--nodes", &nodes, "k", "v"]);
    assert!(ok, "{err}");
    // As `dynamo get ... | head -0` does: the read end is closed before anything is
    // written (the command first has to reach the cluster).
    for args in [
        vec!["get", "--nodes", &nodes, "k"],
        vec!["status", "--nodes", &nodes],
        vec!["admin", "plan", "leave", "--nodes", &nodes, "node-3"],
    ] {
        let mut child = Command::new(EXE)
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn cli_round_trip_and_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(
        3,
        dir.path(),
        StoreConfig {
            engine: "rocksdb".into(),
            max_value_size: 1000,
            ..StoreConfig::default()
        },
    );
    let nodes = cluster.addresses().join(",");
    let (ok, out, err) = cli(&["put", "--nodes", &nodes, "--json", "greeting", "hello"]);
    assert!(ok, "{err}");
    let put: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = put["context"].as_str().unwrap().to_owned();
    let (ok, out, _) = cli(&["get", "--nodes", &nodes, "--json", "greeting"]);
    assert!(ok);
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["siblings"][0]["value"], "hello");
    assert_eq!(got["siblings"][0]["value_base64"], "aGVsbG8=");
    assert_eq!(got["siblings"][0]["deleted"], false);
    let (ok, out, _) = cli(&[
        "delete",
        "--nodes",
        &nodes,
        "--json",
        "--context",
        &token,
        "greeting",
    ]);
    assert!(ok);
    assert!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["context"].is_string());
    let (ok, out, _) = cli(&["get", "--nodes", &nodes, "--json", "greeting"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["siblings"],
        serde_json::json!([])
    );

    let big = "x".repeat(2000);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["get", "--nodes", &nodes, "--store", "nope", "k"],
            "unknown store",
        ),
        (vec!["put", "--nodes", &nodes, "k", &big], "max_value_size"),
        (
            vec![
                "put",
                "--nodes",
                &nodes,
                "--context",
                "not-a-token!",
                "k",
                "v",
            ],
            "context",
        ),
        (vec!["get", "--nodes", "127.0.0.1:1", "k"], "unreachable"),
        (
            vec!["put", "--nodes", &nodes, "--w", "4", "k", "v"],
            "between 1 and n=3",
        ),
    ];
    for (args, needle) in cases {
        let mut with_json = args.clone();
        with_json.push("--json");
        let (ok, out, err) = cli(&with_json);
        assert!(!ok, "{args:?} should fail");
        assert!(
            err.to_lowercase().contains(needle),
            "{args:?}: stderr {err:?} lacks {needle:?}"
        );
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON error on stdout");
        assert!(
            v["error"].as_str().unwrap().to_lowercase().contains(needle),
            "{v}"
        );
    }
    // The store was not touched by the refused requests.
    let (ok, out, _) = cli(&["get", "--nodes", &nodes, "--json", "k"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["siblings"],
        serde_json::json!([])
    );
}

#[test]
fn a_bad_config_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(
        &path,
        "[node]\nname = \"a\"\n\n[[stores]]\nname = \"s\"\nr = 9\n",
    )
    .unwrap();
    let (ok, _, err) = cli(&["node", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("stores[0].r"), "{err}");
}

#[test]
fn a_single_node_with_the_default_quorum_says_why_writes_fail() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(1, dir.path(), rocks());
    let c = client(&cluster.addresses(), Coordination::ClientDriven);
    let err = c.put("default", b"k", b"v", None, None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Quorum);
    assert!(err.message.contains("only 1 member"), "{err}");
    assert!(err.message.contains("nothing was written"), "{err}");
    // W=1 for this request works, and R=1 reads it back.
    let p = c.put("default", b"k", b"v", None, Some(1)).unwrap();
    assert_eq!(p.coordinator, "node-1");
    assert_eq!(
        values(&c.get("default", b"k", Some(1)).unwrap()),
        vec![b"v".to_vec()]
    );
}

/// Calls made on the client's connection thread (`LocalClient`, no thread hop) behave as
/// through `Client`: many at once, puts with contexts resolve siblings, a delete with a
/// put's context leaves nothing, and what they write reads back through `Client`.
#[test]
fn calls_on_the_connection_thread_match_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(3, dir.path(), rocks());
    let client = Client::connect(&cluster.addresses(), ClientOptions::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt
        .block_on(client.on_connection_thread(|local| async move {
            let mut tasks = Vec::new();
            for i in 0..64u32 {
                let local = local.clone();
                tasks.push(tokio::task::spawn_local(async move {
                    let key = format!("local-{i}");
                    let put = local
                        .put("default", key.as_bytes(), b"one", None, None)
                        .await?;
                    local
                        .put("default", key.as_bytes(), b"two", Some(&put.context), None)
                        .await?;
                    let got = local.get("default", key.as_bytes(), None).await?;
                    Ok::<_, dynamo::error::DynamoError>((key, got))
                }));
            }
            let mut seen = Vec::new();
            for t in tasks {
                seen.push(t.await.expect("task ran"));
            }
            let put = local
                .put("default", b"local-gone", b"x", None, None)
                .await?;
            local
                .delete("default", b"local-gone", Some(&put.context), None)
                .await?;
            let gone = local.get("default", b"local-gone", None).await?;
            Ok::<_, dynamo::error::DynamoError>((seen, gone))
        }))
        .expect("the connection thread ran the closure");
    let (seen, gone) = outcome.expect("every call succeeded");
    assert_eq!(seen.len(), 64);
    for result in seen {
        let (key, got) = result.expect("each put, put and get succeeded");
        assert_eq!(values(&got), vec![b"two".to_vec()], "key {key}");
    }
    assert!(
        gone.siblings.is_empty(),
        "a delete with the put's context leaves nothing"
    );
    let blocking = client.blocking();
    let g = blocking.get("default", b"local-7", None).unwrap();
    assert_eq!(values(&g), vec![b"two".to_vec()]);
}
