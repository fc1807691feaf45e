//! Several texts per call: a packed model's functions take `segment_ids` and `position_ids`, so
//! [`Model::run_batch`] packs token sequences into as few calls as fit and unpacks the answers in
//! input order; other models run one call per text.

use super::{Engine, Model, Output};
use crate::contract::{self, ContractError};
use crate::error::Error;
use crate::packing;
use crate::Tensor;
use std::collections::BTreeMap;

impl Model {
    /// The most texts one call of a packed model holds (`None`: the model is not packed).
    pub fn max_segments(&self) -> Option<usize> {
        self.info.functions.last().and_then(|f| f.max_segments)
    }

    /// Run several token sequences; the head's output for each, in input order. A packed model
    /// groups them first-fit decreasing into calls of its longest length and `max_segments` texts
    /// (each call at the shortest length that holds it); each text attends only to itself, so its
    /// answer is the one it gets alone. A sequence longer than the longest length is an error
    /// naming it.
    pub fn run_batch(&self, texts: &[&[i32]], pad_id: i32) -> Result<Vec<Output>, Error> {
        let Some(t) = self.max_segments() else {
            return texts.iter().map(|ids| self.run_ids(ids, pad_id)).collect();
        };
        let lens: Vec<usize> = texts.iter().map(|t| t.len()).collect();
        let packs = packing::plan(&lens, self.info.seq_len, t)?;
        let name = self.info.head.output_name();
        let mut out: Vec<Option<Output>> = vec![None; texts.len()];
        for p in packs {
            let f = self
                .info
                .function_for(p.tokens)
                .unwrap_or_else(|| self.info.functions.last().expect("one function"));
            let members: Vec<&[i32]> = p.texts.iter().map(|&i| texts[i]).collect();
            let (inputs, offsets) = packing::inputs(&members, f.seq_len, pad_id)?;
            let mut res = self.predict(&inputs)?;
            let y = res.remove(name).ok_or_else(|| {
                Error::Metadata(format!("the model has no `{name}` output for its head"))
            })?;
            if self.info.head.pooled() {
                let cols = contract::token_vectors(&y, members.len())?;
                for (&i, row) in p.texts.iter().zip(cols) {
                    out[i] = Some(Output { rows: vec![row] });
                }
            } else {
                let rows = contract::token_vectors(&y, p.tokens)?;
                for (&i, &at) in p.texts.iter().zip(&offsets) {
                    out[i] = Some(Output {
                        rows: rows[at..at + lens[i]].to_vec(),
                    });
                }
            }
        }
        out.into_iter()
            .map(|o| {
                o.ok_or_else(|| {
                    Error::Contract(ContractError::Segments(
                        "a text was left out of every call".into(),
                    ))
                })
            })
            .collect()
    }

    /// A packed function called with `attention_mask` (one text, as for an unpacked model): run
    /// as segment 1, and a pooled head's answer is the first column, `(1, C)` — what the
    /// unpacked function answers.
    pub(super) fn predict_one_packed(
        &self,
        engine: &Engine,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, Error> {
        let packed = packing::from_attention_mask(inputs)?;
        let mut out = Self::run_engine(engine, &packed)?;
        if self.info.head.pooled() {
            for t in out.values_mut() {
                *t = packing::first_text(t)?;
            }
        }
        Ok(out)
    }
}
