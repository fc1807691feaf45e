//! `cargo anebert bench`: per sequence length and backend — package load time, warm-up, then N
//! runs of one full-length sequence: p50 / p90 / p99 latency, tokens/s, effective TFLOP/s (FLOPs
//! counted from the graph, printed with the count) and peak RSS; on Core ML also the share of ops
//! the compute plan places on the Neural Engine. Table, `--json` (schema: docs/bench.schema.json)
//! and `--plot` (SVG: latency and tokens/s against sequence length).

use crate::select::Select;
use anebert::coreml::placement::ComputeDevice;
use anebert::cpu::{OpProfile, Precision};
use anebert::{Backend, ComputeUnits, Model, Options, Package};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Version of the JSON document (docs/bench.schema.json).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    select: Select,
    /// Sequence lengths to bench (default: the model's), e.g. `128,512,1024`.
    #[arg(long, value_delimiter = ',')]
    seqs: Vec<usize>,
    /// Backends: `cpu-f32`, `cpu-fp16-ane` (the CPU backend in ANE-numerics simulation), and on
    /// Apple platforms `coreml-cpu+ne`, `coreml-all`, `coreml-cpu+gpu`, `coreml-cpu` (Core ML
    /// compute units). Default: the four Core ML settings on Apple, the two CPU ones elsewhere.
    #[arg(long, value_delimiter = ',')]
    backends: Vec<String>,
    /// Timed runs per point.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Untimed warm-up runs per point.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG plot of latency and tokens/s against sequence length.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// CPU backends: after the timed runs, run as many again with per-op timing and print where
    /// the time goes, per op type.
    #[arg(long)]
    profile: bool,
    /// Instead of one full-length sequence: these texts (one per line), timed one call per text
    /// and, for a packed model (`convert --packing`), packed into as few calls as fit — texts/s
    /// each way side by side, and the FLOP ratio of the calls.
    #[arg(long)]
    texts: Option<PathBuf>,
}

/// One measured point.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Point {
    model: String,
    seq_len: usize,
    backend: String,
    load_ms: f64,
    warmup: usize,
    runs: usize,
    latency_ms: Latency,
    tokens_per_s: f64,
    flops: u64,
    tflops: f64,
    peak_rss_bytes: Option<u64>,
    /// Core ML: share of ops placed on the Neural Engine (compute plan), when available.
    #[serde(skip_serializing_if = "Option::is_none")]
    ane_share: Option<f64>,
    /// The package's self-test run on this backend: its correlation with the stored reference
    /// (absent when the package carries none; a failed self-test stops the bench).
    #[serde(skip_serializing_if = "Option::is_none")]
    self_test: Option<f64>,
}

#[derive(Clone, Debug, serde::Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    mean: f64,
    min: f64,
    max: f64,
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Peak resident set size of this process since the last reset (Linux: VmHWM).
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Reset the peak-RSS mark so each point reports its own peak (Linux ≥ 4.0).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The default backends of this platform.
fn default_backends() -> Vec<String> {
    let names: &[&str] = if cfg!(target_vendor = "apple") {
        &[
            "coreml-cpu+ne",
            "coreml-all",
            "coreml-cpu+gpu",
            "coreml-cpu",
        ]
    } else {
        &["cpu-f32", "cpu-fp16-ane"]
    };
    names.iter().map(|s| s.to_string()).collect()
}

/// Load options for a backend name.
fn backend_options(b: &str) -> Result<Options> {
    let cpu = |p| Options::default().backend(Backend::Cpu).precision(p);
    match b {
        "cpu-f32" | "f32" => Ok(cpu(Precision::F32)),
        "cpu-fp16-ane" | "fp16-ane" => Ok(cpu(Precision::Fp16Ane)),
        other => match other
            .strip_prefix("coreml-")
            .map(str::parse::<ComputeUnits>)
        {
            Some(Ok(units)) => Ok(Options::default()
                .backend(Backend::CoreMl)
                .compute_units(units)),
            _ => bail!(
                "unknown backend {other:?}: use cpu-f32, cpu-fp16-ane, or on Apple platforms \
                 coreml-cpu+ne, coreml-all, coreml-cpu+gpu, coreml-cpu"
            ),
        },
    }
}

