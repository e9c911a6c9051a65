//! `dynamo admin`: membership actions (join, leave, replace, remove), their dry run
//! (`plan`), and transfer progress (`transfers`). (Part of the binary.)

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use dynamo::admin::{AdminReply, AdminRequest};
use dynamo::client::{BlockingClient, Client, ClientOptions, NodeStatus};
use dynamo::error::DynamoError;
use dynamo::membership::ChangeKind;
use dynamo::node::transfer::TransferStatus;
use dynamo::ring::Member;

/// `dynamo admin ...`.
#[derive(Subcommand)]
pub enum Admin {
    /// The node at --nodes NEW joins the cluster that --seed SEED belongs to.
    Join(JoinArgs),
    /// NODE hands its partitions off, then leaves the ring.
    Leave(NodeArg),
    /// The node at address NEW takes exactly OLD's partitions.
    Replace(ReplaceArgs),
    /// A dead NODE is removed; its partitions are rebuilt from the surviving replicas.
    Remove(RemoveArgs),
    /// A dry run of any action: the partition moves it would cause, from whom to whom,
    /// and the data to move.
    #[command(subcommand)]
    Plan(PlanCmd),
    /// The transfers in progress on every member (--watch: until they finish).
    Transfers(TransfersArgs),
}

/// `dynamo admin plan ...`.
#[derive(Subcommand)]
pub enum PlanCmd {
    /// See `dynamo admin join`.
    Join(JoinArgs),
    /// See `dynamo admin leave`.
    Leave(NodeArg),
    /// See `dynamo admin replace`.
    Replace(ReplaceArgs),
    /// See `dynamo admin remove` (no --force needed for the dry run).
    Remove(NodeArg),
}

/// Where to send an admin action.
#[derive(Args, Clone)]
pub struct AdminTarget {
    /// Node addresses, comma-separated (any member will do, except for `join`: the new
    /// node's address).
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Per-call timeout in milliseconds.
    #[arg(long, default_value_t = 15000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub timeout_ms: u64,
}

/// `join`.
#[derive(Args)]
pub struct JoinArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// Address of any member of the cluster to join.
    #[arg(long)]
    pub seed: String,
}

/// An action on one member.
#[derive(Args)]
pub struct NodeArg {
    #[command(flatten)]
    pub target: AdminTarget,
    /// The member's name (e.g. node-3).
    pub node: String,
}

/// `replace`.
#[derive(Args)]
pub struct ReplaceArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// The member replaced (its name).
    pub old: String,
    /// The address of the running node that replaces it.
    pub new: String,
}

/// `remove`.
#[derive(Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// The dead member's name.
    pub node: String,
    /// Confirms that the node is gone for good.
    #[arg(long)]
    pub force: bool,
}

/// `transfers`.
#[derive(Args)]
pub struct TransfersArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// Keep watching (progress bars on a terminal, a line per change otherwise) until
    /// every transfer finished.
    #[arg(long)]
    pub watch: bool,
    /// With --watch: give up after this many seconds (0: never).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=31_536_000))]
    pub timeout_s: u64,
}

fn connect(t: &AdminTarget) -> Result<BlockingClient> {
    let c = Client::connect(
        &t.nodes,
        ClientOptions {
            timeout: Duration::from_millis(t.timeout_ms),
            ..ClientOptions::default()
        },
    )
    .map_err(|e| anyhow!("{}", e.message))?;
    Ok(c.blocking())
}

