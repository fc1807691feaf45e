//! Builds one ANE-form attention block (1×1-conv projections, split-einsum attention per head,
//! softmax over the key axis, layer_norm over channels) as a Core ML package, then runs it on the
//! CPU backend in f32 and in the fp16 ANE simulation and compares the two.
//!
//! `cargo run --release --example attention_block [-- OUT.mlpackage]`

use anebert::cpu::{CpuModel, Precision};
use anebert::{DType, Package, Tensor};
use anebert_build::mil::{InputShape, MilError, ProgramBuilder, SpecVersion};
use std::collections::BTreeMap;

const D: usize = 64;
const HEADS: usize = 4;
const S: usize = 128;

fn weights(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

fn build() -> Result<ProgramBuilder, MilError> {
    let mut p = ProgramBuilder::new(SpecVersion::Ios17);
    p.function("main", |f| {
        let x = f.input("hidden", DType::F16, InputShape::Fixed(vec![1, D, 1, S]))?;
        let dh = D / HEADS;
        let scale = 1.0 / (dh as f32).sqrt();
        // 1/sqrt(d_head) folded into Wq, as the converter does.
        let wq: Vec<f32> = weights(1, D * D, 0.5).iter().map(|w| w * scale).collect();
        let wq = f.constant("wq", Tensor::f16(vec![D, D, 1, 1], wq)?)?;
        let wk = f.constant("wk", Tensor::f16(vec![D, D, 1, 1], weights(2, D * D, 0.5))?)?;
        let wv = f.constant("wv", Tensor::f16(vec![D, D, 1, 1], weights(3, D * D, 0.5))?)?;
        let wo = f.constant("wo", Tensor::f16(vec![D, D, 1, 1], weights(4, D * D, 0.5))?)?;
        let q = f.conv("q", &x, &wq, None)?;
        let k = f.conv("k", &x, &wk, None)?;
        let v = f.conv("v", &x, &wv, None)?;
        let kt = f.transpose("k_t", &k, &[0, 3, 2, 1])?; // (1, S, 1, D)
        let sizes = vec![dh as i32; HEADS];
        let qs = f.split("q_heads", &q, 1, &sizes)?;
        let ks = f.split("k_heads", &kt, 3, &sizes)?;
        let vs = f.split("v_heads", &v, 1, &sizes)?;
        let mut heads = Vec::new();
        for h in 0..HEADS {
            let scores = f.einsum(&format!("scores_{h}"), "bkhc,bchq->bkhq", &ks[h], &qs[h])?;
            let w = f.softmax(&format!("weights_{h}"), &scores, 1)?;
            heads.push(f.einsum(&format!("context_{h}"), "bchk,bkhq->bchq", &vs[h], &w)?);
        }
        let ctx = f.concat("context", &heads, 1, false)?;
        let out = f.conv("o", &ctx, &wo, None)?;
        let res = f.binary("add", "residual", &x, &out)?;
        let y = f.layer_norm("norm", &res, &[1], None, None, 1e-5)?;
        f.output("output", &y)
    })?;
    p.metadata("com.anebert.example", "attention_block");
    Ok(p)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/attention_block.mlpackage".into());
    build()?.build()?.write(&out)?;
    let pkg = Package::open(&out)?;
    let mut inputs = BTreeMap::new();
    inputs.insert(
        "hidden".to_string(),
        Tensor::f16(vec![1, D, 1, S], weights(9, D * S, 4.0))?,
    );
    let mut results = Vec::new();
    for precision in [Precision::F32, Precision::Fp16Ane] {
        let model = CpuModel::load(&pkg, None, precision)?;
        let t = std::time::Instant::now();
        let y = model
            .predict(&inputs)?
            .remove("output")
            .ok_or("no output")?;
        println!(
            "{precision:>8}: {} ops in {:.2} ms, output {:?}",
            model.op_count(),
            t.elapsed().as_secs_f64() * 1e3,
            y.shape()
        );
        results.push(y);
    }
    let (a, b) = (results[0].as_f32().unwrap(), results[1].as_f32().unwrap());
    let max_ref = a.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    let rms = (a
        .iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64)
        .sqrt();
    let psnr = 20.0 * ((max_ref + 1e-5) / (rms + 1e-10)).log10();
    println!(
        "wrote {out}; fp16-ane vs f32: max |Δ| {:.2e}, PSNR {psnr:.1} dB",
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    );
    Ok(())
}
