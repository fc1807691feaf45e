//! The fill-mask head's calls: K positions of a text per call.

use super::Model;
use crate::contract;
use crate::error::Error;
use crate::Tensor;

impl Model {
    /// The fill-mask head: the logits at `positions` of `ids`, K positions per call.
    pub fn run_positions(
        &self,
        ids: &[i32],
        pad_id: i32,
        positions: &[usize],
    ) -> Result<Vec<Vec<f32>>, Error> {
        let f = self
            .info
            .function_for(ids.len())
            .unwrap_or_else(|| self.info.functions.last().expect("one function"));
        let k = f.mask_slots.ok_or_else(|| {
            Error::Metadata(format!(
                "function `{}` records no mask_slots; it is not a fill-mask function",
                f.name
            ))
        })?;
        let mut rows = Vec::with_capacity(positions.len());
        for chunk in positions.chunks(k.max(1)) {
            let mut inputs = contract::encoder_inputs(ids, f.seq_len, pad_id)?;
            let mut slots: Vec<i32> = chunk.iter().map(|&p| p as i32).collect();
            slots.resize(k, 0);
            let t = Tensor::i32(vec![1, k], slots).map_err(|e| Error::Options(e.to_string()))?;
            inputs.insert(contract::MASK_POSITIONS.to_string(), t);
            let mut out = self.predict(&inputs)?;
            let t = out.remove(self.info.head.output_name()).ok_or_else(|| {
                Error::Metadata("the fill-mask function has no `logits` output".into())
            })?;
            rows.extend(contract::token_vectors(&t, chunk.len())?);
        }
        Ok(rows)
    }
}