/// Tokens of the short text whose length bucket `bench` reports.
const BUCKET_PROBE_TOKENS: usize = 12;

/// What to bench in `package`: the package, or each function of a multifunction package
/// (labelled with its name when `name_functions`).
fn functions_of(
    label: &str,
    package: &Path,
    name_functions: bool,
) -> Result<Vec<(String, PathBuf, Option<String>)>> {
    let pkg = Package::open(package)?;
    let md = anebert::model_info::PackageMetadata::from_user_defined(&pkg.user_metadata());
    Ok(match md {
        Ok(mut md) if md.functions.len() > 1 => {
            // By head (in the package's order), then length.
            let heads: Vec<String> = md.functions.iter().map(|f| f.head.clone()).collect();
            md.functions
                .sort_by_key(|f| (heads.iter().position(|h| *h == f.head), f.seq_len));
            md.functions
                .into_iter()
                .map(|f| {
                    let l = match name_functions {
                        true => format!("{label} {}", f.name),
                        false => format!("{label} {}", f.head),
                    };
                    (l, package.to_path_buf(), Some(f.name))
                })
                .collect()
        }
        _ => vec![(label.to_string(), package.to_path_buf(), None)],
    })
}

/// One point, and with `--profile` on the CPU backend the per-op times of as many runs again
/// (after the timed runs and the peak-RSS reading, on the same loaded model).
fn measure(
    label: &str,
    package: &Path,
    function: Option<&str>,
    backend: &str,
    a: &BenchArgs,
) -> Result<(Point, Option<OpProfile>)> {
    let mut options = backend_options(backend)?;
    if let Some(f) = function {
        options = options.function(f);
    }
    let flops = anebert::cost::flops(&Package::open(package)?, function)
        .map_err(anyhow::Error::msg)?
        .total();
    reset_peak_rss();
    let t = Instant::now();
    let model = Model::open(package, &options)?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let ane_share = match model.backend() {
        Backend::CoreMl => match model.placement() {
            Ok(p) => Some(p.share(ComputeDevice::NeuralEngine)),
            Err(e) => {
                eprintln!("warning: {label} on {backend}: no placement report: {e}");
                None
            }
        },
        _ => None,
    };
    // Timing a model that computes garbage would be meaningless: a failed self-test is an error.
    let self_test = model.self_test()?;
    let info = model.info().clone();
    let s = info.seq_len;
    let inputs = bench_inputs(&info)?;
    for _ in 0..a.warmup {
        model.predict(&inputs)?;
    }
    let mut samples = Vec::with_capacity(a.runs);
    for _ in 0..a.runs.max(1) {
        let t = Instant::now();
        model.predict(&inputs)?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    let p50 = percentile(&samples, 50.0);
    let point = Point {
        model: label.to_string(),
        seq_len: s,
        backend: backend.to_string(),
        load_ms,
        warmup: a.warmup,
        runs: samples.len(),
        latency_ms: Latency {
            p50,
            p90: percentile(&samples, 90.0),
            p99: percentile(&samples, 99.0),
            mean: samples.iter().sum::<f64>() / samples.len() as f64,
            min: samples[0],
            max: samples[samples.len() - 1],
        },
        tokens_per_s: s as f64 / (p50 / 1e3),
        flops,
        tflops: flops as f64 / (p50 / 1e3) / 1e12,
        peak_rss_bytes: peak_rss(),
        ane_share,
        self_test,
    };
    let profile = match (a.profile, model.cpu_model()) {
        (true, Some(m)) => {
            let inputs = inputs
                .into_iter()
                .map(|(k, v)| (k, std::sync::Arc::new(v)))
                .collect();
            let mut prof = OpProfile::new();
            for _ in 0..samples.len() {
                m.predict_profiled(&inputs, &mut prof)?;
            }
            Some(prof)
        }
        _ => None,
    };
    Ok((point, profile))
}

/// The benched input: a full-length sequence of ordinary tokens (the same ids as
/// benches/hf_pytorch.py).
fn bench_inputs(info: &anebert::ModelInfo) -> Result<BTreeMap<String, anebert::Tensor>> {
    let ids: Vec<i32> = (0..info.seq_len)
        .map(|i| ((i * 7919 + 13) % info.vocab_size) as i32)
        .collect();
    let mut inputs = anebert::contract::encoder_inputs(&ids, info.seq_len, 0)?;
    // The fill-mask head: K positions spread over the sequence.
    if let Some(k) = info.functions.last().and_then(|f| f.mask_slots) {
        let p: Vec<i32> = (0..k).map(|i| (i * info.seq_len / k) as i32).collect();
        inputs.insert(
            anebert::contract::MASK_POSITIONS.to_string(),
            anebert::Tensor::i32(vec![1, k], p)?,
        );
    }
    Ok(inputs)
}

/// Per-op-type wall time of `runs` CPU runs, largest first.
fn print_profile(prof: OpProfile, runs: usize) {
    let total: f64 = prof.values().map(|(_, d)| d.as_secs_f64()).sum();
    let mut rows: Vec<_> = prof.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .1));
    println!(
        "  per-op time over {runs} run(s), {:.2} ms per run:",
        total * 1e3 / runs as f64
    );
    for (op, (n, d)) in rows {
        let ms = d.as_secs_f64() * 1e3 / runs as f64;
        println!(
            "    {op:<22} {:>6} steps/run {ms:>9.2} ms/run {:>5.1} %",
            n / runs,
            100.0 * d.as_secs_f64() / total.max(1e-12)
        );
    }
}

