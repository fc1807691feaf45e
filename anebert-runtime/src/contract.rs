//! The converted model's contract (docs/design.md §2): input names and layout, and reading the
//! `(1, C, 1, S)` per-token outputs.

use crate::Tensor;
use std::collections::BTreeMap;

/// Token ids input, int32 `(1, S)`.
pub const INPUT_IDS: &str = "input_ids";
/// Attention mask input, int32 `(1, S)`: 1 = token, 0 = padding.
pub const ATTENTION_MASK: &str = "attention_mask";
/// A packed function's segment input, int32 `(1, S)`: 0 = padding, 1..=T = the text each token
/// belongs to (each text one contiguous run).
pub const SEGMENT_IDS: &str = "segment_ids";
/// A packed function's position input, int32 `(1, S)`: each token's position in its own text
/// (0 at its first token).
pub const POSITION_IDS: &str = "position_ids";
/// The fill-mask head's positions input, int32 `(1, K)`: the token positions whose logits the
/// function computes (unused slots repeat position 0; their rows are ignored).
pub const MASK_POSITIONS: &str = "mask_positions";
/// Positions per call of a fill-mask function unless the conversion says otherwise.
pub const DEFAULT_MASK_SLOTS: usize = 8;

/// The head kinds a converted model can end in. Names: `mlm`, `sequence-classification`,
/// `token-classification`, `embedding`, `hidden` (and the aliases below).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[strum(parse_err_ty = String, parse_err_fn = unknown_head)]
pub enum HeadKind {
    /// Masked-LM logits per token.
    #[strum(to_string = "mlm", serialize = "masked-lm")]
    MaskedLm,
    /// Masked-LM logits at the `mask_positions` only: `(1, V, 1, K)`, the decoder run on K rows
    /// instead of S.
    #[strum(to_string = "fill-mask")]
    FillMask,
    /// Pooled classification logits.
    #[strum(
        to_string = "sequence-classification",
        serialize = "classification",
        serialize = "seq-cls"
    )]
    SequenceClassification,
    /// Per-token classification logits.
    #[strum(
        to_string = "token-classification",
        serialize = "token-cls",
        serialize = "ner"
    )]
    TokenClassification,
    /// Pooled sentence embedding.
    #[strum(to_string = "embedding")]
    Embedding,
    /// Last hidden state.
    #[strum(to_string = "hidden", serialize = "last-hidden-state")]
    Hidden,
}

fn unknown_head(s: &str) -> String {
    use strum::VariantNames;
    format!(
        "unknown head {s:?}; expected one of {}",
        HeadKind::VARIANTS.join(", ")
    )
}

impl HeadKind {
    /// All heads.
    pub const ALL: [HeadKind; 6] = [
        HeadKind::MaskedLm,
        HeadKind::FillMask,
        HeadKind::SequenceClassification,
        HeadKind::TokenClassification,
        HeadKind::Embedding,
        HeadKind::Hidden,
    ];

    /// Command-line / metadata name.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The output's name in the model contract.
    pub fn output_name(self) -> &'static str {
        match self {
            HeadKind::Embedding => "embedding",
            HeadKind::Hidden => "hidden_states",
            _ => "logits",
        }
    }

    /// Whether the output is pooled over the sequence.
    pub fn pooled(self) -> bool {
        matches!(self, HeadKind::SequenceClassification | HeadKind::Embedding)
    }
}

/// Errors building inputs or reading outputs.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// More tokens than the model's sequence length.
    #[error("{tokens} tokens do not fit the model's sequence length {seq_len}; shorten the text or convert with a longer --seq")]
    TooLong {
        /// Tokens given.
        tokens: usize,
        /// The model's S.
        seq_len: usize,
    },
    /// One text of a batch has more tokens than the longest length.
    #[error("text {index} has {tokens} tokens, more than the model's longest sequence length {seq_len}; shorten it, load the model with truncation, or convert with a longer --seq")]
    TextTooLong {
        /// Its index in the batch.
        index: usize,
        /// Its tokens.
        tokens: usize,
        /// The longest S.
        seq_len: usize,
    },
    /// Packed inputs that do not describe texts one after another.
    #[error("packed inputs: {0}")]
    Segments(String),
    /// Inputs whose length is none of the model's (a multifunction model's length buckets).
    #[error("`input_ids` has shape {shape:?}, but the model's lengths are {lengths:?}: pass (1, S) for one of them (run_ids and the text helpers pad to the right one)")]
    NoSuchLength {
        /// The shape given (`None`: no `input_ids`).
        shape: Option<Vec<usize>>,
        /// The lengths the model has functions for.
        lengths: Vec<usize>,
    },
    /// A fill-mask position outside the sequence.
    #[error(
        "mask_positions[{slot}] = {position} is not a position of the sequence (0..{seq_len})"
    )]
    MaskPosition {
        /// The slot.
        slot: usize,
        /// The position given.
        position: i64,
        /// The sequence length.
        seq_len: usize,
    },
    /// An output is not `(1, C, 1, S)` numbers.
    #[error("output of shape {0:?} is not a (1, C, 1, S) float tensor")]
    NotPerToken(Vec<usize>),
    /// A token id outside the vocabulary: the ANE would read outside the embedding table.
    #[error("input_ids[{position}] = {id} is not a token id of this model (0..{vocab}); tokenize with the model's own tokenizer")]
    TokenId {
        /// Flat position in `input_ids`.
        position: usize,
        /// The id.
        id: i64,
        /// The vocabulary size.
        vocab: usize,
    },
}

