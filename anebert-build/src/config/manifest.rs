//! `[package.metadata.anebert]`: the models a crate declares in its Cargo.toml, and
//! [`convert()`], the one-line build script that converts them.

// The examples are build scripts: `fn main` is the point.
#![allow(clippy::needless_doctest_main)]

use super::error::{io_err, BuildError};
use super::out_dir::IndexEntry;
use super::Config;
use crate::convert::WeightPrecision;
use crate::ir::Pooling;
use serde::Deserialize;
use std::fs;
use std::path::{Path, PathBuf};

/// Sequence lengths in `[package.metadata.anebert]`: one or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum SeqSpec {
    One(usize),
    Many(Vec<usize>),
}

/// `head = "mlm"` or `head = ["mlm", "embedding"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum HeadSpec {
    One(String),
    Many(Vec<String>),
}

/// One model in `[package.metadata.anebert]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelMeta {
    model: String,
    head: Option<HeadSpec>,
    seq: Option<SeqSpec>,
    name: Option<String>,
    weights: Option<String>,
    rotate: Option<bool>,
    rotation_seed: Option<u64>,
    rotation: Option<String>,
    pooling: Option<String>,
    normalize: Option<bool>,
    target: Option<String>,
    allow_lossy: Option<bool>,
    min_cosine: Option<f64>,
    calibration: Option<String>,
    packing: Option<bool>,
    max_segments: Option<usize>,
    safe_norm: Option<bool>,
    self_test: Option<bool>,
    treatment: Option<String>,
}

impl ModelMeta {
    fn config(self, name: Option<String>, at: &str, dir: &Path) -> Result<Config, BuildError> {
        let bad = |what: String| {
            BuildError::config(
                format!("Cargo.toml [{at}]: {what}"),
                "fix the entry; see anebert_build::convert's documentation",
            )
        };
        let mut c = Config::new();
        c.model(self.model);
        if let Some(n) = self.name.or(name) {
            c.name(n);
        }
        match self.head {
            Some(HeadSpec::One(h)) => {
                c.head(h.parse().map_err(bad)?);
            }
            Some(HeadSpec::Many(v)) => {
                let heads = v
                    .iter()
                    .map(|h| h.parse())
                    .collect::<Result<Vec<_>, String>>()
                    .map_err(bad)?;
                c.heads(heads);
            }
            None => {}
        }
        match self.seq {
            Some(SeqSpec::One(s)) => c.seq_len(s),
            Some(SeqSpec::Many(v)) => c.seq_lens(v),
            None => &mut c,
        };
        if let Some(w) = self.weights {
            let (w, target) = WeightPrecision::parse_with_target(&w).map_err(bad)?;
            c.weights(w);
            if let Some(t) = target {
                c.min_cosine(t);
            }
        }
        if let Some(t) = self.target {
            c.target(t.parse().map_err(bad)?);
        }
        if let Some(a) = self.allow_lossy {
            c.allow_lossy(a);
        }
        if let Some(m) = self.min_cosine {
            c.min_cosine(m);
        }
        if let Some(path) = self.calibration {
            let texts = crate::gate::read_calibration(&dir.join(&path))
                .map_err(|e| bad(format!("calibration: {e}")))?;
            c.calibration(texts);
        }
        if let Some(r) = self.rotate {
            c.rotate(r);
        }
        if let Some(s) = self.rotation_seed {
            c.rotation_seed(s);
        }
        if let Some(m) = self.rotation {
            c.rotation_method(m.parse().map_err(bad)?);
        }
        if let Some(p) = self.pooling {
            c.pooling(p.parse::<Pooling>().map_err(bad)?);
        }
        if let Some(n) = self.normalize {
            c.normalize(n);
        }
        if let Some(t) = self.treatment {
            c.treatment(t.parse().map_err(bad)?);
        }
        if let Some(t) = self.self_test {
            c.self_test(t);
        }
        if let Some(s) = self.safe_norm {
            c.safe_norm(s);
        }
        if let Some(p) = self.packing {
            c.packing(p);
        }
        if let Some(t) = self.max_segments {
            c.max_segments(t);
        }
        Ok(c)
    }
}

