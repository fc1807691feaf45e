//! `cargo anebert inspect`: what a package holds — I/O, metadata, op histogram, weight bytes by
//! group, FLOPs per token, the ANE-rule report, and on Apple platforms where Core ML actually
//! places each op (its compute plan).

use crate::select::Select;
use anebert::coreml::placement::Placement;
use anebert::cost;
use anebert::package::all_ops;
use anebert::{Backend, ComputeUnits, Model, Options, Package, TensorType};
use anebert_build::graph::ane_rules;
use anyhow::Result;
use std::collections::BTreeMap;

#[derive(clap::Args)]
pub struct InspectArgs {
    #[command(flatten)]
    select: Select,
    /// Print JSON instead of the report.
    #[arg(long)]
    json: bool,
    /// Skip the Core ML placement report (on Apple platforms it loads the model with Core ML).
    #[arg(long)]
    no_placement: bool,
    /// Compute units of the placement report: `cpu+ne`, `all`, `cpu+gpu` or `cpu`.
    #[arg(long, default_value = "cpu+ne")]
    compute_units: ComputeUnits,
}

/// Core ML's placement of the package's ops, or why there is none.
fn placement(a: &InspectArgs, package: &std::path::Path) -> serde_json::Value {
    if a.no_placement {
        return serde_json::Value::Null;
    }
    if !cfg!(target_vendor = "apple") {
        return serde_json::json!({"unavailable": "Core ML runs only on Apple platforms; the ANE rules above are the static check"});
    }
    let opts = Options::default()
        .backend(Backend::CoreMl)
        .compute_units(a.compute_units);
    match Model::open(package, &opts).and_then(|m| m.placement()) {
        Ok(p) => serde_json::to_value(p).unwrap_or_default(),
        Err(e) => serde_json::json!({"unavailable": e.to_string()}),
    }
}

/// Ops the ANE does not run (Core ML places them on the CPU), per Apple's and coremltools'
/// published guidance; `gather` is the embedding lookup, expected once at the start.
const OFF_ANE: &[&str] = &[
    "gather",
    "gather_nd",
    "gather_along_axis",
    "scatter",
    "scatter_nd",
    "cumsum",
    "topk",
    "argsort",
    "non_zero",
    "while_loop",
    "cond",
];

fn describe(t: &Option<anebert::proto::mil_spec::ValueType>) -> String {
    t.as_ref()
        .and_then(|t| TensorType::from_proto(t).ok())
        .map(|t| format!("{:?} {:?}", t.dtype, t.shape().unwrap_or_default()))
        .unwrap_or_else(|| "?".into())
}

pub fn run(a: InspectArgs) -> Result<()> {
    let mut all = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for s in a.select.resolve()? {
        // A multifunction package is one report (it lists its functions).
        if !seen.insert(s.package.clone()) {
            continue;
        }
        let pkg = Package::open(&s.package)?;
        let mut r = report(&s.label, &pkg)?;
        r["placement"] = placement(&a, &s.package);
        all.push(r);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    } else {
        for r in &all {
            print_report(r);
        }
    }
    Ok(())
}