pub fn run(mut a: BenchArgs) -> Result<()> {
    if a.backends.is_empty() {
        a.backends = default_backends();
    }
    for b in &a.backends {
        backend_options(b)?;
    }
    // (label, package, function of a multifunction package) per sequence length.
    let mut targets: Vec<(String, PathBuf, Option<String>)> = Vec::new();
    let report = |e: anebert_build::BuildError| anyhow::anyhow!(anebert_build::report(&e));
    if a.select.mlpackage.is_some() {
        if !a.seqs.is_empty() {
            bail!("--seqs needs a checkpoint to convert (--model or declared models), not --mlpackage");
        }
        for s in a.select.resolve()? {
            targets.extend(functions_of(&s.label, &s.package, true)?);
        }
    } else {
        for (label, c) in a.select.configs()? {
            let name = label
                .rsplit_once(" S=")
                .map_or(label.as_str(), |x| x.0)
                .to_string();
            let mut c = c;
            if !a.seqs.is_empty() {
                c.seq_lens(a.seqs.clone());
            }
            let (arts, _) = c.artifacts().map_err(report)?;
            for art in arts {
                targets.extend(functions_of(&name, &art.package(), false)?);
            }
        }
        targets.dedup();
    }
    // Which function a short text runs in each multifunction package (the length buckets).
    let mut shown = std::collections::BTreeSet::new();
    for (_, pkg, f) in &targets {
        if f.is_some() && shown.insert(pkg.clone()) {
            let info = anebert::ModelInfo::from_package(&Package::open(pkg)?)?;
            let all: Vec<&str> = info.functions.iter().map(|f| f.name.as_str()).collect();
            if let Some(g) = info.function_for(BUCKET_PROBE_TOKENS) {
                println!(
                    "buckets of {}: a {BUCKET_PROBE_TOKENS}-token text runs {} (of {})",
                    pkg.display(),
                    g.name,
                    all.join(", ")
                );
            }
        }
    }
    if let Some(file) = &a.texts {
        let texts = crate::texts::read_lines(file)?;
        if texts.is_empty() {
            bail!("--texts {} has no text (one per line)", file.display());
        }
        let mut points = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (label, pkg, _) in &targets {
            if !seen.insert(pkg.clone()) {
                continue;
            }
            for b in &a.backends {
                let model = Model::open(pkg, &backend_options(b)?)?;
                let p = crate::bench_texts::measure(label, b, &model, pkg, &texts, a.runs)
                    .with_context(|| format!("benchmarking {label} on {b}"))?;
                crate::bench_texts::print(&p);
                points.push(p);
            }
        }
        println!(
            "texts/s: median of {} pass(es) over all texts after one warm-up pass, each way in turn",
            a.runs.max(1)
        );
        if let Some(path) = &a.json {
            std::fs::write(path, serde_json::to_string_pretty(&points)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(());
    }
    let mut points = Vec::new();
    println!(
        "{:<40} {:>6} {:<14} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>10} {:>9} {:>6}",
        "model",
        "S",
        "backend",
        "load ms",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "tokens/s",
        "TFLOP/s",
        "GFLOP/run",
        "peak RSS",
        "ANE"
    );
    for (label, pkg, function) in &targets {
        for b in &a.backends {
            let (p, profile) = measure(label, pkg, function.as_deref(), b, &a)
                .with_context(|| format!("benchmarking {label} on {b}"))?;
            println!(
                "{:<40} {:>6} {:<14} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>10.0} {:>8.4} {:>10.3} {:>9} {:>6}",
                p.model,
                p.seq_len,
                p.backend,
                p.load_ms,
                p.latency_ms.p50,
                p.latency_ms.p90,
                p.latency_ms.p99,
                p.tokens_per_s,
                p.tflops,
                p.flops as f64 / 1e9,
                p.peak_rss_bytes
                    .map_or("-".into(), |b| format!("{:.0} MB", b as f64 / 1e6)),
                p.ane_share
                    .map_or("-".into(), |s| format!("{:.0}%", 100.0 * s))
            );
            if let Some(r) = p.self_test {
                println!("  self-test passed on {}: correlation {r:.6}", p.backend);
            }
            if let Some(prof) = profile {
                print_profile(prof, p.runs);
            }
            points.push(p);
        }
    }
    println!(
        "FLOPs: conv/linear/matmul/einsum from the graph's static shapes, 2 per MAC; {} run(s) after {} warm-up; \
         tokens/s = S / p50 for one full-length sequence; ANE = share of ops Core ML's compute plan \
         places on the Neural Engine",
        a.runs, a.warmup
    );
    if let Some(path) = &a.json {
        let doc = serde_json::json!({
            "schema_version": SCHEMA_VERSION,
            "machine": {
                "os": std::env::consts::OS,
                "arch": std::env::consts::ARCH,
                "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
            "results": points,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &a.plot {
        plot(&points, path)?;
    }
    Ok(())
}

/// Two panels: p50 latency and tokens/s against sequence length, one series per model × backend.
fn plot(points: &[Point], path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let mut series: BTreeMap<String, Vec<&Point>> = BTreeMap::new();
    for p in points {
        series
            .entry(format!("{} · {}", p.model, p.backend))
            .or_default()
            .push(p);
    }
    let max_s = points.iter().map(|p| p.seq_len).max().unwrap_or(1) as f64 * 1.05;
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plotting {}: {e}", path.display());
    let root = SVGBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((1, 2));
    type Metric = fn(&Point) -> f64;
    let metrics: [(&str, Metric); 2] = [
        ("p50 latency (ms)", |p| p.latency_ms.p50),
        ("tokens / s", |p| p.tokens_per_s),
    ];
    for (panel, (title, f)) in panels.iter().zip(metrics) {
        let max_y = points.iter().map(f).fold(0.0, f64::max) * 1.1 + 1e-9;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_s, 0.0..max_y)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("sequence length")
            .draw()
            .map_err(|e| err(&e))?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let mut pts: Vec<(f64, f64)> = pts.iter().map(|p| (p.seq_len as f64, f(p))).collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart
                .draw_series(pts.into_iter().map(|xy| Circle::new(xy, 3, color.filled())))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
