//! What a [`Config`] converts: the conversion options of each package and its directory name.

use super::{BuildError, Config};
use crate::convert::ConvertOptions;
use crate::ir::HeadKind;
use crate::mil::SpecVersion;

impl Config {
    /// Conversion options for `heads` at `seq_lens` with this config's other settings.
    pub(super) fn options(&self, heads: Vec<HeadKind>, seq_lens: Vec<usize>) -> ConvertOptions {
        let s = &self.spec;
        let several = heads.len() * seq_lens.len() > 1;
        let mut o = ConvertOptions::multi(heads, seq_lens);
        o.weights = s.weights;
        o.rotate = s.rotate;
        o.rotation_seed = s.rotation_seed;
        o.rotation_method = s.rotation_method;
        o.embedding_pooling = s.pooling;
        o.normalize = s.normalize;
        o.target = s.target.unwrap_or(if several {
            SpecVersion::Ios18
        } else {
            SpecVersion::Ios17
        });
        o.allow_lossy = s.allow_lossy;
        o.min_cosine = s.min_cosine;
        o.calibration = s.calibration.clone();
        o.packing = s.packing;
        o.safe_norm = s.safe_norm;
        o.self_test = s.self_test;
        o.treatment_auto = s.treatment_auto;
        o.max_segments = s.max_segments;
        o
    }

    /// The packages this config makes: one multifunction package for every head and length, or
    /// (one head and length, or an explicit iOS 17 target) one per head and length.
    pub(super) fn plan(&self) -> Result<Vec<ConvertOptions>, BuildError> {
        let seqs = self.checked_seq_lens()?;
        let heads = self.spec.heads.clone();
        if heads.is_empty() {
            return Err(BuildError::config(
                "no head given",
                "call .head(Head::MaskedLm) or .heads([...]) (or head = \"mlm\" / [\"mlm\", \"embedding\"])",
            ));
        }
        if self.spec.target == Some(SpecVersion::Ios17) {
            return Ok(heads
                .iter()
                .flat_map(|&h| seqs.iter().map(move |&s| (h, s)))
                .map(|(h, s)| self.options(vec![h], vec![s]))
                .collect());
        }
        Ok(vec![self.options(heads, seqs)])
    }

    /// The directory name of the package `o` makes: `{name}-s{seq}` for one function (with the
    /// head when the config has several), `{name}-{heads}-s{lens}` for a multifunction package.
    pub(super) fn dir_name(&self, o: &ConvertOptions) -> String {
        let name = self.model_name().unwrap_or_else(|_| "model".into());
        let mut lens = o.seq_lens.clone();
        lens.sort_unstable();
        let lens: Vec<String> = lens.iter().map(usize::to_string).collect();
        let heads: Vec<&str> = o.heads.iter().map(|h| h.name()).collect();
        let packed = if o.packing { "-packed" } else { "" };
        if self.spec.heads.len() > 1 || o.heads.len() > 1 {
            format!("{name}-{}-s{}{packed}", heads.join("+"), lens.join("+"))
        } else {
            format!("{name}-s{}{packed}", lens.join("+"))
        }
    }

    pub(super) fn checked_seq_lens(&self) -> Result<Vec<usize>, BuildError> {
        let v = if self.spec.seq_lens.is_empty() {
            vec![512]
        } else {
            self.spec.seq_lens.clone()
        };
        if let Some(bad) = v.iter().find(|&&s| s == 0 || s > 16384) {
            return Err(BuildError::config(
                format!("sequence length {bad} is out of range"),
                "use 1 ..= 16384 (the ANE's width limit); 128, 512 and 1024 are common",
            ));
        }
        Ok(v)
    }
}
