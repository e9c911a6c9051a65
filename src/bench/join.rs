//! A node joining in the middle of a benchmark run (`dynamo bench --spawn 3 --join-at
//! 5s`): what the transfer moved and how fast, how long the join took, and what the
//! foreground saw before, during and after it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::latency::PhaseSummary;
use super::workload::Phases;
use crate::admin::AdminRequest;
use crate::client::{Client, ClientOptions};
use crate::cluster::LocalCluster;

/// What the join measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JoinReport {
    /// The node that joined.
    pub node: String,
    /// When the join was issued, seconds after the measured run started.
    pub issued_at_s: f64,
    /// From the join's issue until every node served the new ring, seconds (`None`: not
    /// within the run).
    pub join_seconds: Option<f64>,
    /// Keys the receivers pulled.
    pub transfer_keys: u64,
    /// Bytes of values the receivers pulled.
    pub transfer_bytes: u64,
    /// The longest receiver's transfer time (waiting out writes in flight included),
    /// seconds.
    pub transfer_seconds: f64,
    /// Transfer throughput, MB/s (bytes over the longest receiver's time).
    pub transfer_mb_per_s: f64,
    /// Transfer throughput, keys/s.
    pub transfer_keys_per_s: f64,
    /// Foreground operations before, during and after the join.
    pub phases: Vec<PhaseSummary>,
}

/// The join's driver: what it saw, before the workload's phases are added.
#[derive(Debug, Default)]
pub struct JoinProgress {
    report: JoinReport,
}

impl JoinProgress {
    /// The report, with the foreground's phases.
    pub fn finish(mut self, phases: Vec<PhaseSummary>) -> JoinReport {
        self.report.phases = phases;
        self.report
    }
}

/// At `start + at`: starts a new node alone, joins it to `cluster` with an admin
/// action, advances `phases` (during), polls every node until the new ring serves
/// everywhere, then advances `phases` again (after). Gives up at `deadline`.
pub fn join_during(
    cluster: &mut LocalCluster,
    start: Instant,
    at: Duration,
    deadline: Instant,
    phases: &Arc<Phases>,
) -> anyhow::Result<JoinProgress> {
    let seed = cluster.nodes[0].address.clone();
    std::thread::sleep((start + at).saturating_duration_since(Instant::now()));
    let i = cluster.add_node(&[])?;
    let new = cluster.nodes[i].address.clone();
    let addrs = cluster.addresses();
    let client = Client::connect(
        &addrs,
        ClientOptions {
            timeout: Duration::from_secs(15),
            ..ClientOptions::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("{}", e.message))?
    .blocking();
    client
        .admin(&new, &AdminRequest::Join { seed })
        .map_err(|e| anyhow::anyhow!("join refused: {}", e.message))?;
    let issued = Instant::now();
    phases.advance();
    let mut progress = JoinProgress {
        report: JoinReport {
            node: cluster.nodes[i].name.clone(),
            issued_at_s: issued.saturating_duration_since(start).as_secs_f64(),
            ..JoinReport::default()
        },
    };
    // Per receiver, the most its transfer reported.
    let mut seen: std::collections::BTreeMap<String, (u64, u64, f64)> = Default::default();
    while Instant::now() < deadline {
        let mut settled = true;
        for a in &addrs {
            let Ok(s) = client.status(Some(a)) else {
                settled = false;
                continue;
            };
            if s.ring_version != s.target_ring_version || s.ring_version < 2 {
                settled = false;
            }
            if let Some(t) = &s.transfer {
                settled &= t.phase == "settled";
                let e = seen.entry(s.node.clone()).or_default();
                if t.keys >= e.0 {
                    *e = (t.keys, t.bytes, t.elapsed_ms as f64 / 1000.0);
                }
            }
        }
        if settled {
            progress.report.join_seconds = Some(issued.elapsed().as_secs_f64());
            phases.advance();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = &mut progress.report;
    r.transfer_keys = seen.values().map(|v| v.0).sum();
    r.transfer_bytes = seen.values().map(|v| v.1).sum();
    r.transfer_seconds = seen.values().map(|v| v.2).fold(0.0, f64::max);
    if r.transfer_seconds > 0.0 {
        r.transfer_mb_per_s = r.transfer_bytes as f64 / 1e6 / r.transfer_seconds;
        r.transfer_keys_per_s = r.transfer_keys as f64 / r.transfer_seconds;
    }
    Ok(progress)
}

/// The report as a few lines for a terminal.
pub fn render(r: &JoinReport) -> String {
    let p99 = |i: usize| {
        r.phases
            .get(i)
            .map_or("-".to_string(), |p| super::latency::format_us(p.p99_us))
    };
    format!(
        "join of {} issued at {:.1} s: {}\n\
         transfer: {} keys, {:.1} MB in {:.1} s ({:.1} MB/s, {:.0} keys/s)\n\
         foreground p99: before {}, during {}, after {}\n",
        r.node,
        r.issued_at_s,
        r.join_seconds
            .map_or("not finished within the run".to_string(), |s| format!(
                "every node served the new ring {s:.1} s later"
            )),
        r.transfer_keys,
        r.transfer_bytes as f64 / 1e6,
        r.transfer_seconds,
        r.transfer_mb_per_s,
        r.transfer_keys_per_s,
        p99(0),
        p99(1),
        p99(2)
    )
}
