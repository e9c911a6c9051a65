//! `dynamo bench --nodes ...`: YCSB-style workloads against a running cluster.
//!
//! Workloads: A (50% read, 50% update), B (95/5), C (read only), W (write only).
//! An update is a read-modify-write, as a Dynamo client does it: get the key, then put
//! the new value with the context of the read. Keys are `user<N>` with N drawn from a
//! scrambled zipfian (YCSB's, θ = 0.99) or a uniform distribution over `keys` records,
//! loaded before the measured phase.
//!
//! With a target rate the run is open-loop: operation k is due at `start + k/rate`, and
//! when the workers fall behind, its latency is measured from that due time, so a slow
//! system cannot hide queueing delay by slowing the client down (coordinated omission).
//! A worker that is ahead sleeps until the due time and measures from when it woke,
//! since the timer's own lateness (up to a millisecond) is not the cluster's; woken
//! later than that, it measures from the due time (the workers share the client's
//! connection thread, and time it was busy is the client's queueing).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::cpu::CpuMeter;
use super::latency::{format_rate, format_us, LatencyRecorder, PhaseSummary};
use crate::client::{Client, ClientOptions, Coordination, LocalClient};
use crate::error::DynamoError;

/// A YCSB workload mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Workload {
    /// 50% reads, 50% updates.
    A,
    /// 95% reads, 5% updates.
    B,
    /// Reads only.
    C,
    /// Updates only (write-only).
    W,
}

impl Workload {
    /// Fraction of operations that are reads.
    pub fn read_fraction(self) -> f64 {
        match self {
            Workload::A => 0.5,
            Workload::B => 0.95,
            Workload::C => 1.0,
            Workload::W => 0.0,
        }
    }
}

impl std::str::FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "a" => Ok(Workload::A),
            "b" => Ok(Workload::B),
            "c" => Ok(Workload::C),
            "w" | "write" | "write-only" => Ok(Workload::W),
            other => Err(format!("unknown workload {other:?}: use a, b, c or w")),
        }
    }
}

/// How keys are picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDistribution {
    /// YCSB's scrambled zipfian (θ = 0.99).
    Zipfian,
    /// Every key equally likely.
    Uniform,
}

impl std::str::FromStr for KeyDistribution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "zipfian" | "zipf" => Ok(Self::Zipfian),
            "uniform" => Ok(Self::Uniform),
            other => Err(format!(
                "unknown distribution {other:?}: use zipfian or uniform"
            )),
        }
    }
}

/// One benchmark run's settings.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadOptions {
    /// Node addresses.
    pub nodes: Vec<String>,
    /// Store to use.
    pub store: String,
    /// The mix.
    pub workload: Workload,
    /// Key distribution.
    pub distribution: KeyDistribution,
    /// Records loaded before the run (the key space).
    pub keys: u64,
    /// Value size in bytes.
    pub value_size: usize,
    /// Operations in flight at once.
    pub concurrency: usize,
    /// Measured phase length.
    pub duration: Duration,
    /// Target operations per second (open loop); `None` runs as fast as it can.
    pub rate: Option<f64>,
    /// Coordination mode.
    pub coordination: Coordination,
    /// The client's bound on its calls in flight per node
    /// ([`ClientOptions::max_in_flight_per_node`]).
    pub max_in_flight_per_node: usize,
    /// Random seed.
    pub seed: u64,
    /// The node processes, when this benchmark started them (their CPU time per
    /// operation is reported); empty otherwise.
    #[serde(skip)]
    pub node_pids: Vec<u32>,
}

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadReport {
    /// The settings.
    pub options: WorkloadOptions,
    /// All operations.
    pub total: PhaseSummary,
    /// Reads.
    pub reads: PhaseSummary,
    /// Updates (read-modify-write, measured as one operation).
    pub updates: PhaseSummary,
    /// Requests sent to the cluster per second (an update is two).
    pub requests_per_sec: f64,
    /// Operations that failed.
    pub errors: u64,
    /// The first few distinct error messages.
    pub error_samples: Vec<String>,
    /// With a target rate: how far the run fell behind at its end, ms.
    pub behind_ms: f64,
    /// CPU time the cluster's node processes used per operation in the measured run,
    /// in microseconds (`None` when the nodes are not local processes this benchmark
    /// started: `--spawn`).
    pub cluster_cpu_us_per_op: Option<f64>,
    /// CPU time this benchmark process (the client) used per operation, microseconds.
    pub client_cpu_us_per_op: Option<f64>,
}

