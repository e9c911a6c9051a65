//! Anti-entropy under load (`dynamo bench --spawn 3 --wipe`): the workload runs once on
//! a healthy cluster (the baseline), then the last node's data directory is wiped and
//! the same workload runs again while that node rebuilds its partitions from the other
//! replicas; the report puts the two side by side (p99, throughput), states the
//! rebuild's rate, and then measures what anti-entropy costs when there is nothing to
//! repair: each node's CPU over an idle period, as a share of one core.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::latency::{format_us, PhaseSummary};
use super::workload::Phases;
use crate::client::BlockingClient;
use crate::cluster::LocalCluster;

/// What the wipe-and-rebuild run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RebuildReport {
    /// The node whose data directory was wiped.
    pub node: String,
    /// Keys the rebuild pulled.
    pub keys: u64,
    /// Bytes of values it pulled.
    pub bytes: u64,
    /// How long the rebuild took, seconds (`None`: not finished within the run).
    pub rebuild_seconds: Option<f64>,
    /// Keys per second.
    pub keys_per_s: f64,
    /// MB (10^6 bytes) of values per second.
    pub mb_per_s: f64,
    /// The baseline run (no rebuild).
    pub baseline: PhaseSummary,
    /// The same workload while the rebuild ran.
    pub during: Option<PhaseSummary>,
    /// `during.p99 / baseline.p99`.
    pub p99_ratio: Option<f64>,
    /// Idle seconds over which CPU was measured.
    pub idle_seconds: f64,
    /// Per node: its CPU over the idle period as a share of one core, and the
    /// anti-entropy exchanges it finished meanwhile.
    pub idle: Vec<IdleCpu>,
}

/// One node's CPU while nothing was asked of it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IdleCpu {
    /// The node.
    pub node: String,
    /// CPU seconds over wall seconds (1.0 = one core busy).
    pub cpu_share: f64,
    /// Exchanges finished in the period.
    pub exchanges: u64,
}

/// Wipes node `i` (stopped cleanly, its data directory removed, started again) and
/// returns when it serves.
pub fn wipe(cluster: &mut LocalCluster, i: usize) -> anyhow::Result<()> {
    cluster.stop(i)?;
    let data = cluster.dir().join(&cluster.nodes[i].name).join("data");
    std::fs::remove_dir_all(&data)
        .map_err(|e| anyhow::anyhow!("removing {}: {e}", data.display()))?;
    cluster.restart(i)
}

/// Polls `address` until its rebuild finished (then advances `phases`) or `deadline`;
/// returns (keys, bytes, seconds) as its status last reported them.
pub fn watch_rebuild(
    client: &BlockingClient,
    address: &str,
    deadline: Instant,
    phases: &Arc<Phases>,
) -> (u64, u64, Option<f64>) {
    let mut last = (0, 0, None);
    while Instant::now() < deadline {
        if let Some(r) = client
            .status(Some(address))
            .ok()
            .and_then(|s| s.anti_entropy)
            .and_then(|a| a.rebuild)
        {
            let keys = r.stores.iter().map(|s| s.keys).sum();
            let bytes = r.stores.iter().map(|s| s.bytes).sum();
            let done = r.stores.iter().all(|s| s.done == s.partitions);
            let secs = r.stores.iter().map(|s| s.elapsed_ms).max().unwrap_or(0) as f64 / 1000.0;
            last = (keys, bytes, done.then_some(secs));
            if done {
                phases.advance();
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

/// Measures every node's CPU over `seconds` with no client traffic.
pub fn idle_cpu(cluster: &LocalCluster, client: &BlockingClient, seconds: f64) -> Vec<IdleCpu> {
    let exchanges = |a: &str| {
        client
            .status(Some(a))
            .ok()
            .and_then(|s| s.anti_entropy)
            .map_or(0, |a| a.exchanges)
    };
    let before: Vec<(Option<f64>, u64)> = cluster
        .nodes
        .iter()
        .map(|n| {
            (
                n.pid().and_then(super::cpu::process_cpu_seconds),
                exchanges(&n.address),
            )
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let wall = start.elapsed().as_secs_f64();
    cluster
        .nodes
        .iter()
        .zip(before)
        .map(|(n, (cpu0, ex0))| {
            let cpu1 = n.pid().and_then(super::cpu::process_cpu_seconds);
            IdleCpu {
                node: n.name.clone(),
                cpu_share: match (cpu0, cpu1) {
                    (Some(a), Some(b)) => (b - a).max(0.0) / wall,
                    _ => f64::NAN,
                },
                exchanges: exchanges(&n.address).saturating_sub(ex0),
            }
        })
        .collect()
}

/// The report as a few lines for a terminal.
pub fn render(r: &RebuildReport) -> String {
    let mut out = format!(
        "baseline (no rebuild): {:.0} ops/s, p50 {}, p99 {}\n",
        r.baseline.ops_per_sec,
        format_us(r.baseline.p50_us),
        format_us(r.baseline.p99_us)
    );
    match &r.during {
        Some(d) => out.push_str(&format!(
            "while {} rebuilt: {:.0} ops/s, p50 {}, p99 {} ({:.2}x the baseline p99)\n",
            r.node,
            d.ops_per_sec,
            format_us(d.p50_us),
            format_us(d.p99_us),
            r.p99_ratio.unwrap_or(f64::NAN)
        )),
        None => out.push_str("the rebuild saw no foreground operations\n"),
    }
    out.push_str(&match r.rebuild_seconds {
        Some(s) => format!(
            "rebuild of {}: {} keys, {:.1} MB in {s:.1} s ({:.0} keys/s, {:.1} MB/s)\n",
            r.node,
            r.keys,
            r.bytes as f64 / 1e6,
            r.keys_per_s,
            r.mb_per_s
        ),
        None => format!(
            "rebuild of {}: not finished within the run ({} keys so far)\n",
            r.node, r.keys
        ),
    });
    for i in &r.idle {
        out.push_str(&format!(
            "idle {}: {:.1}% of a core over {:.0} s, {} anti-entropy exchange(s)\n",
            i.node,
            i.cpu_share * 100.0,
            r.idle_seconds,
            i.exchanges
        ));
    }
    out
}
