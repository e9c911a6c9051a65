//! The paper's partitioning experiment (section 6.2, Figures 7 and 8).
//!
//! S nodes, N replicas, keys of skewed (Zipf) popularity. Each key's requests land on
//! the N nodes of its preference list. The load-balancing efficiency of a placement is
//! mean node load / max node load (1.0 is perfect). Three strategies, compared at equal
//! membership-metadata size (the number of tokens or partition entries every node must
//! know):
//!
//! 1. T random tokens per node, partitions by token value (metadata: S·T tokens);
//! 2. T random tokens per node, Q equal partitions, each placed on the node of the
//!    first token after its end (metadata: S·T tokens; Q is fixed);
//! 3. Q equal partitions, Q/S per node (metadata: Q entries), placed by libdynamo's
//!    own claim ([`crate::ring::Ring`]).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::ring::{key_position, partition_of, Member, Ring};

/// Settings of the simulation.
#[derive(Clone, Debug, Serialize)]
pub struct PartitioningOptions {
    /// Nodes (the paper: 30).
    pub nodes: usize,
    /// Replicas per key (the paper: 3).
    pub replicas: usize,
    /// Distinct keys.
    pub keys: usize,
    /// Zipf exponent of key popularity (0 = uniform).
    pub zipf: f64,
    /// Strategy 2's fixed partition count.
    pub strategy2_partitions: u32,
    /// Membership-metadata sizes to evaluate (powers of two, used as Q by strategy 3).
    pub metadata_sizes: Vec<u32>,
    /// Random placements averaged per point.
    pub trials: usize,
    /// Seed of every random choice.
    pub seed: u64,
}

impl Default for PartitioningOptions {
    fn default() -> Self {
        Self {
            nodes: 30,
            replicas: 3,
            keys: 200_000,
            zipf: 0.5,
            strategy2_partitions: 1024,
            metadata_sizes: (7..=15).map(|b| 1u32 << b).collect(),
            trials: 3,
            seed: 2007,
        }
    }
}

/// One measured point.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Point {
    /// 1, 2 or 3.
    pub strategy: u8,
    /// Tokens (strategies 1, 2) or partition entries (strategy 3) in the metadata.
    pub metadata_size: usize,
    /// Mean node load / max node load, averaged over trials.
    pub efficiency: f64,
}

/// Runs all three strategies at every metadata size. `progress` is told each point.
pub fn run(opts: &PartitioningOptions, mut progress: impl FnMut(&Point)) -> Vec<Point> {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let positions: Vec<u128> = (0..opts.keys)
        .map(|i| key_position("sim", format!("key-{i}").as_bytes()))
        .collect();
    // Popularity rank is independent of position: shuffle weights over keys.
    let mut weights: Vec<f64> = (1..=opts.keys)
        .map(|r| 1.0 / (r as f64).powf(opts.zipf))
        .collect();
    for i in (1..weights.len()).rev() {
        let j = rng.random_range(0..=i);
        weights.swap(i, j);
    }
    let mut points = Vec::new();
    for &m in &opts.metadata_sizes {
        let t = ((m as usize) / opts.nodes).max(1);
        for strategy in 1..=3u8 {
            let trials = if strategy == 3 { 1 } else { opts.trials.max(1) };
            let mut sum = 0.0;
            for _ in 0..trials {
                let loads = match strategy {
                    1 => strategy1(opts, t, &positions, &weights, &mut rng),
                    2 => strategy2(opts, t, &positions, &weights, &mut rng),
                    _ => strategy3(opts, m, &positions, &weights),
                };
                sum += efficiency(&loads);
            }
            let p = Point {
                strategy,
                metadata_size: if strategy == 3 {
                    m as usize
                } else {
                    t * opts.nodes
                },
                efficiency: sum / trials as f64,
            };
            progress(&p);
            points.push(p);
        }
    }
    points
}

/// mean / max of the loads (1.0 when all are equal; 0 if there is no load).
pub fn efficiency(loads: &[f64]) -> f64 {
    let max = loads.iter().copied().fold(0.0, f64::max);
    if max <= 0.0 {
        return 0.0;
    }
    let mean = loads.iter().sum::<f64>() / loads.len() as f64;
    mean / max
}

/// Each key's weight added to every node of its preference list.
fn add_loads<'a>(
    nodes: usize,
    positions: &[u128],
    weights: &[f64],
    list_of: impl Fn(u128) -> &'a [usize],
) -> Vec<f64> {
    let mut loads = vec![0.0; nodes];
    for (pos, w) in positions.iter().zip(weights) {
        for &node in list_of(*pos) {
            loads[node] += w;
        }
    }
    loads
}

/// Random tokens: (position, node), sorted by position.
fn random_tokens(nodes: usize, t: usize, rng: &mut StdRng) -> Vec<(u128, usize)> {
    let mut tokens: Vec<(u128, usize)> = (0..nodes)
        .flat_map(|n| (0..t).map(move |_| n))
        .map(|n| (rng.random::<u128>(), n))
        .collect();
    tokens.sort_unstable();
    tokens
}

/// The first `n` distinct nodes walking the tokens clockwise from index `start`.
fn walk_tokens(tokens: &[(u128, usize)], start: usize, n: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(n);
    for k in 0..tokens.len() {
        let node = tokens[(start + k) % tokens.len()].1;
        if !out.contains(&node) {
            out.push(node);
            if out.len() == n {
                break;
            }
        }
    }
    out
}

