//! The `dynamo` command: a node, a local cluster, a client CLI and benchmarks.

/// Prints a line on stdout. A reader that went away (`dynamo get ... | head`) ends the
/// command quietly, as it does any Unix tool, instead of a panic; only for commands
/// that start no process (an exit here skips destructors).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout_failed(&e);
        }
    }};
}

mod admin_cli;
mod cli;

/// Ends the process after stdout failed: quietly (success) when its reader is gone.
fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: writing to stdout: {e}");
    std::process::exit(1);
}

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use dynamo::bench::engines::{parse_size, EngineBenchOptions};
use dynamo::engines::{Durability, EngineSpec};

/// libdynamo: Amazon's Dynamo key-value store.
#[derive(Parser)]
#[command(name = "dynamo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node: `dynamo node --config node.toml`.
    Node(cli::NodeArgs),
    /// Read a key: all its sibling values and a context token.
    Get(cli::KvArgs),
    /// Write a value (pass the context of the read it is based on).
    Put(cli::PutArgs),
    /// Delete a key (a causal tombstone; pass the context of a read).
    Delete(cli::KvArgs),
    /// Members, their health as seen by the node, partitions owned, hint backlog.
    Status(cli::StatusArgs),
    /// Change the membership: join, leave, replace, remove, their dry run (plan), and
    /// the transfers they start.
    #[command(subcommand)]
    Admin(admin_cli::Admin),
    /// Run a local cluster of node processes.
    #[command(subcommand)]
    Cluster(Cluster),
    /// Measure throughput and latency: YCSB-style workloads against a cluster
    /// (`--nodes` or `--spawn N`), or `dynamo bench engines`.
    Bench(Box<BenchArgs>),
    /// Simulate the paper's experiments.
    #[command(subcommand)]
    Sim(Sim),
}

#[derive(Subcommand)]
enum Sim {
    /// The paper's partitioning experiment (Figures 7/8): load-balancing efficiency of
    /// its three partitioning strategies at equal membership-metadata size, for S=30
    /// nodes and N=3 with skewed key popularity. Prints a table (or JSON) and writes a
    /// plot.
    Partitioning(SimPartitioningArgs),
}

#[derive(Args)]
struct SimPartitioningArgs {
    /// Print JSON on stdout: a list of {strategy, metadata_size, efficiency}.
    #[arg(long)]
    json: bool,
    /// Where to write the SVG plot.
    #[arg(long, default_value = "partitioning.svg")]
    plot: PathBuf,
    /// Number of nodes.
    #[arg(long, default_value_t = 30)]
    nodes: usize,
    /// Replicas per key.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 200_000)]
    keys: usize,
    /// Zipf exponent of key popularity (0 is uniform).
    #[arg(long, default_value_t = 0.5)]
    zipf: f64,
    /// Random placements averaged per point (strategies 1 and 2).
    #[arg(long, default_value_t = 3)]
    trials: usize,
    /// Seed.
    #[arg(long, default_value_t = 2007)]
    seed: u64,
}