/// The models declared in a Cargo.toml's `[package.metadata.anebert]`:
///
/// ```toml
/// [package.metadata.anebert]
/// model = "answerdotai/ModernBERT-base"   # one model: its keys right here
/// head = "mlm"
/// seq = [128, 512]
///
/// # or several, each named:
/// [package.metadata.anebert.models.sentiment]
/// model = "./models/my-classifier"
/// head = "sequence-classification"
/// seq = 128
/// ```
///
/// Keys: `model` (required), `head`, `seq`, `name`, `packing`, `max_segments`, `safe_norm`, `self_test`, `treatment` (`auto`, `rotation`, `safe-norm`, `learned`, `none`), `weights` (`fp16`, `fp32`, `int8`, `lut8`,
/// `lut6`, `lut4`, `mixed[:MIN_COSINE]`), `target` (`ios17`/`ios18`), `allow_lossy`,
/// `min_cosine`, `calibration` (a text file, one text per line, relative to Cargo.toml),
/// `rotate`, `rotation_seed`, `rotation` (`hadamard`/`orthogonal`/`learned`), `pooling` (`mean`/`cls`),
/// `normalize`.
pub fn configs_from_manifest(manifest: &Path) -> Result<Vec<Config>, BuildError> {
    let text = fs::read_to_string(manifest).map_err(io_err(manifest))?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| {
        BuildError::config(
            format!("{}: {e}", manifest.display()),
            "fix the TOML syntax",
        )
    })?;
    let meta = doc
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("anebert"))
        .and_then(|a| a.as_table())
        .ok_or_else(|| {
            BuildError::config(
                format!("{} has no [package.metadata.anebert] table", manifest.display()),
                "declare the model there (model = \"org/name\", head = \"mlm\", seq = 512) or use anebert_build::Config in build.rs",
            )
        })?;
    let base = manifest.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut out = Vec::new();
    let mut single = meta.clone();
    if let Some(models) = single.remove("models") {
        let models = models.as_table().ok_or_else(|| {
            BuildError::config(
                "[package.metadata.anebert] `models` must be a table of named models",
                "write [package.metadata.anebert.models.NAME] sections",
            )
        })?;
        for (name, m) in models {
            let at = format!("package.metadata.anebert.models.{name}");
            let mm: ModelMeta = m.clone().try_into().map_err(|e: toml::de::Error| {
                BuildError::config(
                    format!("Cargo.toml [{at}]: {}", e.message()),
                    "fix the entry",
                )
            })?;
            out.push(mm.config(Some(name.clone()), &at, &base)?);
        }
    }
    if !single.is_empty() {
        let at = "package.metadata.anebert";
        let mm: ModelMeta =
            toml::Value::Table(single)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    BuildError::config(
                        format!("Cargo.toml [{at}]: {}", e.message()),
                        "fix the entry",
                    )
                })?;
        out.push(mm.config(None, at, &base)?);
    }
    if out.is_empty() {
        return Err(BuildError::config(
            "[package.metadata.anebert] declares no model",
            "add model = \"org/name\" (and head, seq) or [package.metadata.anebert.models.NAME]",
        ));
    }
    for c in &mut out {
        c.manifest_dir(base.clone());
    }
    Ok(out)
}