fn report(label: &str, pkg: &Package) -> Result<serde_json::Value> {
    let program = pkg.program();
    // The top-level I/O is the default function's (Core ML runs it when none is named).
    let func = pkg
        .default_function()
        .and_then(|n| program.functions.get(n))
        .or_else(|| program.functions.values().next());
    let inputs: Vec<(String, String)> = func
        .map(|f| {
            f.inputs
                .iter()
                .map(|i| (i.name.clone(), describe(&i.r#type)))
                .collect()
        })
        .unwrap_or_default();
    let mut ops: BTreeMap<String, usize> = BTreeMap::new();
    let mut groups: BTreeMap<String, u64> = BTreeMap::new();
    // Compressed constants by group and op: (weights, stored bytes).
    let mut compressed: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut types: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut small_last_axis = 0usize;
    let mut seen_blobs = std::collections::BTreeSet::new();
    let mut outputs = Vec::new();
    let out_names: Vec<String> = func
        .and_then(|f| f.block_specializations.values().next())
        .map(|b| b.outputs.clone())
        .unwrap_or_default();
    for op in all_ops(program) {
        *ops.entry(op.r#type.clone()).or_insert(0) += 1;
        for o in &op.outputs {
            let t = o
                .r#type
                .as_ref()
                .and_then(|t| TensorType::from_proto(t).ok());
            if let Some(t) = &t {
                let shape = t.shape().unwrap_or_default();
                if op.r#type.starts_with("constexpr_") {
                    let n: u64 = shape.iter().map(|&d| d as u64).product();
                    let bytes = stored_bytes(pkg, op, &mut seen_blobs);
                    let e = compressed
                        .entry(format!("{} {}", group_of(&o.name), op.r#type))
                        .or_insert((0u64, 0u64));
                    e.0 += n;
                    e.1 += bytes;
                    *groups.entry(group_of(&o.name)).or_insert(0) += bytes;
                } else if op.r#type == "const" {
                    let n: u64 = shape.iter().map(|&d| d as u64).product();
                    let bytes = n * t.dtype.bits() as u64 / 8;
                    // A constant that views a blob already counted (the tied decoder reads the
                    // embedding table's blob) stores nothing of its own.
                    let blob = op.attributes.get("val").and_then(|v| match &v.value {
                        Some(anebert::proto::mil_spec::value::Value::BlobFileValue(b)) => {
                            Some(b.offset)
                        }
                        _ => None,
                    });
                    if n > 64 && blob.is_none_or(|off| seen_blobs.insert(off)) {
                        *groups.entry(group_of(&o.name)).or_insert(0) += bytes;
                    }
                } else if shape.len() == 4 && shape[3] < 32 && shape[3] > 1 {
                    small_last_axis += 1;
                }
                types.insert(o.name.clone(), shape);
            }
        }
    }
    for op in func.map(anebert::package::function_ops).unwrap_or_default() {
        for o in op.outputs.iter().filter(|o| out_names.contains(&o.name)) {
            outputs.push((o.name.clone(), describe(&o.r#type)));
        }
    }
    let flops = cost::flops(pkg, None).map_err(anyhow::Error::msg)?;
    let info = anebert::ModelInfo::from_package(pkg).ok();
    let seq = info.as_ref().map(|i| i.seq_len).unwrap_or(1).max(1);
    // Compressed weights decompress to fp16: only fp32 packages compute in fp32.
    let fp16 = info.as_ref().is_none_or(|i| i.weights != "fp32");
    let violations: Vec<serde_json::Value> = ane_rules::check(pkg, fp16)
        .into_iter()
        .map(|v| serde_json::json!({"rule": v.rule, "at": v.at, "detail": v.detail}))
        .collect();
    let off: BTreeMap<&str, usize> = OFF_ANE
        .iter()
        .filter_map(|o| ops.get(*o).map(|n| (*o, *n)))
        .collect();
    // The converter's record, parsed (a package anebert did not write shows its raw entries).
    let raw = pkg.user_metadata();
    let md = match anebert::model_info::PackageMetadata::from_user_defined(&raw) {
        Ok(m) => serde_json::to_value(m)?,
        Err(_) => serde_json::to_value(raw)?,
    };
    let functions = functions(pkg, &md)?;
    Ok(serde_json::json!({
        "model": label,
        "default_function": pkg.default_function(),
        "functions": functions,
        "package": pkg.path,
        "spec_version": pkg.spec.specification_version,
        "inputs": inputs,
        "outputs": outputs,
        "ops": ops,
        "weight_bytes_by_group": groups,
        "compressed_weights": compressed
            .iter()
            .map(|(k, &(n, b))| (k.clone(), serde_json::json!({
                "weights": n,
                "bytes": b,
                "bits_per_weight": if n > 0 { b as f64 * 8.0 / n as f64 } else { 0.0 },
            })))
            .collect::<serde_json::Map<String, serde_json::Value>>(),
        "flops_per_sequence": flops.total(),
        "flops_per_token": flops.total() / seq as u64,
        "flops_by_op": flops.by_op,
        "largest_intermediate": flops.largest,
        "ane_rule_violations": violations,
        "ops_off_ane": off,
        "per_token_tensors_with_last_axis_below_32": small_last_axis,
        "metadata": md,
    }))
}

/// Every function of the package: head and length (from the metadata), I/O, op count and FLOPs
/// per sequence — what each length bucket costs.
fn functions(pkg: &Package, md: &serde_json::Value) -> Result<Vec<serde_json::Value>> {
    let program = pkg.program();
    let mut out = Vec::new();
    for (name, f) in &program.functions {
        let recorded = md["functions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["name"].as_str() == Some(name.as_str()));
        let ops = anebert::package::function_ops(f);
        let io = |names: Vec<(String, String)>| -> Vec<String> {
            names.into_iter().map(|(n, t)| format!("{n} {t}")).collect()
        };
        let inputs = f
            .inputs
            .iter()
            .map(|i| (i.name.clone(), describe(&i.r#type)))
            .collect();
        let outs: Vec<String> = f
            .block_specializations
            .values()
            .next()
            .map(|b| b.outputs.clone())
            .unwrap_or_default();
        let outputs = ops
            .iter()
            .flat_map(|op| &op.outputs)
            .filter(|o| outs.contains(&o.name))
            .map(|o| (o.name.clone(), describe(&o.r#type)))
            .collect();
        out.push(serde_json::json!({
            "name": name,
            "head": recorded.map(|g| g["head"].clone()),
            "seq_len": recorded.map(|g| g["seq_len"].clone()),
            "inputs": io(inputs),
            "outputs": io(outputs),
            "ops": ops.iter().filter(|op| op.r#type != "const" && !op.r#type.starts_with("constexpr_")).count(),
            "flops_per_sequence": cost::flops(pkg, Some(name)).map_err(anyhow::Error::msg)?.total(),
        }));
    }
    Ok(out)
}

fn print_report(r: &serde_json::Value) {
    let num = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    println!(
        "{}  ({})",
        r["model"].as_str().unwrap_or(""),
        r["package"].as_str().unwrap_or("")
    );
    println!("  spec {}", r["spec_version"]);
    let fs = r["functions"].as_array().cloned().unwrap_or_default();
    if fs.len() > 1 {
        println!(
            "  functions: {} (default {}; the I/O below is the default's)",
            fs.len(),
            r["default_function"].as_str().unwrap_or("none")
        );
        for f in &fs {
            println!(
                "    {:<28} {:>7.4} G FLOPs  {:>5} ops  in {}  out {}",
                f["name"].as_str().unwrap_or(""),
                num(&f["flops_per_sequence"]) as f64 / 1e9,
                num(&f["ops"]),
                strings(&f["inputs"]),
                strings(&f["outputs"]),
            );
        }
    }
    for (k, label) in [("inputs", "input"), ("outputs", "output")] {
        for io in r[k].as_array().into_iter().flatten() {
            println!(
                "  {label:<7} {:<16} {}",
                io[0].as_str().unwrap_or(""),
                io[1].as_str().unwrap_or("")
            );
        }
    }
    let ops = r["ops"].as_object().cloned().unwrap_or_default();
    let total: u64 = ops
        .iter()
        .filter(|(k, _)| *k != "const")
        .map(|(_, v)| num(v))
        .sum();
    let mut hist: Vec<(&String, u64)> = ops.iter().map(|(k, v)| (k, num(v))).collect();
    hist.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    println!(
        "  ops: {total} (+ {} const)",
        ops.get("const").map(num).unwrap_or(0)
    );
    for (k, v) in hist.iter().filter(|(k, _)| k.as_str() != "const") {
        println!("    {v:>6}  {k}");
    }
    let groups = r["weight_bytes_by_group"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let wsum: u64 = groups.values().map(num).sum();
    let mut g: Vec<(&String, u64)> = groups.iter().map(|(k, v)| (k, num(v))).collect();
    g.sort_by_key(|e| std::cmp::Reverse(e.1));
    println!("  weights: {:.2} MB", wsum as f64 / 1e6);
    for (k, v) in g {
        println!("    {:>10.3} MB  {k}", v as f64 / 1e6);
    }
    let comp = r["compressed_weights"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if !comp.is_empty() {
        println!("  compressed weights (group, op: weights, stored, bits per weight incl. palettes/scales):");
        for (k, v) in &comp {
            println!(
                "    {k}: {:.2} M, {:.3} MB, {:.2} bits",
                num(&v["weights"]) as f64 / 1e6,
                num(&v["bytes"]) as f64 / 1e6,
                v["bits_per_weight"].as_f64().unwrap_or(0.0)
            );
        }
    }
    println!(
        "  FLOPs (conv/linear/matmul/einsum, 2 per MAC): {:.4} G per sequence, {:.3} M per token",
        num(&r["flops_per_sequence"]) as f64 / 1e9,
        num(&r["flops_per_token"]) as f64 / 1e6
    );
    for (k, v) in r["flops_by_op"].as_object().into_iter().flatten() {
        println!("    {:>10.4} G  {k}", num(v) as f64 / 1e9);
    }
    let big = &r["largest_intermediate"];
    if big.is_object() {
        println!(
            "  largest intermediate tensor: {:.3} MB, {} {} = {}",
            num(&big["bytes"]) as f64 / 1e6,
            big["shape"],
            big["op"].as_str().unwrap_or("?"),
            big["name"].as_str().unwrap_or("?")
        );
    }
    let viol = r["ane_rule_violations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if viol.is_empty() {
        println!(
            "  ANE rules: ok (rank ≤ 5, axis limits, fp16 values, finite constants, inputs used)"
        );
    } else {
        println!("  ANE rules: {} violation(s)", viol.len());
        for v in viol.iter().take(20) {
            println!(
                "    [{}] {}: {}",
                v["rule"].as_str().unwrap_or(""),
                v["at"].as_str().unwrap_or(""),
                v["detail"].as_str().unwrap_or("")
            );
        }
    }
    for (k, v) in r["ops_off_ane"].as_object().into_iter().flatten() {
        println!(
            "  note: {} × {k} runs off the ANE (CPU){}",
            num(v),
            if k == "gather" {
                " — the embedding lookup, expected"
            } else {
                ""
            }
        );
    }
    if let Some(why) = r["placement"]["unavailable"].as_str() {
        println!("  placement: not available: {why}");
    } else if let Ok(p) = serde_json::from_value::<Placement>(r["placement"].clone()) {
        for line in p.to_string().lines() {
            println!("  {line}");
        }
    }
    let small = num(&r["per_token_tensors_with_last_axis_below_32"]);
    if small > 0 {
        println!("  note: {small} BC1S tensors have a last axis < 32 (padded to 64 bytes on the ANE: wasted bandwidth)");
    }
    let st = &r["metadata"]["self_test"];
    if st.is_object() {
        println!(
            "  self-test: function {}, a golden text of {} tokens, {} reference values (one output value in {}), minimum correlation {}",
            st["function"].as_str().unwrap_or("?"),
            st["input_ids"].as_array().map_or(0, Vec::len),
            st["reference"].as_array().map_or(0, Vec::len),
            num(&st["stride"]),
            st["min_correlation"]
        );
    }
    println!("  metadata:");
    for (k, v) in r["metadata"].as_object().into_iter().flatten() {
        if k == "self_test" {
            continue;
        }
        let v = match v.as_str() {
            Some(s) => s.to_string(),
            None => v.to_string(),
        };
        let v = if v.len() > 100 && k != "fidelity" {
            format!("{}…", v.chars().take(100).collect::<String>())
        } else {
            v.to_string()
        };
        println!("    {k} = {v}");
    }
    println!();
}

/// A JSON array of strings, comma-separated.
fn strings(v: &serde_json::Value) -> String {
    let items: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    items.join(", ")
}

/// The weight group of a constant: its name's first part, with every `layerN` as `layer*`.
fn group_of(name: &str) -> String {
    let g = name.split('_').next().unwrap_or(name);
    if g.starts_with("layer") && g[5..].chars().all(|c| c.is_ascii_digit()) {
        "layer*".to_string()
    } else {
        g.to_string()
    }
}

/// Bytes a `constexpr_*` op stores: its parameters' blobs not counted before (a tied decoder
/// shares the table's) plus inline values.
fn stored_bytes(
    pkg: &anebert::Package,
    op: &anebert::proto::mil_spec::Operation,
    seen_blobs: &mut std::collections::BTreeSet<u64>,
) -> u64 {
    use anebert::proto::mil_spec::{argument::binding::Binding, value::Value};
    let values = op
        .attributes
        .iter()
        .filter(|(k, _)| *k != "name")
        .map(|(_, v)| v)
        .chain(op.inputs.values().flat_map(|a| {
            a.arguments.iter().filter_map(|b| match &b.binding {
                Some(Binding::Value(v)) => Some(v),
                _ => None,
            })
        }));
    let mut bytes = 0;
    for v in values {
        match &v.value {
            Some(Value::BlobFileValue(b)) => {
                let size = pkg
                    .weights
                    .as_ref()
                    .and_then(|w| w.data(b.offset).ok())
                    .map_or(0, |(info, _)| info.size);
                if seen_blobs.insert(b.offset) {
                    bytes += size;
                }
            }
            _ => {
                if let Ok(t) = anebert::package::value::to_tensor(v, None) {
                    bytes += (t.len() as u64 * t.dtype().bits() as u64).div_ceil(8);
                }
            }
        }
    }
    bytes
}