#[derive(Subcommand)]
enum Cluster {
    /// Start K node processes on 127.0.0.1 (configs in DIR/<node>/node.toml, a
    /// DIR/cluster.json listing them); Ctrl-C stops them all.
    Up(cli::ClusterUpArgs),
    /// Start a node of a running `dynamo cluster up` again (after it died or was
    /// killed), on its data directory.
    Restart(cli::ClusterRestartArgs),
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchArgs {
    #[command(subcommand)]
    sub: Option<Bench>,
    #[command(flatten)]
    workload: cli::WorkloadArgs,
}

#[derive(Subcommand)]
enum Bench {
    /// Put/get throughput and p50/p99/p99.9 latency of every storage engine, per value
    /// size, with and without fsync; plus the rocksdb engine against the rocksdb crate
    /// used directly and the buffered engine against synced RocksDB.
    Engines(EngineBenchArgs),
}

#[derive(Args)]
struct EngineBenchArgs {
    /// Short phases: the whole run finishes in under a minute.
    #[arg(long)]
    quick: bool,
    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Measure RocksDB and SQLite across value sizes (1 KiB to 1 MiB unless --sizes is
    /// given, durability os) and print the rule `engine = "auto"` should use on this
    /// machine, with the figures behind it and the built-in rule beside it.
    #[arg(long)]
    advise: bool,
    /// Engines to run, comma-separated (default: all built in).
    #[arg(long, value_delimiter = ',', value_parser = parse_engine)]
    engines: Option<Vec<EngineSpec>>,
    /// Value sizes, comma-separated, e.g. 100,4KiB,64KiB,1MiB (the default).
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    sizes: Option<Vec<usize>>,
    /// Durability settings for durable engines: os, sync or both (default: os,sync).
    #[arg(long, value_delimiter = ',', value_parser = parse_durability)]
    durability: Option<Vec<Durability>>,
    /// Time budget of each put phase, in milliseconds.
    #[arg(long)]
    put_ms: Option<u64>,
    /// Time budget of each get phase, in milliseconds.
    #[arg(long)]
    get_ms: Option<u64>,
    /// Cap on operations per phase.
    #[arg(long)]
    max_ops: Option<u64>,
    /// Puts per round of the rocksdb-direct comparison (0 skips it).
    #[arg(long)]
    baseline_ops: Option<u64>,
    /// Directory to put scratch databases in (default: the system temporary directory). They
    /// go into a new subdirectory that is removed afterwards; nothing else there is touched.
    /// Put it on the disk you want measured: sync figures depend on it.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn parse_engine(s: &str) -> Result<EngineSpec, String> {
    s.parse()
        .map_err(|e: dynamo::engines::EngineError| e.to_string())
}

fn parse_durability(s: &str) -> Result<Durability, String> {
    s.parse()
        .map_err(|e: dynamo::engines::EngineError| e.to_string())
}

fn bench_engines(args: EngineBenchArgs) -> Result<()> {
    // Always a fresh directory of our own (inside --dir when given): scratch databases are
    // created and removed there, so nothing the user already keeps in --dir is touched.
    let mut builder = tempfile::Builder::new();
    builder.prefix("dynamo-bench-engines-");
    let temp = match &args.dir {
        Some(parent) => builder.tempdir_in(parent),
        None => builder.tempdir(),
    }
    .with_context(|| match &args.dir {
        Some(parent) => format!("creating a scratch directory in {}", parent.display()),
        None => "creating a scratch directory for the benchmark".to_owned(),
    })?;
    let dir = temp.path().to_owned();
    let mut opts = if args.quick {
        EngineBenchOptions::quick(dir)
    } else {
        EngineBenchOptions::full(dir)
    };
    if let Some(e) = args.engines {
        opts.engines = e;
    }
    let sizes_given = args.sizes.is_some();
    if let Some(s) = args.sizes {
        opts.value_sizes = s;
    }
    if let Some(d) = args.durability {
        opts.durabilities = d;
    }
    if let Some(ms) = args.put_ms {
        opts.put_time = Duration::from_millis(ms);
    }
    if let Some(ms) = args.get_ms {
        opts.get_time = Duration::from_millis(ms);
    }
    if let Some(n) = args.max_ops {
        opts.max_ops = n;
    }
    if let Some(n) = args.baseline_ops {
        opts.baseline_ops = n;
    }
    if args.advise {
        opts.engines = ["rocksdb", "sqlite"]
            .iter()
            .map(|e| e.parse())
            .collect::<Result<_, _>>()
            .map_err(|e: dynamo::engines::EngineError| {
                anyhow::anyhow!("--advise needs RocksDB and SQLite built in: {e}")
            })?;
        opts.durabilities = vec![Durability::Os];
        if !sizes_given {
            opts.value_sizes = dynamo::bench::advise::ADVISE_SIZES.to_vec();
        }
        opts.baseline_ops = 0;
        opts.paced_time = Duration::ZERO;
    }
    eprintln!(
        "benchmarking {} engine(s) x {} value size(s) in {}",
        opts.engines.len(),
        opts.value_sizes.len(),
        opts.dir.display()
    );
    let report = dynamo::bench::engines::run(&opts, |line| eprintln!("{line}"))?;
    if args.advise {
        let advice = dynamo::bench::advise::advise(&report);
        if args.json {
            let both = serde_json::json!({ "report": report, "advice": advice });
            println!("{}", serde_json::to_string_pretty(&both)?);
        } else {
            print!("{}", advice.render());
        }
        return Ok(());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render_table());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Node(args) => cli::node(args),
        Command::Get(args) => return cli::get(args),
        Command::Put(args) => return cli::put(args.kv, Some(args.value)),
        Command::Delete(args) => return cli::put(args, None),
        Command::Status(args) => return cli::status(args),
        Command::Admin(cmd) => {
            return admin_cli::run(cmd).unwrap_or_else(|e| {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            })
        }
        Command::Cluster(Cluster::Up(args)) => cli::cluster_up(args),
        Command::Cluster(Cluster::Restart(args)) => cli::cluster_restart(args),
        Command::Bench(args) => match *args {
            BenchArgs {
                sub: Some(Bench::Engines(args)),
                ..
            } => bench_engines(args),
            BenchArgs {
                sub: None,
                workload,
            } => cli::bench_workload(workload),
        },
        Command::Sim(Sim::Partitioning(args)) => sim_partitioning(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn sim_partitioning(args: SimPartitioningArgs) -> Result<()> {
    use dynamo::sim::partitioning::{plot_svg, run, table, PartitioningOptions};
    if args.nodes == 0 || args.replicas == 0 || args.keys == 0 {
        anyhow::bail!("--nodes, --replicas and --keys must be at least 1");
    }
    if !(0.0..=4.0).contains(&args.zipf) {
        anyhow::bail!("--zipf {} is outside 0..=4", args.zipf);
    }
    let opts = PartitioningOptions {
        nodes: args.nodes,
        replicas: args.replicas,
        keys: args.keys,
        zipf: args.zipf,
        trials: args.trials.max(1),
        seed: args.seed,
        ..PartitioningOptions::default()
    };
    let points = run(&opts, |p| {
        eprintln!(
            "strategy {} metadata {:>6}: efficiency {:.3}",
            p.strategy, p.metadata_size, p.efficiency
        )
    });
    plot_svg(&points, &args.plot)
        .map_err(|e| anyhow::anyhow!("writing the plot to {}: {e}", args.plot.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&points)?);
    } else {
        print!("{}", table(&points, &opts));
    }
    eprintln!("plot written to {}", args.plot.display());
    Ok(())
}

// glibc's malloc showed up as 12% of a loaded cluster's CPU; mimalloc is faster for the
// many small, short-lived buffers of RPC messages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
