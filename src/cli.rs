//! The `dynamo` binary's cluster commands: node, put/get/delete, status, cluster up and
//! the workload benchmark. (Part of the binary, not the library.)

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use clap::Args;
use dynamo::bench::workload::{self, KeyDistribution, Workload, WorkloadOptions, WorkloadReport};
use dynamo::client::{Client, ClientOptions, Coordination, GetResponse, NodeStatus};
use dynamo::cluster::{ClusterSpec, LocalCluster};
use dynamo::config::NodeConfig;
use dynamo::error::DynamoError;
use dynamo::store::StoreConfig;

/// `dynamo node`.
#[derive(Args)]
pub struct NodeArgs {
    /// The node's TOML config (see docs/config.md).
    #[arg(long)]
    pub config: PathBuf,
}

/// Options shared by the client commands.
#[derive(Args, Clone)]
pub struct Target {
    /// Node addresses, comma-separated (any node of the cluster will do).
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Coordination: client (send to the key's coordinator) or server (any node).
    #[arg(long, default_value = "client")]
    pub mode: Coordination,
    /// Per-call timeout in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
}

/// `dynamo get|put|delete`.
#[derive(Args)]
pub struct KvArgs {
    #[command(flatten)]
    pub target: Target,
    /// The store.
    #[arg(long, default_value = "default")]
    pub store: String,
    /// The key (UTF-8 text).
    pub key: String,
    /// Context token from an earlier get or put (put and delete).
    #[arg(long)]
    pub context: Option<String>,
    /// Read quorum for this request (get).
    #[arg(long)]
    pub r: Option<u8>,
    /// Write quorum for this request (put and delete).
    #[arg(long)]
    pub w: Option<u8>,
}

/// `dynamo put` adds the value.
#[derive(Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub kv: KvArgs,
    /// The value (UTF-8 text).
    pub value: String,
}

/// `dynamo status`.
#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
}

/// `dynamo cluster up`.
#[derive(Args)]
pub struct ClusterUpArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Directory for the nodes' configs, data and logs.
    #[arg(long)]
    pub dir: PathBuf,
    /// First port; nodes listen on consecutive ports (default: ports the OS picks).
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Engine of the `default` store.
    #[arg(long, default_value = dynamo::store::default_engine())]
    pub engine: String,
}

/// `dynamo cluster restart`.
#[derive(Args)]
pub struct ClusterRestartArgs {
    /// The directory `dynamo cluster up` was started with.
    #[arg(long)]
    pub dir: PathBuf,
    /// The node to start again (e.g. node-2).
    pub node: String,
}

/// `dynamo bench` against a cluster.
#[derive(Args)]
pub struct WorkloadArgs {
    /// Node addresses of a running cluster, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "spawn")]
    pub nodes: Vec<String>,
    /// Start a local cluster of this many nodes for the run (N=3, R=2, W=2; fewer nodes
    /// lower N, R and W to fit: one node is N=R=W=1) and stop it afterwards.
    #[arg(long)]
    pub spawn: Option<usize>,
    /// Engine of the spawned cluster's store.
    #[arg(long, default_value = dynamo::store::default_engine())]
    pub engine: String,
    /// Durability of the spawned cluster's store: os (the default) or sync (on disk
    /// before the acknowledgement, with group commit).
    #[arg(long, default_value = "os", value_parser = parse_durability)]
    pub durability: dynamo::store::group_commit::StoreDurability,
    /// Directory of the spawned cluster (default: a temporary directory, removed).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Workload: a (50/50 read/update), b (95/5), c (read-only), w (write-only).
    #[arg(long, default_value = "a")]
    pub workload: Workload,
    /// Key distribution: zipfian or uniform.
    #[arg(long, default_value = "zipfian")]
    pub distribution: KeyDistribution,
    /// Records loaded before the run.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Operations in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The bench client's bound on its calls in flight to one node; past it, calls
    /// wait in the client (writes that finish a read-modify-write first).
    #[arg(long, default_value_t = dynamo::client::DEFAULT_MAX_IN_FLIGHT_PER_NODE)]
    pub max_in_flight_per_node: usize,
    /// Measured seconds per mode.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Target operations per second (open loop); default: as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Coordination: client, server or both (one run each, same cluster).
    #[arg(long, default_value = "client")]
    pub mode: String,
    /// Store to use.
    #[arg(long, default_value = "default")]
    pub store: String,
    /// Skip loading the records.
    #[arg(long)]
    pub no_load: bool,
    /// Unmeasured seconds of the workload before the first measured run (caches,
    /// connections and allocator warm up, so the first mode is not penalised).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// With --spawn: start one more node this long into the measured run (e.g. 5s,
    /// 500ms) and join it with `dynamo admin join`; the report adds the transfer's
    /// throughput, how long the join took, and p99 before, during and after it.
    #[arg(long, requires = "spawn", value_parser = parse_duration)]
    pub join_at: Option<Duration>,
    /// With --spawn: after the measured run (the baseline), wipe the last node's data
    /// directory and run the workload again while it rebuilds from the other
    /// replicas; the report adds both p99s side by side, the rebuild's rate, and each
    /// node's idle CPU afterwards (anti-entropy with nothing to repair).
    #[arg(long, requires = "spawn", conflicts_with = "join_at")]
    pub wipe: bool,
    /// With --wipe: seconds of idleness over which CPU is measured.
    #[arg(long, default_value_t = 10.0, requires = "wipe")]
    pub idle: f64,
}