/// Index of the first token at or after `pos` (wrapping).
fn successor(tokens: &[(u128, usize)], pos: u128) -> usize {
    let i = tokens.partition_point(|(p, _)| *p < pos);
    if i == tokens.len() {
        0
    } else {
        i
    }
}

fn strategy1(
    opts: &PartitioningOptions,
    t: usize,
    positions: &[u128],
    weights: &[f64],
    rng: &mut StdRng,
) -> Vec<f64> {
    let tokens = random_tokens(opts.nodes, t, rng);
    let lists: Vec<Vec<usize>> = (0..tokens.len())
        .map(|i| walk_tokens(&tokens, i, opts.replicas))
        .collect();
    add_loads(opts.nodes, positions, weights, |pos| {
        &lists[successor(&tokens, pos)]
    })
}

fn strategy2(
    opts: &PartitioningOptions,
    t: usize,
    positions: &[u128],
    weights: &[f64],
    rng: &mut StdRng,
) -> Vec<f64> {
    let tokens = random_tokens(opts.nodes, t, rng);
    let q = opts.strategy2_partitions;
    let width = u128::MAX / u128::from(q);
    let lists: Vec<Vec<usize>> = (0..q)
        .map(|p| {
            let end = width.saturating_mul(u128::from(p) + 1);
            walk_tokens(&tokens, successor(&tokens, end), opts.replicas)
        })
        .collect();
    add_loads(opts.nodes, positions, weights, |pos| {
        &lists[partition_of(pos, q) as usize]
    })
}

fn strategy3(opts: &PartitioningOptions, q: u32, positions: &[u128], weights: &[f64]) -> Vec<f64> {
    let members: Vec<Member> = (0..opts.nodes)
        .map(|i| Member::new(format!("n{i:03}")))
        .collect();
    let Ok(ring) = Ring::new(q, opts.replicas, members) else {
        return vec![0.0; opts.nodes];
    };
    let index = |name: &str| name[1..].parse::<usize>().unwrap_or(0);
    let lists: Vec<Vec<usize>> = (0..q)
        .map(|p| {
            ring.preference_list(p, opts.replicas)
                .iter()
                .map(|m| index(&m.name))
                .collect()
        })
        .collect();
    add_loads(opts.nodes, positions, weights, |pos| {
        &lists[partition_of(pos, q) as usize]
    })
}

/// The points as a table: one row per metadata size, one column per strategy.
pub fn table(points: &[Point], opts: &PartitioningOptions) -> String {
    let mut out = format!(
        "Load-balancing efficiency (mean/max node load), S={} nodes, N={}, {} keys, Zipf {}\n",
        opts.nodes, opts.replicas, opts.keys, opts.zipf
    );
    out.push_str(&format!(
        "{:>10}  {:>22}  {:>22}  {:>14}\n",
        "metadata", "1: T tokens, by token", "2: T tokens, Q equal", "3: Q/S tokens"
    ));
    for chunk in points.chunks(3) {
        let cell = |s: u8| {
            chunk
                .iter()
                .find(|p| p.strategy == s)
                .map_or("-".to_string(), |p| {
                    format!("{:.3} @{}", p.efficiency, p.metadata_size)
                })
        };
        let m = chunk
            .iter()
            .find(|p| p.strategy == 3)
            .map_or(0, |p| p.metadata_size);
        out.push_str(&format!(
            "{:>10}  {:>22}  {:>22}  {:>14}\n",
            m,
            cell(1),
            cell(2),
            cell(3)
        ));
    }
    out
}

/// Draws efficiency against metadata size (log scale) as an SVG file.
pub fn plot_svg(points: &[Point], path: &std::path::Path) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max_m = points
        .iter()
        .map(|p| p.metadata_size)
        .max()
        .unwrap_or(2)
        .max(2) as f64;
    let min_m = points
        .iter()
        .map(|p| p.metadata_size)
        .min()
        .unwrap_or(1)
        .max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Load-balancing efficiency vs membership metadata (S=30, N=3)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((min_m * 0.8..max_m * 1.25).log_scale(), 0.0..1.0)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("membership metadata size (tokens or partition entries, log scale)")
        .y_desc("efficiency (mean load / max load)")
        .draw()
        .map_err(|e| e.to_string())?;
    let styles = [
        (
            1u8,
            RED,
            "strategy 1: T random tokens/node, partition by token",
        ),
        (
            2,
            BLUE,
            "strategy 2: T random tokens/node, Q equal partitions",
        ),
        (3, GREEN, "strategy 3: Q/S tokens/node, Q equal partitions"),
    ];
    for (s, color, label) in styles {
        let series: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.strategy == s)
            .map(|p| (p.metadata_size as f64, p.efficiency))
            .collect();
        chart
            .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(
                series
                    .into_iter()
                    .map(|xy| Circle::new(xy, 3, color.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efficiency_is_mean_over_max() {
        assert_eq!(efficiency(&[1.0, 1.0, 1.0]), 1.0);
        assert_eq!(efficiency(&[1.0, 3.0]), 2.0 / 3.0);
        assert_eq!(efficiency(&[0.0, 0.0]), 0.0);
    }

    #[test]
    fn strategy3_beats_strategy1_at_small_metadata() {
        let opts = PartitioningOptions {
            keys: 20_000,
            metadata_sizes: vec![256],
            trials: 2,
            ..Default::default()
        };
        let pts = run(&opts, |_| {});
        let e = |s| pts.iter().find(|p| p.strategy == s).unwrap().efficiency;
        assert!(e(3) > e(1), "{pts:?}");
        assert!(pts
            .iter()
            .all(|p| p.efficiency > 0.0 && p.efficiency <= 1.0));
    }
}
