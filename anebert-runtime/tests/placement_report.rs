//! The placement report on a full model's op list (tests/data/placement-example.json: the ops of
//! the modernbert-tiny mlm package, devices assigned by the published ANE rules — synthetic, see
//! tests/data/gen_placement_example.py; a Mac's tests/coreml.rs writes real ones).

use anebert_runtime::coreml::placement::{ComputeDevice, Placement};

fn example() -> Placement {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/placement-example.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_whole_model_report() {
    let p = example();
    assert_eq!(p.ops.len(), 744);
    // 448 constants carry no device usage and do not count.
    assert_eq!(p.counted().count(), 296);
    let ane = p.share(ComputeDevice::NeuralEngine);
    assert!((ane - 294.0 / 296.0).abs() < 1e-12, "{ane}");
    let text = p.to_string();
    println!("{text}");
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        "placement (compute units cpu+ne): 296 ops, ane 99.3%, gpu 0.0%, cpu 0.7%"
    );
    // One row per op type, counts by device.
    let conv = text
        .lines()
        .find(|l| l.trim_start().starts_with("conv "))
        .unwrap();
    assert_eq!(
        conv.split_whitespace().collect::<Vec<_>>(),
        ["conv", "27", "0", "0"]
    );
    assert!(!text.lines().any(|l| l.trim_start().starts_with("const ")));
    // The ops off the ANE are named, with where they could run.
    assert!(text.contains("off the Neural Engine (2):"), "{text}");
    assert!(text.contains("    gather "), "{text}");
    assert!(text.contains("on cpu [supported: gpu, cpu]"), "{text}");
    assert!(p.require_ane_share(0.99).is_ok());
    let e = p.require_ane_share(1.0).unwrap_err().to_string();
    assert!(e.contains("cast × 1, gather × 1"), "{e}");
}