/// `5s`, `500ms`, `2m` or plain seconds (`5`, `2.5`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(v) = t.strip_suffix("ms") {
        (v, 0.001)
    } else if let Some(v) = t.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = t.strip_suffix('m') {
        (v, 60.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v >= 0.0 => Duration::try_from_secs_f64(v * scale)
            .map_err(|_| format!("{s:?} is too long a duration")),
        _ => Err(format!("{s:?} is not a duration like 5s, 500ms or 2m")),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs a node until SIGTERM / Ctrl-C.
pub fn node(args: NodeArgs) -> Result<()> {
    let cfg = NodeConfig::load(&args.config)?;
    dynamo::node::run(cfg)?;
    Ok(())
}

fn client(t: &Target) -> Result<Client, DynamoError> {
    Client::connect(
        &t.nodes,
        ClientOptions {
            coordination: t.mode,
            timeout: Duration::from_millis(t.timeout_ms),
            ..ClientOptions::default()
        },
    )
}

/// Prints a failure the scriptable way and returns the exit code.
fn fail(json: bool, e: &DynamoError) -> std::process::ExitCode {
    eprintln!("error: {e}");
    if json {
        out!(
            "{}",
            serde_json::json!({"error": e.message, "kind": e.kind})
        );
    }
    std::process::ExitCode::FAILURE
}

fn get_json(g: &GetResponse) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let siblings: Vec<serde_json::Value> = g
        .siblings
        .iter()
        .map(|s| match &s.value {
            Some(v) => serde_json::json!({
                "value": std::str::from_utf8(v).ok(),
                "value_base64": b64.encode(v),
                "deleted": false,
            }),
            None => serde_json::json!({"value": null, "value_base64": null, "deleted": true}),
        })
        .collect();
    serde_json::json!({"siblings": siblings, "context": g.context})
}

/// `dynamo get`.
pub fn get(args: KvArgs) -> std::process::ExitCode {
    let json = args.target.json;
    let result = client(&args.target)
        .and_then(|c| c.blocking().get(&args.store, args.key.as_bytes(), args.r));
    match result {
        Err(e) => fail(json, &e),
        Ok(g) => {
            if json {
                out!("{}", get_json(&g));
            } else {
                if g.siblings.is_empty() {
                    out!("(not found)");
                }
                for (i, s) in g.siblings.iter().enumerate() {
                    let shown = match &s.value {
                        None => "(deleted)".to_owned(),
                        Some(v) => match std::str::from_utf8(v) {
                            Ok(t) => t.to_owned(),
                            Err(_) => format!(
                                "(binary, base64) {}",
                                base64::engine::general_purpose::STANDARD.encode(v)
                            ),
                        },
                    };
                    if g.siblings.len() > 1 {
                        out!("sibling {}: {shown}", i + 1);
                    } else {
                        out!("{shown}");
                    }
                }
                out!("context: {}", g.context);
            }
            std::process::ExitCode::SUCCESS
        }
    }
}

/// `dynamo put` (value `Some`) and `dynamo delete`.
pub fn put(args: KvArgs, value: Option<String>) -> std::process::ExitCode {
    let json = args.target.json;
    let result = client(&args.target).and_then(|c| {
        let b = c.blocking();
        match &value {
            Some(v) => b.put(
                &args.store,
                args.key.as_bytes(),
                v.as_bytes(),
                args.context.as_deref(),
                args.w,
            ),
            None => b.delete(
                &args.store,
                args.key.as_bytes(),
                args.context.as_deref(),
                args.w,
            ),
        }
    });
    match result {
        Err(e) => fail(json, &e),
        Ok(p) => {
            if json {
                out!("{}", serde_json::json!({"context": p.context}));
            } else {
                out!("ok (coordinated by {})", p.coordinator);
                out!("context: {}", p.context);
            }
            std::process::ExitCode::SUCCESS
        }
    }
}

fn render_status(s: &NodeStatus) -> String {
    let mut out = format!(
        "node {} at {} (id {}, up {:.0} s, {} request(s) in flight)\n",
        s.node,
        s.address,
        s.node_id,
        s.uptime_ms as f64 / 1000.0,
        s.in_flight
    );
    let digest = s
        .membership_digest
        .get(..12)
        .unwrap_or(&s.membership_digest);
    out.push_str(&match s.ring_version {
        0 => "membership: not learned yet (asking the seeds)\n".to_string(),
        v if v < s.target_ring_version => format!(
            "membership: ring version {v} serving, {} once the transfers finish; {} change(s), digest {digest}\n",
            s.target_ring_version, s.membership_changes,
        ),
        v => format!(
            "membership: ring version {v}, {} change(s), digest {digest}\n",
            s.membership_changes,
        ),
    });
    if let Some(t) = &s.transfer {
        let done = t.partitions.iter().filter(|p| p.state == "done").count();
        out.push_str(&format!(
            "transfer ({}, change {}): {}; {done} of {} partition(s) done, {} keys, {} bytes, {} bytes/s{}\n",
            t.action,
            t.change,
            t.phase,
            t.partitions.len(),
            t.keys,
            t.bytes,
            t.rate_bytes_per_s,
            t.eta_ms
                .map(|ms| format!(", ETA {:.0} s", ms as f64 / 1000.0))
                .unwrap_or_default()
        ));
        for p in t.partitions.iter().filter(|p| p.state != "done").take(8) {
            out.push_str(&format!(
                "  partition {} {} -> {}: {}, {} keys, {} bytes\n",
                p.partition,
                p.from.join("/"),
                p.to,
                p.state,
                p.keys,
                p.bytes
            ));
        }
    }
    if let Some(ae) = &s.anti_entropy {
        out.push_str(&render_anti_entropy(ae));
    }
    if let Some(l) = &s.load {
        out.push_str(&format!(
            "load: limit {} in flight; refused {} overloaded at the door and {} at the engine \
             queue; dropped {} expired request(s) and {} expired engine call(s); engine pool \
             {} thread(s), {} busy, {} call(s) queued; {} read(s) served from memory without \
             the pool; {} call(s) to peers timed out; peers marked down {} time(s)\n",
            l.max_in_flight,
            l.overloaded,
            l.engine_refused,
            l.expired,
            l.engine_expired,
            l.engine_threads,
            l.engine_busy,
            l.engine_queued,
            l.cached_reads,
            s.call_timeouts,
            l.peers_marked_down
        ));
    }
    out.push_str(&format!(
        "{:<16} {:<22} {:<5} {:>10} {:>6}  {}\n",
        "member", "address", "state", "partitions", "hints", "last error"
    ));
    if let Some(why) = &s.unhealthy {
        out.push_str(&format!("UNHEALTHY: {why}\n"));
    }
    for m in &s.members {
        out.push_str(&format!(
            "{:<16} {:<22} {:<5} {:>10} {:>6}  {}\n",
            m.name,
            m.address,
            if m.up { "up" } else { "DOWN" },
            m.partitions,
            s.hints.get(&m.name).copied().unwrap_or(0),
            m.last_error.as_deref().unwrap_or("")
        ));
    }
    for (owner, n) in &s.hints_for_non_members {
        out.push_str(&format!(
            "{n} hint(s) owed to {owner}, which is no longer a member: they cannot be delivered\n"
        ));
    }
    for st in &s.stores {
        out.push_str(&format!(
            "store {}: engine {}, N={} R={} W={}, policy {}, max value {} bytes\n",
            st.name, st.engine, st.n, st.r, st.w, st.policy, st.max_value_size
        ));
    }
    out
}

fn render_anti_entropy(ae: &dynamo::node::anti_entropy::AntiEntropyStatus) -> String {
    let mut out = String::new();
    if !ae.enabled {
        out.push_str("anti-entropy: off ([anti_entropy] enabled = false)\n");
    } else {
        out.push_str(&format!(
            "anti-entropy: {} exchange(s), {} key(s) repaired ({} difference(s) seen), trees {}/{} ready, oldest exchange {}\n",
            ae.exchanges,
            ae.keys_repaired,
            ae.differences_seen,
            ae.trees_ready,
            ae.trees_total,
            match (ae.oldest_exchange_age_ms, &ae.oldest_exchange) {
                (Some(ms), Some(w)) => format!("{:.1} s ago ({w})", ms as f64 / 1000.0),
                _ => "(no partition has another replica)".into(),
            }
        ));
        out.push_str(&format!(
            "tombstones: {} held, {} reaped{}\n",
            ae.tombstones,
            ae.reaped,
            ae.last_kept
                .as_ref()
                .map(|k| format!("; last kept: {k}"))
                .unwrap_or_default()
        ));
    }
    if let Some(e) = &ae.last_error {
        out.push_str(&format!("anti-entropy last error: {e}\n"));
    }
    if let Some(r) = &ae.rebuild {
        for st in &r.stores {
            out.push_str(&format!(
                "rebuild of store {} (new data here): {} of {} partition(s), {} keys, {} bytes, {} keys/s{}\n",
                st.store,
                st.done,
                st.partitions,
                st.keys,
                st.bytes,
                st.keys_per_s,
                st.last_error
                    .as_ref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            ));
        }
    }
    let a = &ae.admission;
    out.push_str(&format!(
        "background budget: {} units/s (foreground p99 {:.1} ms over {} request(s), target {} ms)\n",
        a.budget_units_per_s,
        a.foreground_p99_us as f64 / 1000.0,
        a.foreground_requests,
        a.target_p99_ms
    ));
    for h in &ae.refused_hints {
        out.push_str(&format!(
            "refused hint: store {} key {} for {}: {} ({} attempt(s), next in {:.0} s)\n",
            h.store,
            h.key,
            h.owner,
            h.reason,
            h.attempts,
            h.retry_in_ms as f64 / 1000.0
        ));
    }
    out
}

/// `dynamo status`: the first node of `--nodes` (each, with several).
pub fn status(args: StatusArgs) -> std::process::ExitCode {
    let json = args.target.json;
    let c = match client(&args.target) {
        Ok(c) => c,
        Err(e) => return fail(json, &e),
    };
    let mut all = Vec::new();
    for a in &args.target.nodes {
        match c.blocking().status(Some(a)) {
            Ok(s) => all.push(s),
            Err(e) => return fail(json, &e),
        }
    }
    if json {
        let v = if all.len() == 1 {
            serde_json::to_value(&all[0])
        } else {
            serde_json::to_value(&all)
        };
        out!("{}", v.unwrap_or_default());
    } else {
        for s in &all {
            out!("{}", render_status(s).trim_end_matches('\n'));
        }
    }
    std::process::ExitCode::SUCCESS
}

fn parse_durability(s: &str) -> Result<dynamo::store::group_commit::StoreDurability, String> {
    match s {
        "os" => Ok(dynamo::store::group_commit::StoreDurability::Os),
        "sync" => Ok(dynamo::store::group_commit::StoreDurability::Sync),
        other => Err(format!("unknown durability {other:?}: use os or sync")),
    }
}

fn store_for(engine: &str) -> StoreConfig {
    StoreConfig {
        engine: engine.to_owned(),
        ..StoreConfig::default()
    }
}

/// The control socket of a running `dynamo cluster up`, in its directory.
fn control_socket(dir: &std::path::Path) -> PathBuf {
    dir.join("control.sock")
}

/// `dynamo cluster up`: starts the nodes and stays until Ctrl-C / SIGTERM. A node that
/// dies is reported (name, exit status, log) and the others keep running;
/// `dynamo cluster restart` starts it again through the control socket.
pub fn cluster_up(args: ClusterUpArgs) -> Result<()> {
    let exe = std::env::current_exe().context("finding the dynamo binary")?;
    let mut spec = ClusterSpec::new(args.nodes, &args.dir);
    spec.base_port = args.base_port;
    spec.stores = vec![store_for(&args.engine)];
    let mut cluster = LocalCluster::start(&spec, &exe)?;
    let addrs = cluster.addresses().join(",");
    println!(
        "cluster of {} node(s) is up in {}:",
        args.nodes,
        cluster.dir().display()
    );
    for n in &cluster.nodes {
        println!(
            "  {}  {}  pid {}  config {}  log {}",
            n.name,
            n.address,
            n.pid().map_or("-".into(), |p| p.to_string()),
            n.config_path.display(),
            n.log_path.display()
        );
    }
    let dir = cluster.dir().to_owned();
    println!("try:");
    println!("  dynamo put --nodes {addrs} greeting hello");
    println!("  dynamo get --nodes {addrs} greeting");
    println!("  dynamo status --nodes {addrs}");
    println!("  dynamo bench --nodes {addrs} --duration 10");
    println!(
        "  dynamo cluster restart --dir {} NODE   (after a node died)",
        dir.display()
    );
    println!("Ctrl-C stops every node.");
    let _ = std::io::stdout().flush();
    let rt = runtime()?;
    let served = rt.block_on(async {
        let sock = control_socket(&dir);
        let _ = std::fs::remove_file(&sock);
        let control = match tokio::net::UnixListener::bind(&sock) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!(
                    "warning: no control socket at {} ({e}): `dynamo cluster restart` will not work",
                    sock.display()
                );
                None
            }
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok::<_, anyhow::Error>(()),
                _ = term.recv() => return Ok(()),
                _ = tick.tick() => {
                    for (i, status) in cluster.reap_exited()? {
                        let n = &cluster.nodes[i];
                        eprintln!(
                            "{} died: {status}; its log: {}. The other nodes keep running; start it again with: dynamo cluster restart --dir {} {}",
                            n.name,
                            n.log_path.display(),
                            dir.display(),
                            n.name
                        );
                    }
                }
                conn = async { control.as_ref().expect("guarded").accept().await }, if control.is_some() => {
                    if let Ok((stream, _)) = conn {
                        serve_control(&mut cluster, stream).await;
                    }
                }
            }
        }
    });
    eprintln!("stopping the cluster");
    cluster.stop_all();
    let _ = std::fs::remove_file(control_socket(&dir));
    served
}

