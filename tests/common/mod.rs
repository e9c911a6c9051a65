//! Helpers shared by the multi-process tests: start a local cluster on OS-chosen
//! ports, talk to it, wait on conditions with deadlines.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dynamo::client::{BlockingClient, Client, ClientOptions, Coordination, GetResponse};
use dynamo::cluster::{ClusterSpec, LocalCluster};
use dynamo::ring::Ring;
use dynamo::store::StoreConfig;

/// The `dynamo` binary under test.
pub const EXE: &str = env!("CARGO_BIN_EXE_dynamo");

/// Starts `nodes` nodes with one store, Q=64.
pub fn start(nodes: usize, dir: &Path, store: StoreConfig) -> LocalCluster {
    let mut spec = ClusterSpec::new(nodes, dir);
    spec.stores = vec![store];
    spec.partitions = 64;
    LocalCluster::start(&spec, Path::new(EXE)).expect("cluster starts")
}

/// The default store on RocksDB.
pub fn rocks() -> StoreConfig {
    StoreConfig {
        engine: "rocksdb".into(),
        ..StoreConfig::default()
    }
}

/// A blocking client with a 3 s timeout.
pub fn client(addrs: &[String], mode: Coordination) -> BlockingClient {
    client_with_timeout(addrs, mode, Duration::from_secs(3))
}

/// A blocking client with the given per-call timeout.
pub fn client_with_timeout(
    addrs: &[String],
    mode: Coordination,
    timeout: Duration,
) -> BlockingClient {
    Client::connect(
        addrs,
        ClientOptions {
            coordination: mode,
            timeout,
            ..ClientOptions::default()
        },
    )
    .expect("client")
    .blocking()
}

/// Polls `cond` every 100 ms for up to `secs`; panics with `what` if it never holds.
pub fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {secs} s waiting for: {what}");
}

/// Sorted copy.
pub fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// The live values of a get, sorted.
pub fn values(g: &GetResponse) -> Vec<Vec<u8>> {
    sorted(g.values().into_iter().map(<[u8]>::to_vec).collect())
}

/// Waits until the node at `observer` sees `name` as `up`.
pub fn wait_health(c: &BlockingClient, observer: &str, name: &str, up: bool) {
    eventually(15, &format!("{observer} to see {name} up={up}"), || {
        c.status(Some(observer))
            .map(|s| s.members.iter().any(|m| m.name == name && m.up == up))
            .unwrap_or(false)
    });
}

/// Runs the `dynamo` CLI: (success, stdout, stderr).
pub fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(EXE).args(args).output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The members in the order requests for `key` (store `default`, N=3) try them: its
/// top 3, then the stand-ins.
pub fn walk(ring: &Ring, key: &str) -> Vec<String> {
    let p = ring.partition_for_key("default", key.as_bytes());
    ring.walk(p, 3).iter().map(|m| m.name.clone()).collect()
}

/// The top 3 (the preference list) of `key` in store `default`.
pub fn top3(ring: &Ring, key: &str) -> Vec<String> {
    walk(ring, key).into_iter().take(3).collect()
}

/// The stand-in a coordinator picks for `owner` of `key` while the members `down` are
/// down: down owners in walk order take the healthy members past the top 3 in order.
pub fn stand_in_for(ring: &Ring, key: &str, down: &[&str], owner: &str) -> Option<String> {
    let w = walk(ring, key);
    let down_owners: Vec<&String> = w[..3]
        .iter()
        .filter(|m| down.contains(&m.as_str()))
        .collect();
    let i = down_owners.iter().position(|m| *m == owner)?;
    w[3..]
        .iter()
        .filter(|m| !down.contains(&m.as_str()))
        .nth(i)
        .cloned()
}

/// The live values one replica holds for `key` (hinted copies included), sorted.
pub fn replica_values(c: &BlockingClient, address: &str, key: &[u8]) -> Vec<Vec<u8>> {
    let vs = c.read_replica(address, "default", key).unwrap_or_default();
    sorted(vs.into_iter().filter_map(|v| v.value).collect())
}

/// Sends `signal` (e.g. "STOP", "CONT") to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// Open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd")
        .count()
}

/// Runs `call` with the internode capability of the node at `address`, on a
/// connection of its own.
pub fn internode<T, F, Fut>(address: &str, call: F) -> Result<T, dynamo::error::DynamoError>
where
    F: FnOnce(dynamo::rpc::internode::Client, String) -> Fut,
    Fut: std::future::Future<Output = Result<T, dynamo::error::DynamoError>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let address = address.to_owned();
    tokio::task::LocalSet::new().block_on(&rt, async move {
        let conn = dynamo::rpc::connect(
            &address,
            std::time::Duration::from_secs(5),
            dynamo::rpc::DEFAULT_MAX_MESSAGE,
        )
        .await?;
        let node = conn.dynamo.internode_request().send().pipeline.get_node();
        let answer = call(node, address).await;
        conn.close();
        answer
    })
}
