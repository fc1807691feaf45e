//! The package reader and the interpreter never panic on damaged packages: truncated, bit-flipped
//! and lying weight files, mutated specs and manifests all give errors (or, where the damage is
//! harmless, a valid result).

use anebert::cpu::{CpuModel, Precision};
use anebert::{DType, Package, Tensor};
use anebert_build::mil::{InputShape, ProgramBuilder, SpecVersion};
use std::collections::BTreeMap;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// xorshift64*: deterministic, dependency-free randomness for the mutations.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn base_package(dir: &Path) -> std::path::PathBuf {
    let mut p = ProgramBuilder::new(SpecVersion::Ios17);
    p.function("main", |f| {
        let x = f.input("x", DType::F16, InputShape::Fixed(vec![1, 16, 1, 8]))?;
        let w = f.constant(
            "w",
            Tensor::f16(
                vec![16, 16, 1, 1],
                (0..256).map(|i| (i % 7) as f32 * 0.1).collect(),
            )?,
        )?;
        let b = f.constant("b", Tensor::f32(vec![16], vec![0.25; 16])?)?;
        let b = f.cast("b16", &b, DType::F16)?;
        let y = f.conv("proj", &x, &w, Some(&b))?;
        let y = f.layer_norm("ln", &y, &[1], None, None, 1e-5)?;
        f.output("y", &y)
    })
    .unwrap();
    let path = dir.join("base.mlpackage");
    p.build().unwrap().write(&path).unwrap();
    path
}

/// Open and run; Ok(true) if it ran, Ok(false) if it was rejected with an error, Err on panic.
fn exercise(path: &Path) -> Result<bool, String> {
    catch_unwind(AssertUnwindSafe(|| {
        let Ok(pkg) = Package::open(path) else {
            return false;
        };
        let Ok(model) = CpuModel::load(&pkg, None, Precision::F32) else {
            return false;
        };
        let mut inputs = BTreeMap::new();
        inputs.insert(
            "x".to_string(),
            Tensor::f32(vec![1, 16, 1, 8], vec![0.5; 128]).unwrap(),
        );
        model.predict(&inputs).is_ok()
    }))
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

fn copy_dir(from: &Path, to: &Path) {
    if to.exists() {
        fs::remove_dir_all(to).unwrap();
    }
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let dst = to.join(rel);
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        fs::copy(&entry, &dst).unwrap();
    }
    fs::create_dir_all(to.join("Data/com.apple.CoreML/weights")).unwrap();
}

fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn mutated_packages_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base_package(tmp.path());
    assert_eq!(exercise(&base), Ok(true), "the unmutated package runs");
    let files = [
        "Data/com.apple.CoreML/weights/weight.bin",
        "Data/com.apple.CoreML/model.mlmodel",
        "Manifest.json",
    ];
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let (mut rejected, mut ran) = (0, 0);
    let work = tmp.path().join("work.mlpackage");
    for i in 0..600 {
        copy_dir(&base, &work);
        let target = work.join(files[i % files.len()]);
        let mut bytes = fs::read(&target).unwrap();
        match rng.below(5) {
            0 => bytes.truncate(rng.below(bytes.len())),
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(bytes.len());
                    bytes[at] ^= 1 << rng.below(8);
                }
            }
            2 => {
                // Overwrite an 8-byte field with a lie (sizes, offsets, counts).
                let at = rng.below(bytes.len().saturating_sub(8));
                let lie = [u64::MAX, 1 << 40, 0, rng.next(), bytes.len() as u64 * 2][rng.below(5)];
                let n = 8.min(bytes.len() - at);
                bytes[at..at + n].copy_from_slice(&lie.to_le_bytes()[..n]);
            }
            3 => {
                let at = rng.below(bytes.len());
                bytes[at] = rng.next() as u8;
            }
            _ => {
                let extra: Vec<u8> = (0..rng.below(100)).map(|_| rng.next() as u8).collect();
                let at = rng.below(bytes.len());
                bytes.splice(at..at, extra);
            }
        }
        fs::write(&target, &bytes).unwrap();
        match exercise(&work) {
            Ok(true) => ran += 1,
            Ok(false) => rejected += 1,
            Err(msg) => panic!("mutation {i} of {} panicked: {msg}", files[i % files.len()]),
        }
    }
    assert!(
        rejected > 300,
        "most mutations must be rejected (rejected {rejected}, ran {ran})"
    );
}