/// Answers one request on the control socket: `restart NODE` → one line, `ok ...`
/// or `error ...`.
async fn serve_control(cluster: &mut LocalCluster, stream: tokio::net::UnixStream) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(read).read_line(&mut line),
    )
    .await;
    if !matches!(read, Ok(Ok(_))) {
        return;
    }
    let reply = match line.trim().split_once(' ') {
        Some(("restart", name)) => match cluster.index_of(name) {
            None => format!(
                "error: no node {name:?} in this cluster (nodes: {})",
                cluster
                    .nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(i) => match tokio::task::block_in_place(|| cluster.restart(i)) {
                Ok(()) => {
                    let n = &cluster.nodes[i];
                    let pid = n.pid().map_or("-".into(), |p| p.to_string());
                    eprintln!("{} restarted (pid {pid})", n.name);
                    format!("ok {} restarted at {} (pid {pid})", n.name, n.address)
                }
                Err(e) => format!("error: {e:#}"),
            },
        },
        _ => format!("error: unknown request {:?}", line.trim()),
    };
    let _ = write.write_all(format!("{reply}\n").as_bytes()).await;
}

/// `dynamo cluster restart --dir DIR NODE`: asks the `dynamo cluster up` running on
/// DIR to start NODE again on its data directory.
pub fn cluster_restart(args: ClusterRestartArgs) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let sock = control_socket(&args.dir);
    let mut stream = std::os::unix::net::UnixStream::connect(&sock).with_context(|| {
        format!(
            "no `dynamo cluster up` is running on {} (its control socket {} does not answer)",
            args.dir.display(),
            sock.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(90)))?;
    writeln!(stream, "restart {}", args.node)?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .context("reading the answer of `dynamo cluster up`")?;
    let reply = reply.trim();
    match reply.strip_prefix("ok ") {
        Some(ok) => {
            println!("{ok}");
            Ok(())
        }
        None => anyhow::bail!("{}", reply.strip_prefix("error: ").unwrap_or(reply)),
    }
}

