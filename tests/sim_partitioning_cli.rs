//! `dynamo sim partitioning`: table, JSON and plot, and the paper's ordering.

use std::process::Command;

fn dynamo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dynamo"))
}

#[test]
fn json_lists_every_strategy_and_size_and_the_plot_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("p.svg");
    let out = dynamo()
        .args([
            "sim",
            "partitioning",
            "--json",
            "--keys",
            "20000",
            "--trials",
            "2",
        ])
        .arg("--plot")
        .arg(&plot)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let points: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(points.len(), 27, "3 strategies x 9 metadata sizes");
    for p in &points {
        let s = p["strategy"].as_u64().unwrap();
        assert!((1..=3).contains(&s));
        assert!(p["metadata_size"].as_u64().unwrap() >= 100);
        let e = p["efficiency"].as_f64().unwrap();
        assert!(e > 0.0 && e <= 1.0, "{p}");
    }
    let eff = |strategy: u64| -> Vec<f64> {
        points
            .iter()
            .filter(|p| p["strategy"].as_u64() == Some(strategy))
            .map(|p| p["efficiency"].as_f64().unwrap())
            .collect()
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    // The paper's finding: strategy 3 best, strategy 2 worst (on average over sizes).
    assert!(
        mean(&eff(3)) > mean(&eff(1)),
        "3 {:?} vs 1 {:?}",
        eff(3),
        eff(1)
    );
    assert!(
        mean(&eff(1)) > mean(&eff(2)),
        "1 {:?} vs 2 {:?}",
        eff(1),
        eff(2)
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg"),
        "not an SVG: {}",
        &svg[..svg.len().min(80)]
    );
    assert!(svg.contains("strategy 3"), "legend missing");
}

#[test]
fn table_is_the_default_and_bad_options_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dynamo()
        .args(["sim", "partitioning", "--keys", "3000", "--trials", "1"])
        .arg("--plot")
        .arg(dir.path().join("t.svg"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("Load-balancing efficiency"), "{table}");
    assert_eq!(table.lines().count(), 2 + 9, "{table}");

    let out = dynamo()
        .args(["sim", "partitioning", "--nodes", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nodes"));
}