#[test]
fn specific_damage_gives_specific_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let base = base_package(tmp.path());
    let work = tmp.path().join("w.mlpackage");
    let wbin = "Data/com.apple.CoreML/weights/weight.bin";
    let err = |work: &Path| {
        Package::open(work)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };

    copy_dir(&base, &work);
    let mut b = fs::read(work.join(wbin)).unwrap();
    b[64] = 0; // sentinel
    fs::write(work.join(wbin), &b).unwrap();
    assert!(err(&work).contains("invalid sentinel"), "{}", err(&work));

    copy_dir(&base, &work);
    let mut b = fs::read(work.join(wbin)).unwrap();
    b[72..80].copy_from_slice(&(1u64 << 40).to_le_bytes()); // size of the first blob
    fs::write(work.join(wbin), &b).unwrap();
    assert!(err(&work).contains("past the end"), "{}", err(&work));

    copy_dir(&base, &work);
    let b = fs::read(work.join(wbin)).unwrap();
    fs::write(work.join(wbin), &b[..b.len() - 3]).unwrap();
    assert!(err(&work).contains("past the end"), "{}", err(&work));

    copy_dir(&base, &work);
    let mut b = fs::read(work.join(wbin)).unwrap();
    b[68] = 99; // dtype code
    fs::write(work.join(wbin), &b).unwrap();
    assert!(
        err(&work).contains("unknown blob dtype code 99"),
        "{}",
        err(&work)
    );

    copy_dir(&base, &work);
    fs::remove_file(work.join("Data/com.apple.CoreML/model.mlmodel")).unwrap();
    assert!(err(&work).contains("does not exist"), "{}", err(&work));

    copy_dir(&base, &work);
    fs::remove_file(work.join("Manifest.json")).unwrap();
    assert!(err(&work).contains("no Manifest.json"), "{}", err(&work));

    // An offset that points into the middle of a blob, not at one.
    copy_dir(&base, &work);
    use prost::Message;
    let spec_path = work.join("Data/com.apple.CoreML/model.mlmodel");
    let mut spec = anebert::proto::Model::decode(fs::read(&spec_path).unwrap().as_slice()).unwrap();
    let Some(anebert::proto::model::Type::MlProgram(prog)) = &mut spec.r#type else {
        panic!()
    };
    for op in prog
        .functions
        .get_mut("main")
        .unwrap()
        .block_specializations
        .get_mut("CoreML7")
        .unwrap()
        .operations
        .iter_mut()
    {
        if let Some(anebert::proto::mil_spec::value::Value::BlobFileValue(bv)) =
            op.attributes.get_mut("val").and_then(|v| v.value.as_mut())
        {
            bv.offset += 8;
        }
    }
    fs::write(&spec_path, spec.encode_to_vec()).unwrap();
    assert!(
        err(&work).contains("does not point at a blob"),
        "{}",
        err(&work)
    );
}

/// Hostile packages that used to be accepted: a description that declares no inputs, a program
/// with no functions (its error named "several functions ()").
#[test]
fn undescribed_inputs_and_empty_programs_are_errors() {
    use anebert::proto;
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let path = base_package(dir.path());
    let spec_file = path.join("Data/com.apple.CoreML/model.mlmodel");
    let original = proto::Model::decode(fs::read(&spec_file).unwrap().as_slice()).unwrap();

    let mut spec = original.clone();
    spec.description.as_mut().unwrap().input.clear();
    fs::write(&spec_file, spec.encode_to_vec()).unwrap();
    let e = Package::open(&path).unwrap_err().to_string();
    assert!(e.contains("does not declare input `x`"), "{e}");

    let mut spec = original;
    if let Some(proto::model::Type::MlProgram(p)) = &mut spec.r#type {
        p.functions.clear();
    }
    fs::write(&spec_file, spec.encode_to_vec()).unwrap();
    let pkg = Package::open(&path).unwrap();
    let e = CpuModel::load(&pkg, None, Precision::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("has no functions"), "{e}");
}
