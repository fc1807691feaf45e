//! CPU backend benchmarks. `cargo bench --bench interpreter`; reported throughput is FLOP/s
//! (criterion prints it as "elem/s").

use anebert::cpu::{CpuModel, Precision};
use anebert::{DType, Package, Tensor};
use anebert_build::mil::{InputShape, ProgramBuilder, SpecVersion};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One 1×1 conv on BC1S data: BERT-base's fused QKV projection at S = 512,
/// (1, 768, 1, 512) × (2304, 768).
fn conv_1x1(c: &mut Criterion) {
    let (cin, cout, s) = (768usize, 2304usize, 512usize);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conv.mlpackage");
    let mut p = ProgramBuilder::new(SpecVersion::Ios17);
    p.function("main", |f| {
        let x = f.input("x", DType::F32, InputShape::Fixed(vec![1, cin, 1, s]))?;
        let w = f.constant(
            "w",
            Tensor::f32(
                vec![cout, cin, 1, 1],
                (0..cout * cin)
                    .map(|i| ((i % 97) as f32 - 48.0) * 1e-3)
                    .collect(),
            )?,
        )?;
        let y = f.conv("qkv", &x, &w, None)?;
        f.output("y", &y)
    })
    .unwrap();
    p.build().unwrap().write(&path).unwrap();
    let pkg = Package::open(&path).unwrap();
    let x = Arc::new(
        Tensor::f32(
            vec![1, cin, 1, s],
            (0..cin * s)
                .map(|i| ((i % 89) as f32 - 44.0) * 1e-2)
                .collect(),
        )
        .unwrap(),
    );
    let mut inputs = BTreeMap::new();
    inputs.insert("x".to_string(), x);
    let mut g = c.benchmark_group("conv_1x1_768x2304_s512");
    g.throughput(Throughput::Elements((2 * cin * cout * s) as u64));
    g.sample_size(30);
    for precision in [Precision::F32, Precision::Fp16Ane] {
        let model = CpuModel::load(&pkg, None, precision).unwrap();
        g.bench_function(precision.to_string(), |b| {
            b.iter(|| model.predict_arc(&inputs).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, conv_1x1);
criterion_main!(benches);
