//! A local cluster of separate node processes on 127.0.0.1, as `dynamo cluster up`,
//! `dynamo bench --spawn` and the integration tests start it.
//!
//! Layout of its directory: `DIR/<node>/node.toml` (the node's config),
//! `DIR/<node>/data/` (its data directory), `DIR/<node>/node.log` (its stderr) and
//! `DIR/cluster.json` (name, address, pid and config path of every node).
//! Invariant: every process a [`LocalCluster`] started is stopped when it is dropped.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{MemberConfig, NodeConfig};
use crate::local_ports::{self, PortLease};
use crate::store::StoreConfig;

/// Most nodes a local cluster may have (they all share one machine).
pub const MAX_LOCAL_NODES: usize = 100;

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Number of nodes (named `node-1` ... `node-K`).
    pub nodes: usize,
    /// Directory for configs, data and logs.
    pub dir: PathBuf,
    /// First port (node i listens on `base_port + i - 1`); `None` takes free ports
    /// from below the OS's ephemeral range ([`crate::local_ports`]).
    pub base_port: Option<u16>,
    /// The stores every node hosts.
    pub stores: Vec<StoreConfig>,
    /// Q.
    pub partitions: u32,
    /// Per-call timeout between nodes, ms.
    pub request_timeout_ms: u64,
    /// `node.membership_grace_ms` of every node.
    pub membership_grace_ms: u64,
    /// `node.drop_moved_partitions` of every node.
    pub drop_moved_partitions: bool,
    /// `[anti_entropy]` of every node.
    pub anti_entropy: crate::config::AntiEntropyConfig,
}

impl ClusterSpec {
    /// `nodes` nodes in `dir` with one store `default` (engine default, N=3, R=2, W=2).
    pub fn new(nodes: usize, dir: impl Into<PathBuf>) -> Self {
        Self {
            nodes,
            dir: dir.into(),
            base_port: None,
            stores: vec![StoreConfig::default()],
            partitions: crate::ring::DEFAULT_PARTITIONS,
            request_timeout_ms: 500,
            membership_grace_ms: 30_000,
            drop_moved_partitions: true,
            anti_entropy: crate::config::AntiEntropyConfig::default(),
        }
    }
}

/// One node of a local cluster.
#[derive(Debug)]
pub struct ClusterNode {
    /// Member name.
    pub name: String,
    /// `127.0.0.1:port`.
    pub address: String,
    /// Its config file.
    pub config_path: PathBuf,
    /// Its log file (stderr).
    pub log_path: PathBuf,
    /// How it last exited, if it is not running.
    pub last_exit: Option<String>,
    child: Option<Child>,
}

impl ClusterNode {
    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

#[derive(Serialize)]
struct ClusterFileEntry<'a> {
    name: &'a str,
    address: &'a str,
    pid: Option<u32>,
    config: String,
    log: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    exited: Option<&'a str>,
}

/// Running node processes. Stops them all when dropped.
#[derive(Debug)]
pub struct LocalCluster {
    /// The nodes, in name order.
    pub nodes: Vec<ClusterNode>,
    dir: PathBuf,
    exe: PathBuf,
    /// The ports reserved for the nodes (when the spec named no base port): held for
    /// the cluster's life so that a node restarting finds its port still free.
    _ports: Vec<PortLease>,
}