/// YCSB's zipfian generator over `0..n` (Gray et al., "Quickly generating
/// billion-record synthetic databases"), scrambled with a hash so popular keys spread
/// over the key space.
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    /// The YCSB constant.
    pub const THETA: f64 = 0.99;

    /// A generator over `n >= 1` items.
    pub fn new(n: u64) -> Self {
        let n = n.max(1);
        let theta = Self::THETA;
        let zeta = |k: u64| (1..=k).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(n);
        let zeta2 = zeta(2.min(n));
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Self {
            n,
            theta,
            alpha,
            zetan,
            eta,
        }
    }

    /// The next item's rank (0 is the most popular).
    pub fn rank(&self, rng: &mut impl Rng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }

    /// The next item, scrambled (FNV-1a of the rank, mod n).
    pub fn next(&self, rng: &mut impl Rng) -> u64 {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in self.rank(rng).to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        h % self.n
    }
}

fn key_name(i: u64) -> Vec<u8> {
    format!("user{i:010}").into_bytes()
}

struct Shared {
    reads: LatencyRecorder,
    updates: LatencyRecorder,
    total: LatencyRecorder,
    /// All operations by the phase they started in (see [`Phases`]).
    by_phase: Vec<LatencyRecorder>,
    errors: u64,
    samples: Vec<String>,
}

/// Phase marks for a run during which something happens (a node joining): the phase
/// an operation started in, set by whoever drives the event, and when each began.
#[derive(Debug, Default)]
pub struct Phases {
    current: std::sync::atomic::AtomicUsize,
    started: Mutex<Vec<Instant>>,
}

impl Phases {
    /// Moves to the next phase now.
    pub fn advance(&self) {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Instant::now());
        self.current.fetch_add(1, Ordering::SeqCst);
    }

    /// The current phase (0 before the first `advance`).
    pub fn current(&self) -> usize {
        self.current.load(Ordering::SeqCst)
    }
}

fn note_error(shared: &Mutex<Shared>, e: &DynamoError) {
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    s.errors += 1;
    if s.samples.len() < 5 && !s.samples.contains(&e.message) {
        s.samples.push(e.message.clone());
    }
}

async fn update(
    client: &LocalClient,
    store: &str,
    key: &[u8],
    value: &[u8],
) -> Result<(), DynamoError> {
    let got = client.get(store, key, None).await?;
    client
        .put(store, key, value, Some(&got.context), None)
        .await?;
    Ok(())
}

/// Loads `keys` records (so reads find data), with `concurrency` writers; reports
/// progress through `progress`.
pub async fn load(
    client: &Client,
    opts: &WorkloadOptions,
    progress: impl Fn(u64),
) -> Result<(), DynamoError> {
    let next = Arc::new(AtomicU64::new(0));
    let (writers, value, store, keys) = (
        opts.concurrency.max(1),
        vec![b'x'; opts.value_size],
        opts.store.clone(),
        opts.keys,
    );
    let counter = next.clone();
    // On the connection thread, as the measured phase runs (see `run_phased`).
    let loading = client.on_connection_thread(move |local| async move {
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let (client, next, value, store) =
                (local.clone(), counter.clone(), value.clone(), store.clone());
            tasks.push(tokio::task::spawn_local(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= keys {
                        return Ok::<(), DynamoError>(());
                    }
                    // Reading first gives a context, so a re-run does not pile up siblings.
                    update(&client, &store, &key_name(i), &value).await?;
                }
            }));
        }
        let mut first_error = None;
        for t in tasks {
            let done = t
                .await
                .map_err(|e| DynamoError::new(crate::error::ErrorKind::Internal, e.to_string()))
                .and_then(|r| r);
            if let Err(e) = done {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    });
    tokio::pin!(loading);
    let mut last = 0;
    loop {
        let finished = tokio::select! {
            done = &mut loading => Some(done),
            _ = tokio::time::sleep(Duration::from_millis(100)) => None,
        };
        let done = next.load(Ordering::Relaxed).min(opts.keys);
        if done > last && (done >= last + opts.keys / 10 || done == opts.keys) {
            progress(done);
            last = done;
        }
        if let Some(result) = finished {
            return result?;
        }
    }
}

/// What every worker of a measured run shares; each runs [`Worker::run`].
#[derive(Clone)]
struct Worker {
    opts: WorkloadOptions,
    shared: Arc<Mutex<Shared>>,
    zipf: Arc<Zipfian>,
    /// Operations scheduled so far (with a target rate).
    counter: Arc<AtomicU64>,
    /// Requests sent to the cluster (an update is two).
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    value: Arc<Vec<u8>>,
    phases: Option<Arc<Phases>>,
    start: Instant,
    end: Instant,
}