/// `dynamo bench --nodes ... | --spawn N`.
pub fn bench_workload(args: WorkloadArgs) -> Result<()> {
    let modes: Vec<Coordination> = match args.mode.as_str() {
        "both" => vec![Coordination::ClientDriven, Coordination::ServerDriven],
        m => vec![m.parse().map_err(anyhow::Error::msg)?],
    };
    anyhow::ensure!(args.keys >= 1, "--keys must be at least 1");
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(
        args.max_in_flight_per_node >= 1,
        "--max-in-flight-per-node must be at least 1"
    );
    anyhow::ensure!(args.duration > 0.0, "--duration must be positive");
    if let Some(r) = args.rate {
        anyhow::ensure!(r > 0.0, "--rate must be positive");
    }
    let mut temp = None;
    let mut cluster = None;
    let nodes = match args.spawn {
        Some(k) => {
            let dir = match &args.dir {
                Some(d) => d.clone(),
                None => {
                    let t = tempfile::Builder::new()
                        .prefix("dynamo-bench-cluster-")
                        .tempdir()?;
                    let p = t.path().to_owned();
                    temp = Some(t);
                    p
                }
            };
            let mut spec = ClusterSpec::new(k, &dir);
            let mut store = store_for(&args.engine);
            store.n = store.n.min(k.max(1));
            store.r = store.r.min(store.n);
            store.w = store.w.min(store.n);
            store.durability = args.durability;
            eprintln!(
                "starting a local cluster of {k} nodes (N={}, R={}, W={}, engine {}, durability {:?}) in {}",
                store.n,
                store.r,
                store.w,
                args.engine,
                store.durability,
                dir.display()
            );
            spec.stores = vec![store];
            let exe = std::env::current_exe().context("finding the dynamo binary")?;
            let c = LocalCluster::start(&spec, &exe)?;
            let addrs = c.addresses();
            cluster = Some(c);
            addrs
        }
        None => {
            anyhow::ensure!(
                !args.nodes.is_empty(),
                "give --nodes ADDR[,ADDR...] or --spawn N"
            );
            args.nodes.clone()
        }
    };
    let rt = runtime()?;
    let mut reports: Vec<WorkloadReport> = Vec::new();
    let mut join = None;
    let mut rebuild = None;
    for (i, mode) in modes.iter().enumerate() {
        let opts = WorkloadOptions {
            nodes: nodes.clone(),
            store: args.store.clone(),
            workload: args.workload,
            distribution: args.distribution,
            keys: args.keys,
            value_size: args.value_size,
            concurrency: args.concurrency,
            duration: Duration::from_secs_f64(args.duration),
            rate: args.rate,
            coordination: *mode,
            max_in_flight_per_node: args.max_in_flight_per_node,
            seed: 2007 + i as u64,
            // Every node's, or none (a partial sum would not be the cluster's).
            node_pids: cluster
                .as_ref()
                .and_then(|c| {
                    c.nodes
                        .iter()
                        .map(|n| n.pid())
                        .collect::<Option<Vec<u32>>>()
                })
                .unwrap_or_default(),
        };
        let client = workload::client_for(&opts)?;
        if i == 0 && !args.no_load {
            eprintln!("loading {} records of {} bytes", opts.keys, opts.value_size);
            rt.block_on(workload::load(&client, &opts, |n| {
                eprintln!("  loaded {n}")
            }))?;
        }
        if i == 0 && args.warmup > 0.0 {
            eprintln!("warming up for {:.0} s", args.warmup);
            let warm = WorkloadOptions {
                duration: Duration::from_secs_f64(args.warmup),
                ..opts.clone()
            };
            rt.block_on(workload::run(&client, &warm));
        }
        eprintln!(
            "running workload {:?} ({:?} keys, {} in flight{}) for {:.0} s, {:?}",
            opts.workload,
            opts.distribution,
            opts.concurrency,
            opts.rate
                .map_or(String::new(), |r| format!(", target {r:.0} ops/s")),
            args.duration,
            mode
        );
        let report = match (i, args.join_at, cluster.take()) {
            (0, Some(at), Some(mut c)) => {
                let phases = Arc::new(workload::Phases::default());
                let start = std::time::Instant::now();
                let deadline = start + opts.duration;
                let driver = {
                    let phases = phases.clone();
                    std::thread::spawn(move || {
                        let r =
                            dynamo::bench::join::join_during(&mut c, start, at, deadline, &phases);
                        (c, r)
                    })
                };
                let (report, per_phase) =
                    rt.block_on(workload::run_phased(&client, &opts, Some(phases)));
                let (c, progress) = driver
                    .join()
                    .map_err(|_| anyhow::anyhow!("the join driver panicked"))?;
                cluster = Some(c);
                join = Some(progress?.finish(per_phase));
                report
            }
            (0, _, Some(mut c)) if args.wipe => {
                let baseline = rt.block_on(workload::run(&client, &opts));
                let victim = c.nodes.len() - 1;
                let name = c.nodes[victim].name.clone();
                eprintln!("wiping {name}'s data directory and running the workload again");
                dynamo::bench::rebuild::wipe(&mut c, victim)?;
                let address = c.nodes[victim].address.clone();
                let phases = Arc::new(workload::Phases::default());
                let deadline = std::time::Instant::now() + opts.duration;
                let watcher = {
                    let (phases, nodes) = (phases.clone(), nodes.clone());
                    std::thread::spawn(move || {
                        let client = Client::connect(&nodes, ClientOptions::default())
                            .map_err(|e| anyhow::anyhow!("{}", e.message))?
                            .blocking();
                        Ok::<_, anyhow::Error>(dynamo::bench::rebuild::watch_rebuild(
                            &client, &address, deadline, &phases,
                        ))
                    })
                };
                let (during, per_phase) =
                    rt.block_on(workload::run_phased(&client, &opts, Some(phases)));
                let (keys, bytes, secs) = watcher
                    .join()
                    .map_err(|_| anyhow::anyhow!("the rebuild watcher panicked"))??;
                eprintln!("measuring idle CPU for {:.0} s", args.idle);
                let status_client = Client::connect(&nodes, ClientOptions::default())
                    .map_err(|e| anyhow::anyhow!("{}", e.message))?
                    .blocking();
                let idle = dynamo::bench::rebuild::idle_cpu(&c, &status_client, args.idle);
                let during_phase = per_phase.first().cloned().filter(|p| p.ops > 0);
                let mut r = dynamo::bench::rebuild::RebuildReport {
                    node: name,
                    keys,
                    bytes,
                    rebuild_seconds: secs,
                    p99_ratio: during_phase
                        .as_ref()
                        .map(|d| d.p99_us / baseline.total.p99_us.max(1.0)),
                    baseline: baseline.total.clone(),
                    during: during_phase,
                    idle_seconds: args.idle,
                    idle,
                    ..Default::default()
                };
                if let Some(s) = secs.filter(|s| *s > 0.0) {
                    r.keys_per_s = keys as f64 / s;
                    r.mb_per_s = bytes as f64 / 1e6 / s;
                }
                rebuild = Some(r);
                cluster = Some(c);
                reports.push(baseline);
                during
            }
            (_, _, c) => {
                cluster = c;
                rt.block_on(workload::run(&client, &opts))
            }
        };
        reports.push(report);
    }
    if args.json {
        match (&join, &rebuild) {
            (Some(j), _) => println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"runs": reports, "join": j}))?
            ),
            (_, Some(r)) => println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"runs": reports, "rebuild": r}))?
            ),
            _ => println!("{}", serde_json::to_string_pretty(&reports)?),
        }
    } else {
        print!("{}", workload::render_table(&reports));
        if let Some(j) = &join {
            print!("{}", dynamo::bench::join::render(j));
        }
        if let Some(r) = &rebuild {
            print!("{}", dynamo::bench::rebuild::render(r));
        }
    }
    if let Some(mut c) = cluster {
        c.stop_all();
        eprintln!("local cluster stopped");
    }
    drop(temp);
    Ok(())
}
