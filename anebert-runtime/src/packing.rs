//! Packing several texts into one call of a packed function (docs/design.md §2): which texts go
//! together (first-fit decreasing by length), the inputs of one call, and the checks of raw
//! `segment_ids` / `position_ids`.

use crate::contract::{ContractError, ATTENTION_MASK, INPUT_IDS, POSITION_IDS, SEGMENT_IDS};
use crate::Tensor;
use std::collections::BTreeMap;

/// One call: the indices of the texts it holds, in slot order (slot j = segment j + 1), and their
/// total tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pack {
    /// Input indices, slot order.
    pub texts: Vec<usize>,
    /// Tokens of all its texts.
    pub tokens: usize,
}

/// Group texts of `lens` tokens into calls of at most `seq_len` tokens and `max_segments` texts:
/// first-fit decreasing (longest first into the first call with room), so calls are few and full.
/// A text longer than `seq_len` is an error naming it (truncate it first, or use a longer length).
pub fn plan(
    lens: &[usize],
    seq_len: usize,
    max_segments: usize,
) -> Result<Vec<Pack>, ContractError> {
    if let Some((i, &n)) = lens.iter().enumerate().find(|(_, &n)| n > seq_len) {
        return Err(ContractError::TextTooLong {
            index: i,
            tokens: n,
            seq_len,
        });
    }
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    let mut packs: Vec<Pack> = Vec::new();
    for i in order {
        match packs
            .iter_mut()
            .find(|p| p.texts.len() < max_segments.max(1) && p.tokens + lens[i] <= seq_len)
        {
            Some(p) => {
                p.texts.push(i);
                p.tokens += lens[i];
            }
            None => packs.push(Pack {
                texts: vec![i],
                tokens: lens[i],
            }),
        }
    }
    Ok(packs)
}

/// The inputs of one packed call at `seq_len`: `input_ids` (the texts back to back, then
/// `pad_id`), `segment_ids` (j + 1 for text j, 0 for padding), `position_ids` (0.. per text, 0 on
/// padding). Returns them with each text's first token offset.
pub fn inputs(
    texts: &[&[i32]],
    seq_len: usize,
    pad_id: i32,
) -> Result<(BTreeMap<String, Tensor>, Vec<usize>), ContractError> {
    let total: usize = texts.iter().map(|t| t.len()).sum();
    if total > seq_len {
        return Err(ContractError::TooLong {
            tokens: total,
            seq_len,
        });
    }
    let (mut ids, mut seg, mut pos, mut offsets) = (
        Vec::with_capacity(seq_len),
        Vec::with_capacity(seq_len),
        Vec::with_capacity(seq_len),
        Vec::with_capacity(texts.len()),
    );
    for (j, t) in texts.iter().enumerate() {
        offsets.push(ids.len());
        ids.extend_from_slice(t);
        seg.extend(std::iter::repeat_n(j as i32 + 1, t.len()));
        pos.extend(0..t.len() as i32);
    }
    ids.resize(seq_len, pad_id);
    seg.resize(seq_len, 0);
    pos.resize(seq_len, 0);
    let t = |v| Tensor::i32(vec![1, seq_len], v).expect("length matches the shape");
    let mut m = BTreeMap::new();
    m.insert(INPUT_IDS.to_string(), t(ids));
    m.insert(SEGMENT_IDS.to_string(), t(seg));
    m.insert(POSITION_IDS.to_string(), t(pos));
    Ok((m, offsets))
}

/// Unpacked-style inputs (`input_ids`, `attention_mask`: one text, tokens first, then padding)
/// as a packed function's: the text is segment 1 at positions 0..n. So every caller written for
/// unpacked models (typed wrappers, `encoder_inputs`) runs a packed model unchanged.
pub fn from_attention_mask(
    inputs: &BTreeMap<String, Tensor>,
) -> Result<BTreeMap<String, Tensor>, ContractError> {
    let bad = |detail: String| ContractError::Segments(detail);
    let mask = inputs
        .get(ATTENTION_MASK)
        .and_then(|t| t.as_i32())
        .ok_or_else(|| bad("a packed model needs `segment_ids` and `position_ids`, or an int32 `attention_mask` for one text".into()))?;
    let n = mask.iter().take_while(|&&m| m == 1).count();
    if let Some(i) = mask[n..].iter().position(|&m| m != 0) {
        return Err(bad(format!(
            "attention_mask[{}] = {}: a packed model reads `attention_mask` as one text (1s, then 0s for padding); pass `segment_ids` and `position_ids` to run several",
            n + i,
            mask[n + i]
        )));
    }
    let s = mask.len();
    let mut out: BTreeMap<String, Tensor> = inputs
        .iter()
        .filter(|(k, _)| k.as_str() != ATTENTION_MASK)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let t = |v| Tensor::i32(vec![1, s], v).expect("length matches the shape");
    out.insert(SEGMENT_IDS.to_string(), t(mask.to_vec()));
    let mut pos: Vec<i32> = (0..n as i32).collect();
    pos.resize(s, 0);
    out.insert(POSITION_IDS.to_string(), t(pos));
    Ok(out)
}

/// A packed pooled head's answer `(1, C, 1, T)` read as one text's (segment 1): its column,
/// `(1, C)` — what the unpacked function answers.
pub fn first_text(t: &Tensor) -> Result<Tensor, ContractError> {
    let col = crate::contract::token_vectors(t, 1)?.swap_remove(0);
    let c = col.len();
    Ok(
        Tensor::new(t.dtype(), vec![1, c], crate::tensor::TensorData::Float(col))
            .expect("C values for (1, C)"),
    )
}