impl Worker {
    /// Worker `n`'s loop: operations until the run ends, each recorded in `shared`.
    async fn run(self, client: LocalClient, n: usize) {
        let opts = &self.opts;
        let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed.wrapping_add(n as u64));
        while let Some(due) = self.next_due().await {
            let i = match opts.distribution {
                KeyDistribution::Zipfian => self.zipf.next(&mut rng),
                KeyDistribution::Uniform => rng.random_range(0..opts.keys.max(1)),
            };
            let key = key_name(i);
            let phase = self.phases.as_ref().map(|p| p.current());
            let is_read = rng.random::<f64>() < opts.workload.read_fraction();
            let result = if is_read {
                self.requests.fetch_add(1, Ordering::Relaxed);
                client.get(&opts.store, &key, None).await.map(|_| ())
            } else {
                self.requests.fetch_add(2, Ordering::Relaxed);
                update(&client, &opts.store, &key, &self.value).await
            };
            let latency = due.elapsed();
            match result {
                // One set of histograms for all workers: each is ~1 MB, and per-worker
                // copies made the start of a run stall while they were allocated and
                // zeroed.
                Ok(()) => {
                    let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
                    s.total.record(latency);
                    if let Some(ph) = phase {
                        while s.by_phase.len() <= ph {
                            s.by_phase.push(LatencyRecorder::default());
                        }
                        s.by_phase[ph].record(latency);
                    }
                    if is_read {
                        s.reads.record(latency)
                    } else {
                        s.updates.record(latency)
                    }
                }
                Err(e) => note_error(&self.shared, &e),
            }
        }
    }

    /// When the next operation counts from, or `None` once the run is over.
    async fn next_due(&self) -> Option<Instant> {
        let Some(rate) = self.opts.rate else {
            let now = Instant::now();
            return (now < self.end && !self.stop.load(Ordering::Relaxed)).then_some(now);
        };
        let k = self.counter.fetch_add(1, Ordering::Relaxed);
        let due = self.start + Duration::from_secs_f64(k as f64 / rate);
        if due >= self.end {
            return None;
        }
        if due <= Instant::now() {
            // Behind schedule: the wait since `due` is queueing the cluster caused, so
            // it counts (no coordinated omission).
            return Some(due);
        }
        // On schedule: the timer wakes up to a millisecond late, which is the client's
        // slack, not the cluster's latency. Later than that, the connection thread the
        // workers share was busy: that counts from `due`.
        tokio::time::sleep_until(due.into()).await;
        let woke = Instant::now();
        Some(if woke > due + Duration::from_millis(1) {
            due
        } else {
            woke
        })
    }
}

/// Runs the measured phase. Must be called inside a tokio runtime.
pub async fn run(client: &Client, opts: &WorkloadOptions) -> WorkloadReport {
    run_phased(client, opts, None).await.0
}