/// Check that every `mask_positions` value (if the input is there) is a position of the
/// sequence: `0 ≤ p < S`. Out of range, the fill-mask head's one-hot selection would silently
/// return the logits of nothing.
pub fn check_mask_positions(inputs: &BTreeMap<String, Tensor>) -> Result<(), ContractError> {
    let (Some(p), Some(ids)) = (inputs.get(MASK_POSITIONS), inputs.get(INPUT_IDS)) else {
        return Ok(());
    };
    let s = ids.shape().last().copied().unwrap_or(0);
    let values = p.to_f64_vec().unwrap_or_default();
    match values.iter().position(|&v| !(v >= 0.0 && v < s as f64)) {
        Some(i) => Err(ContractError::MaskPosition {
            slot: i,
            position: values[i] as i64,
            seq_len: s,
        }),
        None => Ok(()),
    }
}

/// Check that every `input_ids` value is a token id of a `vocab`-sized model (negative ids
/// included: MIL's gather would wrap them, the ANE reads outside the table).
pub fn check_token_ids(
    inputs: &BTreeMap<String, Tensor>,
    vocab: usize,
) -> Result<(), ContractError> {
    let Some(t) = inputs.get(INPUT_IDS) else {
        return Ok(());
    };
    let Some(values) = t.to_f64_vec() else {
        return Ok(());
    };
    match values.iter().position(|&v| !(v >= 0.0 && v < vocab as f64)) {
        Some(position) => Err(ContractError::TokenId {
            position,
            id: values[position] as i64,
            vocab,
        }),
        None => Ok(()),
    }
}

/// `input_ids` (right-padded with `pad_id`) and `attention_mask` for one sequence of a model
/// converted at `seq_len`.
pub fn encoder_inputs(
    ids: &[i32],
    seq_len: usize,
    pad_id: i32,
) -> Result<BTreeMap<String, Tensor>, ContractError> {
    if ids.len() > seq_len {
        return Err(ContractError::TooLong {
            tokens: ids.len(),
            seq_len,
        });
    }
    let mut padded = ids.to_vec();
    padded.resize(seq_len, pad_id);
    let mut mask = vec![1i32; ids.len()];
    mask.resize(seq_len, 0);
    let mut m = BTreeMap::new();
    let t = |v| Tensor::i32(vec![1, seq_len], v).expect("length matches the shape");
    m.insert(INPUT_IDS.to_string(), t(padded));
    m.insert(ATTENTION_MASK.to_string(), t(mask));
    Ok(m)
}

/// One text's inputs for a function of length `seq_len` ([`encoder_inputs`]) and, for a
/// fill-mask function of `mask_slots` (K) positions, its first min(len, K) positions (unused slots
/// 0); with the number of rows the head answers for it.
pub fn one_text_inputs(
    ids: &[i32],
    seq_len: usize,
    pad_id: i32,
    mask_slots: Option<usize>,
) -> Result<(BTreeMap<String, Tensor>, usize), ContractError> {
    let mut inputs = encoder_inputs(ids, seq_len, pad_id)?;
    let mut rows = ids.len();
    if let Some(k) = mask_slots {
        rows = rows.min(k);
        let mut p: Vec<i32> = (0..rows as i32).collect();
        p.resize(k, 0);
        let t = Tensor::i32(vec![1, k], p).expect("length matches the shape");
        inputs.insert(MASK_POSITIONS.to_string(), t);
    }
    Ok((inputs, rows))
}

/// A head's answer for one text from its output `t`: the pooled row (`pooled`), or the first
/// `rows` token vectors.
pub fn output_rows(t: &Tensor, pooled: bool, rows: usize) -> Result<Vec<Vec<f32>>, ContractError> {
    if pooled {
        let v = t
            .as_f32()
            .ok_or_else(|| ContractError::NotPerToken(t.shape().to_vec()))?;
        Ok(vec![v.to_vec()])
    } else {
        token_vectors(t, rows)
    }
}

/// The first `len` token vectors of a `(1, C, 1, S)` output (C values each).
pub fn token_vectors(t: &Tensor, len: usize) -> Result<Vec<Vec<f32>>, ContractError> {
    let shape = t.shape();
    let bad = || ContractError::NotPerToken(shape.to_vec());
    if shape.len() != 4 || shape[0] != 1 || shape[2] != 1 || len > shape[3] {
        return Err(bad());
    }
    let (c, s) = (shape[1], shape[3]);
    let v = t.as_f32().ok_or_else(bad)?;
    Ok((0..len)
        .map(|i| (0..c).map(|ch| v[ch * s + i]).collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_and_token_vectors() {
        let m = encoder_inputs(&[5, 6, 7], 4, 0).unwrap();
        assert_eq!(m[INPUT_IDS].as_i32().unwrap(), &[5, 6, 7, 0]);
        assert_eq!(m[ATTENTION_MASK].as_i32().unwrap(), &[1, 1, 1, 0]);
        assert!(encoder_inputs(&[1; 5], 4, 0)
            .unwrap_err()
            .to_string()
            .contains("5 tokens"));
        // (1, 2, 1, 3): channel-major.
        let t = Tensor::f32(vec![1, 2, 1, 3], vec![0., 1., 2., 10., 11., 12.]).unwrap();
        assert_eq!(
            token_vectors(&t, 2).unwrap(),
            vec![vec![0., 10.], vec![1., 11.]]
        );
        assert!(token_vectors(&t, 4).is_err());
    }
}
