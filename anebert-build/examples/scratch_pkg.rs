use anebert_build::mil::{InputShape, ProgramBuilder, SpecVersion};
use anebert_runtime::{DType, Tensor};
fn main() {
    let mut p = ProgramBuilder::new(SpecVersion::Ios17);
    p.function("main", |f| {
        let x = f.input("x", DType::F16, InputShape::Fixed(vec![1, 8, 1, 32]))?;
        let w = f.constant(
            "w",
            Tensor::f16(vec![4, 8, 1, 1], (0..32).map(|i| i as f32 * 0.1).collect())?,
        )?;
        let b = f.constant("b", Tensor::f16(vec![4], vec![0.5; 4])?)?;
        let y = f.conv("proj", &x, &w, Some(&b))?;
        let y = f.layer_norm("ln", &y, &[1], None, None, 1e-5)?;
        let y = f.softmax("probs", &y, 1)?;
        f.output("probs", &y)
    })
    .unwrap();
    p.metadata("k", "v");
    p.build()
        .unwrap()
        .write("/tmp/scratch/t1.mlpackage")
        .unwrap();
}