/// [`run`], with every operation also recorded by the phase of `phases` it started in;
/// returns one summary per phase reached (its wall time from its start to the next
/// phase's, or to the end of the run).
pub async fn run_phased(
    client: &Client,
    opts: &WorkloadOptions,
    phases: Option<Arc<Phases>>,
) -> (WorkloadReport, Vec<PhaseSummary>) {
    // A real client is connected before its traffic starts: fetch the ring and open
    // the connections outside the measurement.
    let _ = client.ring().await;
    for a in &opts.nodes {
        let _ = client.status(Some(a)).await;
    }
    let shared = Arc::new(Mutex::new(Shared {
        reads: LatencyRecorder::default(),
        updates: LatencyRecorder::default(),
        total: LatencyRecorder::default(),
        by_phase: Vec::new(),
        errors: 0,
        samples: Vec::new(),
    }));
    // Built before the clocks start: its table costs one `powf` per key.
    let zipf = Arc::new(Zipfian::new(opts.keys));
    let requests = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let cluster_cpu = (!opts.node_pids.is_empty()).then(|| CpuMeter::start(opts.node_pids.clone()));
    let client_cpu = CpuMeter::start(vec![std::process::id()]);
    let start = Instant::now();
    let worker = Worker {
        opts: opts.clone(),
        shared: shared.clone(),
        zipf,
        counter: Arc::new(AtomicU64::new(0)),
        requests: requests.clone(),
        stop: stop.clone(),
        value: Arc::new(vec![b'v'; opts.value_size]),
        phases: phases.clone(),
        start,
        end: start + opts.duration,
    };
    let workers = opts.concurrency.max(1);
    // The workers run on the client's connection thread: each call through `Client`
    // would cross threads twice, and a load generator should spend its CPU on load.
    let working = client.on_connection_thread(move |local| async move {
        let tasks: Vec<_> = (0..workers)
            .map(|n| tokio::task::spawn_local(worker.clone().run(local.clone(), n)))
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    });
    if let Err(e) = working.await {
        note_error(&shared, &e);
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let cluster_cpu_s = cluster_cpu.as_ref().and_then(CpuMeter::seconds);
    let client_cpu_s = client_cpu.seconds();
    let behind_ms = match opts.rate {
        Some(_) => elapsed.saturating_sub(opts.duration).as_secs_f64() * 1000.0,
        None => 0.0,
    };
    let s = shared.lock().unwrap_or_else(|p| p.into_inner());
    let mut bounds = vec![start];
    if let Some(p) = &phases {
        bounds.extend(
            p.started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .copied(),
        );
    }
    let finished = start + elapsed;
    let per_phase = s
        .by_phase
        .iter()
        .enumerate()
        .map(|(i, rec)| {
            let from = bounds.get(i).copied().unwrap_or(finished).max(start);
            let to = bounds.get(i + 1).copied().unwrap_or(finished).min(finished);
            rec.summary(to.saturating_duration_since(from))
        })
        .collect();
    let report = WorkloadReport {
        options: opts.clone(),
        total: s.total.summary(elapsed),
        reads: s.reads.summary(elapsed),
        updates: s.updates.summary(elapsed),
        requests_per_sec: requests.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        errors: s.errors,
        error_samples: s.samples.clone(),
        behind_ms,
        cluster_cpu_us_per_op: None,
        client_cpu_us_per_op: None,
    };
    let mut report = report;
    let ops = report.total.ops.max(1) as f64;
    report.cluster_cpu_us_per_op = cluster_cpu_s.map(|c| c * 1e6 / ops);
    report.client_cpu_us_per_op = client_cpu_s.map(|c| c * 1e6 / ops);
    (report, per_phase)
}

/// Starts a client for `opts`.
pub fn client_for(opts: &WorkloadOptions) -> Result<Client, DynamoError> {
    Client::connect(
        &opts.nodes,
        ClientOptions {
            coordination: opts.coordination,
            max_in_flight_per_node: opts.max_in_flight_per_node,
            ..ClientOptions::default()
        },
    )
}

/// A table of reports, one row per operation type per run.
pub fn render_table(reports: &[WorkloadReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<8} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "mode", "op", "ops", "ops/s", "p50", "p99", "p99.9", "max", "errors"
    );
    for r in reports {
        let mode = match r.options.coordination {
            Coordination::ClientDriven => "client-driven",
            Coordination::ServerDriven => "server-driven",
        };
        for (name, s) in [
            ("all", &r.total),
            ("read", &r.reads),
            ("update", &r.updates),
        ] {
            if s.ops == 0 && name != "all" {
                continue;
            }
            let _ = writeln!(
                out,
                "{:<14} {:<8} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
                mode,
                name,
                s.ops,
                format_rate(s.ops_per_sec),
                format_us(s.p50_us),
                format_us(s.p99_us),
                format_us(s.p999_us),
                format_us(s.max_us),
                if name == "all" {
                    r.errors.to_string()
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(
            out,
            "{:<14} requests/s to the cluster: {} (an update is a get and a put){}",
            "",
            format_rate(r.requests_per_sec),
            match r.options.rate {
                Some(rate) => format!(
                    "; target {} ops/s, ended {:.0} ms behind",
                    format_rate(rate),
                    r.behind_ms
                ),
                None => String::new(),
            }
        );
        if let Some(cpu) = r.cluster_cpu_us_per_op {
            let _ = writeln!(
                out,
                "{:<14} CPU per operation: {cpu:.0} us in the cluster's nodes, {} in this client",
                "",
                r.client_cpu_us_per_op
                    .map_or("n/a".into(), |c| format!("{c:.0} us"))
            );
        }
        for e in &r.error_samples {
            let _ = writeln!(out, "{:<14} error: {e}", "");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipfian_is_skewed_and_in_range() {
        let z = Zipfian::new(1000);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            let r = z.rank(&mut rng);
            counts[r as usize] += 1;
            assert!(z.next(&mut rng) < 1000);
        }
        // Rank 0 is the most popular and far above the uniform share (100).
        assert!(counts[0] > 5_000, "{}", counts[0]);
        assert!(counts[0] > counts[10] && counts[10] > counts[500]);
    }

    #[test]
    fn workloads_parse() {
        assert_eq!("A".parse::<Workload>().unwrap(), Workload::A);
        assert_eq!("w".parse::<Workload>().unwrap().read_fraction(), 0.0);
        assert!("d".parse::<Workload>().is_err());
    }
}