impl LocalCluster {
    /// Writes every node's config and starts the nodes with the `dynamo` binary `exe`,
    /// waiting until each accepts connections.
    pub fn start(spec: &ClusterSpec, exe: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (1..=MAX_LOCAL_NODES).contains(&spec.nodes),
            "a local cluster has 1 to {MAX_LOCAL_NODES} nodes, not {}",
            spec.nodes
        );
        fs::create_dir_all(&spec.dir)?;
        let leases = match spec.base_port {
            Some(_) => Vec::new(),
            None => local_ports::lease(spec.nodes)?,
        };
        let mut members = Vec::new();
        for i in 1..=spec.nodes {
            let port = match spec.base_port {
                Some(p) => u16::try_from(i - 1)
                    .ok()
                    .and_then(|off| p.checked_add(off))
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--base-port {p} with {} nodes needs ports past 65535",
                            spec.nodes
                        )
                    })?,
                None => leases[i - 1].port(),
            };
            members.push(MemberConfig {
                name: format!("node-{i}"),
                address: format!("127.0.0.1:{port}"),
                zone: None,
            });
        }
        let dir = fs::canonicalize(&spec.dir)?;
        let mut nodes = Vec::new();
        for m in &members {
            let node_dir = dir.join(&m.name);
            fs::create_dir_all(&node_dir)?;
            let mut cfg = NodeConfig::default();
            cfg.node.name = m.name.clone();
            cfg.node.listen = m.address.clone();
            cfg.node.data_dir = node_dir.join("data");
            cfg.node.request_timeout_ms = spec.request_timeout_ms;
            cfg.node.membership_grace_ms = spec.membership_grace_ms;
            cfg.node.drop_moved_partitions = spec.drop_moved_partitions;
            cfg.anti_entropy = spec.anti_entropy.clone();
            cfg.cluster.partitions = spec.partitions;
            cfg.cluster.members = members.clone();
            cfg.stores = spec.stores.clone();
            cfg.validate(&m.name)
                .map_err(|e| anyhow::anyhow!("generated config is invalid: {e}"))?;
            let config_path = node_dir.join("node.toml");
            fs::write(&config_path, cfg.to_toml())?;
            nodes.push(ClusterNode {
                name: m.name.clone(),
                address: m.address.clone(),
                config_path,
                log_path: node_dir.join("node.log"),
                last_exit: None,
                child: None,
            });
        }
        let mut cluster = LocalCluster {
            nodes,
            dir,
            exe: exe.to_owned(),
            _ports: leases,
        };
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_ready(i)?;
        }
        cluster.write_cluster_file()?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)?;
        let child = Command::new(&self.exe)
            .arg("node")
            .arg("--config")
            .arg(&node.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {} ({}): {e}", node.name, self.exe.display()))?;
        node.child = Some(child);
        node.last_exit = None;
        Ok(())
    }

    fn wait_ready(&mut self, i: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr: SocketAddr = self.nodes[i].address.parse()?;
        loop {
            let accepts = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
            let node = &mut self.nodes[i];
            if let Some(child) = node.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    node.child = None;
                    let log = fs::read_to_string(&node.log_path).unwrap_or_default();
                    anyhow::bail!(
                        "{} exited with {status} during start; its log:\n{log}",
                        node.name
                    );
                }
            }
            // Checked after the exit: a node that could not bind must not pass for
            // ready because something else accepts at its address.
            if accepts {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not accept connections on {} within 60 s (log: {})",
                node.name,
                node.address,
                node.log_path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn write_cluster_file(&self) -> anyhow::Result<()> {
        let entries: Vec<ClusterFileEntry<'_>> = self
            .nodes
            .iter()
            .map(|n| ClusterFileEntry {
                name: &n.name,
                address: &n.address,
                pid: n.pid(),
                config: n.config_path.display().to_string(),
                log: n.log_path.display().to_string(),
                exited: n.last_exit.as_deref(),
            })
            .collect();
        fs::write(
            self.dir.join("cluster.json"),
            serde_json::to_string_pretty(&serde_json::json!({ "nodes": entries }))?,
        )?;
        Ok(())
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every node's address.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.address.clone()).collect()
    }

    /// Kills node `i` with SIGKILL (a crash) and waits for it to exit.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut c) = self.nodes[i].child.take() {
            c.kill()?;
            c.wait()?;
        }
        self.write_cluster_file()
    }

    /// Stops node `i` with SIGTERM (clean shutdown), waiting up to 15 s before SIGKILL.
    /// Returns its exit status (`None` if it was not running).
    pub fn stop(&mut self, i: usize) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let status = match self.nodes[i].child.take() {
            Some(mut c) => Some(terminate(&mut c)?),
            None => None,
        };
        self.write_cluster_file()?;
        Ok(status)
    }

    /// Adds a node (`node-K+1`, on a free port, with the stores and settings of
    /// `node-1`) whose config names only `seeds`: it learns the cluster from them and
    /// joins it. Starts it and waits until it accepts connections; returns its index.
    pub fn add_node(&mut self, seeds: &[String]) -> anyhow::Result<usize> {
        anyhow::ensure!(
            self.nodes.len() < MAX_LOCAL_NODES,
            "a local cluster has at most {MAX_LOCAL_NODES} nodes"
        );
        let template = NodeConfig::load(&self.nodes[0].config_path)?;
        let lease = local_ports::lease(1)?.remove(0);
        let name = format!("node-{}", self.nodes.len() + 1);
        let node_dir = self.dir.join(&name);
        fs::create_dir_all(&node_dir)?;
        let mut cfg = template;
        cfg.node.name = name.clone();
        cfg.node.listen = format!("127.0.0.1:{}", lease.port());
        cfg.node.data_dir = node_dir.join("data");
        cfg.node.zone = None;
        cfg.cluster.members.clear();
        cfg.cluster.seeds = seeds.to_vec();
        cfg.faults = Default::default();
        cfg.validate(&name)
            .map_err(|e| anyhow::anyhow!("generated config is invalid: {e}"))?;
        let config_path = node_dir.join("node.toml");
        fs::write(&config_path, cfg.to_toml())?;
        self.nodes.push(ClusterNode {
            name,
            address: cfg.node.listen.clone(),
            config_path,
            log_path: node_dir.join("node.log"),
            last_exit: None,
            child: None,
        });
        self._ports.push(lease);
        let i = self.nodes.len() - 1;
        self.spawn(i)?;
        self.wait_ready(i)?;
        self.write_cluster_file()?;
        Ok(i)
    }

    /// Starts node `i` again (on its existing data directory) and waits until ready.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.nodes[i].child.is_none(),
            "{} is running",
            self.nodes[i].name
        );
        self.spawn(i)?;
        self.wait_ready(i)?;
        self.write_cluster_file()
    }

    /// The nodes that exited by themselves since the last call: their index and exit
    /// status. `cluster.json` is rewritten when there are any (their pid is then null).
    pub fn reap_exited(&mut self) -> anyhow::Result<Vec<(usize, std::process::ExitStatus)>> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if let Some(c) = n.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    n.child = None;
                    n.last_exit = Some(status.to_string());
                    out.push((i, status));
                }
            }
        }
        if !out.is_empty() {
            self.write_cluster_file()?;
        }
        Ok(out)
    }

    /// Rewrites node `i`'s config with `change` (the node must not be running; it
    /// reads the new config when restarted).
    pub fn reconfigure(
        &mut self,
        i: usize,
        change: impl FnOnce(&mut NodeConfig),
    ) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        anyhow::ensure!(node.child.is_none(), "{} is running", node.name);
        let mut cfg = NodeConfig::load(&node.config_path)?;
        change(&mut cfg);
        cfg.validate(&node.name)
            .map_err(|e| anyhow::anyhow!("changed config is invalid: {e}"))?;
        fs::write(&node.config_path, cfg.to_toml())?;
        Ok(())
    }

    /// The index of the node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Stops every node (SIGTERM, then SIGKILL after 15 s).
    pub fn stop_all(&mut self) {
        let mut children: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .collect();
        for c in &children {
            send_sigterm(c.id());
        }
        for c in &mut children {
            wait_or_kill(c, Duration::from_secs(15));
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Sends SIGTERM through the `kill` command (keeps this crate free of `unsafe`).
fn send_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn wait_or_kill(c: &mut Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn terminate(c: &mut Child) -> std::io::Result<std::process::ExitStatus> {
    send_sigterm(c.id());
    wait_or_kill(c, Duration::from_secs(15));
    c.wait()
}