/// Sends `request` to the first node of `t` that answers. Refusals are final, and so
/// is a node that took the request but did not answer in time: it may have made the
/// change, and asking the next node would then be refused for a confusing reason.
fn send(c: &BlockingClient, t: &AdminTarget, request: &AdminRequest) -> Result<AdminReply> {
    let mut last: Option<DynamoError> = None;
    for a in &t.nodes {
        match c.admin(a, request) {
            Ok(r) => return Ok(r),
            Err(e) if e.kind == dynamo::error::ErrorKind::BadRequest => {
                return Err(anyhow!("{}", e.message))
            }
            Err(e) if e.kind == dynamo::error::ErrorKind::Timeout => {
                return Err(anyhow!(
                    "{}; the change may have been made: check with `dynamo status` or \
                     `dynamo admin transfers`, and raise --timeout-ms",
                    e.message
                ))
            }
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow!(
        "{}",
        last.map_or_else(|| "no node given".to_string(), |e| e.message)
    ))
}

/// The member running at `address`, as its status describes it.
fn member_at(c: &BlockingClient, address: &str) -> Result<Member> {
    let s = c
        .status(Some(address))
        .map_err(|e| anyhow!("asking the node at {address}: {}", e.message))?;
    let zone = s
        .members
        .iter()
        .find(|m| m.name == s.node)
        .and_then(|m| m.zone.clone());
    let mut m = Member::new(&s.node).at(address);
    m.zone = zone;
    Ok(m)
}

/// Runs `dynamo admin`.
pub fn run(cmd: Admin) -> Result<ExitCode> {
    match cmd {
        Admin::Join(a) => {
            let c = connect(&a.target)?;
            let r = send(&c, &a.target, &AdminRequest::Join { seed: a.seed })?;
            print(&r, a.target.json, false)
        }
        Admin::Leave(a) => {
            let c = connect(&a.target)?;
            let r = send(&c, &a.target, &AdminRequest::Leave { node: a.node })?;
            print(&r, a.target.json, false)
        }
        Admin::Replace(a) => {
            let c = connect(&a.target)?;
            // The new node issues the change: it first takes the cluster's history.
            let seed = a.target.nodes.first().cloned().unwrap_or_default();
            let to_new = AdminTarget {
                nodes: vec![a.new.clone()],
                ..a.target.clone()
            };
            let r = send(&c, &to_new, &AdminRequest::Replace { seed, old: a.old })?;
            print(&r, a.target.json, false)
        }
        Admin::Remove(a) => {
            let c = connect(&a.target)?;
            let r = send(
                &c,
                &a.target,
                &AdminRequest::Remove {
                    node: a.node,
                    force: a.force,
                },
            )?;
            print(&r, a.target.json, false)
        }
        Admin::Plan(p) => {
            let (target, change, to) = match p {
                PlanCmd::Join(a) => {
                    let c = connect(&a.target)?;
                    let new = a.target.nodes.first().cloned().unwrap_or_default();
                    let member = member_at(&c, &new)?;
                    (a.target, ChangeKind::Join { member }, Some(a.seed))
                }
                PlanCmd::Leave(a) => (a.target, ChangeKind::Leave { name: a.node }, None),
                PlanCmd::Replace(a) => {
                    let c = connect(&a.target)?;
                    let member = member_at(&c, &a.new)?;
                    (
                        a.target,
                        ChangeKind::Replace {
                            old: a.old,
                            new: member,
                        },
                        None,
                    )
                }
                PlanCmd::Remove(a) => (a.target, ChangeKind::Remove { name: a.node }, None),
            };
            let c = connect(&target)?;
            let ask = match to {
                Some(seed) => AdminTarget {
                    nodes: vec![seed],
                    ..target.clone()
                },
                None => target.clone(),
            };
            let r = send(&c, &ask, &AdminRequest::Plan { change })?;
            print(&r, target.json, true)
        }
        Admin::Transfers(a) => transfers(a),
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn print(r: &AdminReply, json: bool, dry_run: bool) -> Result<ExitCode> {
    if json {
        out!("{}", serde_json::to_string_pretty(r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    match (&r.change, dry_run, &r.note) {
        (_, _, Some(note)) => out.push_str(&format!("{}: {note}\n", r.action)),
        (_, true, _) => out.push_str(&format!("plan of {} (nothing is changed)\n", r.action)),
        (Some(c), false, _) => out.push_str(&format!(
            "{}: issued as change {c} at {}; ring version {} now, {} once the transfers finish \
             (watch them with `dynamo admin transfers --watch`)\n",
            r.action, r.node, r.ring_version, r.target_ring_version
        )),
        (None, false, _) => out.push_str(&format!("{}: nothing to do\n", r.action)),
    }
    let p = &r.plan;
    if !p.members_after.is_empty() {
        out.push_str(&format!(
            "members: {} -> {}\n",
            p.members_before.join(", "),
            p.members_after.join(", ")
        ));
        out.push_str(&format!(
            "{} partition replica(s) move (about {}); {} partition(s) change their first owner\n",
            p.moves.len(),
            human_bytes(p.estimated_bytes),
            p.ownership_moves
        ));
        for (node, (gains, losses)) in &p.per_node {
            out.push_str(&format!(
                "  {node:<16} gains {gains:>4}, gives up {losses:>4}\n"
            ));
        }
        let mut by_pair: BTreeMap<(&str, &str), Vec<u32>> = BTreeMap::new();
        for m in &p.moves {
            by_pair
                .entry((m.from.as_str(), m.to.as_str()))
                .or_default()
                .push(m.partition);
        }
        for ((from, to), parts) in by_pair {
            let shown: Vec<String> = parts.iter().take(12).map(u32::to_string).collect();
            let more = parts.len().saturating_sub(12);
            out.push_str(&format!(
                "  {from} -> {to}: {} partition(s): {}{}\n",
                parts.len(),
                shown.join(" "),
                if more > 0 {
                    format!(" ... and {more} more")
                } else {
                    String::new()
                }
            ));
        }
    }
    out!("{}", out.trim_end_matches('\n'));
    Ok(ExitCode::SUCCESS)
}

/// Every member's status (members that do not answer are skipped).
fn all_statuses(c: &BlockingClient, t: &AdminTarget) -> Result<Vec<NodeStatus>> {
    let mut first = None;
    for a in &t.nodes {
        if let Ok(s) = c.status(Some(a)) {
            first = Some(s);
            break;
        }
    }
    let first = first.ok_or_else(|| anyhow!("no node of {} answered", t.nodes.join(",")))?;
    let mut out = Vec::new();
    for m in &first.members {
        if m.name == first.node {
            continue;
        }
        if let Ok(s) = c.status(Some(&m.address)) {
            out.push(s);
        }
    }
    out.insert(0, first);
    out.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(out)
}

fn transfer_line(node: &str, t: &TransferStatus) -> String {
    let done = t.partitions.iter().filter(|p| p.state == "done").count();
    format!(
        "{node}: {} ({}) {done}/{} partitions, {} keys, {}, {}/s{}",
        t.action,
        t.phase,
        t.partitions.len(),
        t.keys,
        human_bytes(t.bytes),
        human_bytes(t.rate_bytes_per_s),
        t.eta_ms
            .map(|ms| format!(", ETA {:.0} s", ms as f64 / 1000.0))
            .unwrap_or_default()
    )
}

fn settled(all: &[NodeStatus]) -> bool {
    all.iter()
        .all(|s| s.transfer.is_none() && s.ring_version == s.target_ring_version)
}

fn transfers(a: TransfersArgs) -> Result<ExitCode> {
    let c = connect(&a.target)?;
    if !a.watch {
        let all = all_statuses(&c, &a.target)?;
        if a.target.json {
            let view: BTreeMap<&str, serde_json::Value> = all
                .iter()
                .map(|s| {
                    (
                        s.node.as_str(),
                        serde_json::json!({
                            "ring_version": s.ring_version,
                            "target_ring_version": s.target_ring_version,
                            "transfer": s.transfer,
                        }),
                    )
                })
                .collect();
            out!("{}", serde_json::to_string_pretty(&view)?);
            return Ok(ExitCode::SUCCESS);
        }
        for s in &all {
            match &s.transfer {
                Some(t) => out!("{}", transfer_line(&s.node, t)),
                None => out!(
                    "{}: no transfer (ring version {} of {})",
                    s.node,
                    s.ring_version,
                    s.target_ring_version
                ),
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = (a.timeout_s > 0).then(|| Instant::now() + Duration::from_secs(a.timeout_s));
    let tty = std::io::stderr().is_terminal() && !a.target.json;
    let bars = indicatif::MultiProgress::new();
    let mut shown: BTreeMap<String, indicatif::ProgressBar> = BTreeMap::new();
    let mut last_lines: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let all = all_statuses(&c, &a.target)?;
        for s in &all {
            let Some(t) = &s.transfer else { continue };
            let done = t.partitions.iter().filter(|p| p.state == "done").count() as u64;
            if tty {
                let bar = shown.entry(s.node.clone()).or_insert_with(|| {
                    let b = bars.add(indicatif::ProgressBar::new(t.partitions.len() as u64));
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{prefix:>10} [{bar:30}] {pos}/{len} partitions {msg}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    b.set_prefix(s.node.clone());
                    b
                });
                bar.set_length(t.partitions.len() as u64);
                bar.set_position(done);
                bar.set_message(format!(
                    "{} {} keys {} {}/s",
                    t.phase,
                    t.keys,
                    human_bytes(t.bytes),
                    human_bytes(t.rate_bytes_per_s)
                ));
            } else {
                let line = transfer_line(&s.node, t);
                if last_lines.get(&s.node) != Some(&line) {
                    out!("{line}");
                    last_lines.insert(s.node.clone(), line);
                }
            }
        }
        if settled(&all) {
            for b in shown.values() {
                b.finish();
            }
            let v = all.first().map_or(0, |s| s.ring_version);
            out!("every transfer finished: ring version {v} serves on every node");
            return Ok(ExitCode::SUCCESS);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            for b in shown.values() {
                b.abandon();
            }
            eprintln!("transfers still running after {} s", a.timeout_s);
            return Ok(ExitCode::FAILURE);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