/// Check raw packed inputs (when `segment_ids` is there): segment ids in `0..=max_segments`, each
/// text one contiguous run, positions in `0..S` — the graph would otherwise mix texts or read no
/// position row, silently.
pub fn check(inputs: &BTreeMap<String, Tensor>, max_segments: usize) -> Result<(), ContractError> {
    let Some(seg) = inputs.get(SEGMENT_IDS) else {
        return Ok(());
    };
    let bad = |detail: String| Err(ContractError::Segments(detail));
    let Some(seg) = seg.as_i32() else {
        return bad("`segment_ids` must be int32".into());
    };
    let s = seg.len();
    let mut seen = vec![false; max_segments + 1];
    for (i, &v) in seg.iter().enumerate() {
        if v < 0 || v as usize > max_segments {
            return bad(format!(
                "segment_ids[{i}] = {v} is outside 0..={max_segments} (0 = padding, 1..={max_segments} = a text)"
            ));
        }
        let new_run = i == 0 || seg[i - 1] != v;
        if v > 0 && new_run {
            if seen[v as usize] {
                return bad(format!(
                    "segment {v} is not contiguous (it starts again at position {i}); give each text one run of tokens"
                ));
            }
            seen[v as usize] = true;
        }
    }
    if let Some(pos) = inputs.get(POSITION_IDS) {
        let Some(pos) = pos.as_i32() else {
            return bad("`position_ids` must be int32".into());
        };
        if let Some((i, &p)) = pos
            .iter()
            .enumerate()
            .find(|(_, &p)| p < 0 || p as usize >= s)
        {
            return bad(format!(
                "position_ids[{i}] = {p} is outside 0..{s} (positions restart at 0 per text)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_decreasing() {
        let p = plan(&[3, 9, 4, 2, 8], 12, 16).unwrap();
        assert_eq!(p.iter().map(|p| p.tokens).sum::<usize>(), 26);
        assert!(p.iter().all(|p| p.tokens <= 12));
        // 9, 8, 4, 3, 2: 9 + 3 and 8 + 4 fill two calls, 2 opens a third.
        assert_eq!(
            p.iter().map(|p| p.texts.clone()).collect::<Vec<_>>(),
            [vec![1, 0], vec![4, 2], vec![3]]
        );
        let slots = plan(&[1; 40], 100, 16).unwrap();
        assert_eq!(slots.len(), 3);
        assert!(slots.iter().all(|p| p.texts.len() <= 16));
        let e = plan(&[3, 13], 12, 16).unwrap_err().to_string();
        assert!(
            e.contains("text 1") && e.contains("13 tokens") && e.contains("12"),
            "{e}"
        );
    }

    #[test]
    fn inputs_and_checks() {
        let (m, off) = inputs(&[&[5, 6, 7], &[8, 9]], 8, 0).unwrap();
        assert_eq!(off, vec![0, 3]);
        assert_eq!(m[INPUT_IDS].as_i32().unwrap(), &[5, 6, 7, 8, 9, 0, 0, 0]);
        assert_eq!(m[SEGMENT_IDS].as_i32().unwrap(), &[1, 1, 1, 2, 2, 0, 0, 0]);
        assert_eq!(m[POSITION_IDS].as_i32().unwrap(), &[0, 1, 2, 0, 1, 0, 0, 0]);
        assert!(check(&m, 2).is_ok());
        assert!(check(&m, 1)
            .unwrap_err()
            .to_string()
            .contains("outside 0..=1"));
        let mut m2 = m.clone();
        m2.insert(
            SEGMENT_IDS.into(),
            Tensor::i32(vec![1, 8], vec![1, 1, 2, 1, 0, 0, 0, 0]).unwrap(),
        );
        assert!(check(&m2, 4)
            .unwrap_err()
            .to_string()
            .contains("not contiguous"));
        let mut m3 = m;
        m3.insert(
            POSITION_IDS.into(),
            Tensor::i32(vec![1, 8], vec![0, 1, 2, 8, 0, 0, 0, 0]).unwrap(),
        );
        assert!(check(&m3, 4)
            .unwrap_err()
            .to_string()
            .contains("position_ids[3] = 8"));
        assert!(inputs(&[&[1; 5], &[1; 4]], 8, 0).is_err());
        // One text through an attention mask.
        let plain = crate::contract::encoder_inputs(&[5, 6, 7], 6, 0).unwrap();
        let p = from_attention_mask(&plain).unwrap();
        assert_eq!(p[SEGMENT_IDS].as_i32().unwrap(), &[1, 1, 1, 0, 0, 0]);
        assert_eq!(p[POSITION_IDS].as_i32().unwrap(), &[0, 1, 2, 0, 0, 0]);
        assert!(!p.contains_key(ATTENTION_MASK));
        let mut holes = plain;
        holes.insert(
            ATTENTION_MASK.into(),
            Tensor::i32(vec![1, 6], vec![1, 0, 1, 0, 0, 0]).unwrap(),
        );
        let e = from_attention_mask(&holes).unwrap_err().to_string();
        assert!(e.contains("attention_mask[2] = 1"), "{e}");
    }
}