/// Convert every model declared in `[package.metadata.anebert]` of the crate's Cargo.toml — the
/// one-line build script:
///
/// ```no_run
/// // build.rs
/// fn main() {
///     anebert_build::convert().unwrap_or_else(|e| anebert_build::fail(e));
/// }
/// ```
pub fn convert() -> Result<Vec<IndexEntry>, BuildError> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| {
            BuildError::config(
                "CARGO_MANIFEST_DIR is not set",
                "call anebert_build::convert() from a build script",
            )
        })?;
    let manifest = dir.join("Cargo.toml");
    println!("cargo:rerun-if-changed={}", manifest.display());
    let mut all = Vec::new();
    for mut c in configs_from_manifest(&manifest)? {
        all.extend(c.convert()?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::WeightPrecision;
    use crate::ir::HeadKind;

    #[test]
    fn manifest_forms_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("Cargo.toml");
        fs::write(
            &m,
            "[package]\nname = \"x\"\n[package.metadata.anebert]\nmodel = \"org/a\"\nhead = \"embedding\"\nseq = [128, 256]\n\
             [package.metadata.anebert.models.cls]\nmodel = \"./ckpt\"\nhead = \"sequence-classification\"\nseq = 64\nweights = \"fp32\"\n",
        )
        .unwrap();
        let cs = configs_from_manifest(&m).unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0].model_name().unwrap(), "cls");
        assert_eq!(cs[0].spec.weights, WeightPrecision::Fp32);
        assert_eq!(cs[1].model_name().unwrap(), "a");
        assert_eq!(cs[1].checked_seq_lens().unwrap(), vec![128, 256]);

        fs::write(
            &m,
            "[package]\nname = \"x\"\n[package.metadata.anebert]\nmodel = \"org/a\"\nsequence = 5\n",
        )
        .unwrap();
        let e = configs_from_manifest(&m).unwrap_err().to_string();
        assert!(e.contains("unknown field `sequence`"), "{e}");
        fs::write(
            &m,
            "[package]\nname = \"x\"\n[package.metadata.anebert]\nmodel = \"org/a\"\nhead = \"mlmx\"\n",
        )
        .unwrap();
        let e = configs_from_manifest(&m).unwrap_err().to_string();
        assert!(e.contains("unknown head"), "{e}");
        fs::write(&m, "[package]\nname = \"x\"\n").unwrap();
        let e = configs_from_manifest(&m).unwrap_err();
        assert!(e.help().unwrap().contains("model ="), "{e}");
    }

    /// Lists of heads and lengths make one multifunction package (spec 9 unless the target
    /// says iOS 17, which makes one package per head and length).
    #[test]
    fn head_and_seq_lists_plan_one_multifunction_package() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("Cargo.toml");
        let write = |extra: &str| {
            fs::write(
                &m,
                format!("[package]\nname = \"x\"\n[package.metadata.anebert]\nmodel = \"org/a\"\nhead = [\"mlm\", \"embedding\"]\nseq = [512, 128]\n{extra}"),
            )
            .unwrap();
        };
        write("");
        let c = configs_from_manifest(&m).unwrap().remove(0);
        let plan = c.plan().unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].heads, [HeadKind::MaskedLm, HeadKind::Embedding]);
        assert_eq!(plan[0].target, crate::mil::SpecVersion::Ios18);
        assert_eq!(c.dir_name(&plan[0]), "a-mlm+embedding-s128+512");
        write("target = \"ios17\"\n");
        let c = configs_from_manifest(&m).unwrap().remove(0);
        let plan = c.plan().unwrap();
        assert_eq!(plan.len(), 4);
        assert!(plan.iter().all(|o| o.functions().len() == 1));
        assert_eq!(c.dir_name(&plan[0]), "a-mlm-s512");
        fs::write(
            &m,
            "[package]\nname = \"x\"\n[package.metadata.anebert]\nmodel = \"org/a\"\nhead = [\"mlm\", \"pooler\"]\n",
        )
        .unwrap();
        let e = configs_from_manifest(&m).unwrap_err().to_string();
        assert!(e.contains("unknown head \"pooler\""), "{e}");
    }

    #[test]
    fn compression_keys_reach_the_options() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("Cargo.toml");
        fs::write(dir.path().join("texts.txt"), "One text.\n\nAnother one.\n").unwrap();
        fs::write(
            &m,
            "[package]\nname = \"x\"\n[package.metadata.anebert]\nmodel = \"org/a\"\nseq = 64\n\
             weights = \"mixed:0.9995\"\ntarget = \"ios18\"\nallow_lossy = true\ncalibration = \"texts.txt\"\n",
        )
        .unwrap();
        let cs = configs_from_manifest(&m).unwrap();
        let o = cs[0].plan().unwrap().remove(0);
        assert_eq!(o.weights, WeightPrecision::Mixed);
        assert_eq!(o.min_cosine, Some(0.9995));
        assert_eq!(o.target, crate::mil::SpecVersion::Ios18);
        assert!(o.allow_lossy);
        assert_eq!(
            o.calibration.as_deref(),
            Some(&["One text.".to_string(), "Another one.".to_string()][..])
        );
        // Every option is in the cache key: another target is another artifact.
        let mut other = o.clone();
        other.target = crate::mil::SpecVersion::Ios17;
        let fp = std::collections::BTreeMap::new();
        assert_ne!(
            crate::artifact::key(&fp, &o),
            crate::artifact::key(&fp, &other)
        );
        for (bad, says) in [
            ("weights = \"mixed:2\"", "mixed:"),
            ("target = \"ios16\"", "ios17"),
            ("calibration = \"missing.txt\"", "missing.txt"),
        ] {
            fs::write(
                &m,
                format!("[package]\nname = \"x\"\n[package.metadata.anebert]\nmodel = \"org/a\"\n{bad}\n"),
            )
            .unwrap();
            let e = configs_from_manifest(&m).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
