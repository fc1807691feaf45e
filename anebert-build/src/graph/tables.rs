//! The length-dependent constants of a function: the padding and sliding-window masks and the
//! RoPE tables (each made once per function, on first use), and the fill-mask head's position
//! selection.

use super::{Emitter, MASK_VALUE};
use crate::mil::{InputShape, MilError, Var};
use anebert_runtime::{DType, Tensor};

impl Emitter<'_, '_> {
    /// The key mask every layer adds: `(1, S, 1, 1)`, −1e4 on padding; packed, the
    /// `(1, S, 1, S)` segment mask.
    pub(super) fn pad_mask(&mut self) -> Result<Var, MilError> {
        if let Some(m) = &self.pad_mask {
            return Ok(m.clone());
        }
        if self.packed.is_some() {
            let m = self.segment_mask()?;
            self.pad_mask = Some(m.clone());
            return Ok(m);
        }
        // (mask − 1) · 1e4 → 0 for tokens, −1e4 for padding; keys on axis 1.
        let one = self.scalar("one", 1.0)?;
        let big = self.scalar("mask_scale", -MASK_VALUE)?;
        let m = self.mask_f.clone();
        let m = self.f.binary("sub", "pad_mask_sub", &m, &one)?;
        let m = self.f.binary("mul", "pad_mask_mul", &m, &big)?;
        let m = self
            .f
            .reshape("pad_mask", &m, &[1, self.opts.seq_len as i32, 1, 1])?;
        self.pad_mask = Some(m.clone());
        Ok(m)
    }

    pub(super) fn attention_mask(&mut self, window: Option<usize>) -> Result<Var, MilError> {
        let pad = self.pad_mask()?;
        let Some(w) = window else { return Ok(pad) };
        if let Some(m) = self.masks.get(&w) {
            return Ok(m.clone());
        }
        let s = self.opts.seq_len;
        let mut band = vec![0f32; s * s];
        for k in 0..s {
            for q in 0..s {
                if k.abs_diff(q) > w {
                    band[k * s + q] = MASK_VALUE;
                }
            }
        }
        let bv = self.weight(&format!("band_{w}"), vec![1, s, 1, s], band)?;
        let m = self
            .f
            .binary("add", &format!("local_mask_{w}"), &bv, &pad)?;
        self.masks.insert(w, m.clone());
        Ok(m)
    }

    pub(super) fn rope_tables(&mut self, theta: f64, heads: usize) -> Result<(Var, Var), MilError> {
        if let Some(v) = self.rope.get(&theta.to_bits()) {
            return Ok(v.clone());
        }
        let (hd, s) = (self.hidden / heads, self.opts.seq_len);
        let half = hd / 2;
        let mut cos = vec![0f32; hd * s];
        let mut sin = vec![0f32; hd * s];
        for c in 0..hd {
            let j = c % half;
            // HF computes inv_freq and the angles in f32; f64 here differs by < 1e-5 rad at S = 8192.
            let inv = 1.0 / theta.powf((2 * j) as f64 / hd as f64);
            for p in 0..s {
                let a = p as f64 * inv;
                cos[c * s + p] = a.cos() as f32;
                // rotate_half's sign: its first half is negated.
                sin[c * s + p] = if c < half { -a.sin() } else { a.sin() } as f32;
            }
        }
        let name = format!("rope_{}", theta as u64);
        let cv = self.weight(&format!("{name}_cos"), vec![1, 1, hd, s], cos)?;
        let sv = self.weight(&format!("{name}_sin"), vec![1, 1, hd, s], sin)?;
        // Packed: each token's row by its position id.
        let (cv, sv) = if self.packed.is_some() {
            let mut pick = |v: &Var, n: &str| -> Result<Var, MilError> {
                let t = self
                    .f
                    .reshape(&format!("{n}_columns"), v, &[1, hd as i32, 1, s as i32])?;
                let t = self.at_positions(&format!("{n}_per_token"), &t)?;
                self.f
                    .reshape(&format!("{n}_tokens"), &t, &[1, 1, hd as i32, s as i32])
            };
            (
                pick(&cv, &format!("{name}_cos"))?,
                pick(&sv, &format!("{name}_sin"))?,
            )
        } else {
            (cv, sv)
        };
        self.rope.insert(theta.to_bits(), (cv.clone(), sv.clone()));
        Ok((cv, sv))
    }
    /// The fill-mask head's input `mask_positions` (int32 `(1, K)`) selects K of the S token
    /// columns of `x` `(1, d, 1, S)` → `(1, d, 1, K)`, so the decoder runs on K rows. A one-hot
    /// `(1, S, 1, K)` matrix product, not a `gather`: Core ML runs gather off the ANE (a CPU
    /// round trip mid-graph), while this is the attention's own einsum form; with one 1 per
    /// column it copies the selected values exactly.
    pub(super) fn select_positions(&mut self, hint: &str, x: &Var) -> Result<Var, MilError> {
        let onehot = self.position_onehot()?;
        self.f.einsum(hint, "bchk,bkhq->bchq", x, &onehot)
    }

    /// The `mask_positions` input (int32 `(1, K)`, declared on first use) as a `(1, 1, 1, K)` row.
    pub(super) fn mask_positions(&mut self) -> Result<Var, MilError> {
        if let Some(v) = &self.positions {
            return Ok(v.clone());
        }
        let k = self.opts.mask_slots;
        let pos = self.f.input(
            anebert_runtime::contract::MASK_POSITIONS,
            DType::I32,
            InputShape::Fixed(vec![1, k]),
        )?;
        let pos = self
            .f
            .reshape("mask_positions_row", &pos, &[1, 1, 1, k as i32])?;
        self.positions = Some(pos.clone());
        Ok(pos)
    }

    /// The `(1, S, 1, K)` one-hot of the `mask_positions` input.
    fn position_onehot(&mut self) -> Result<Var, MilError> {
        if let Some(v) = &self.onehot {
            return Ok(v.clone());
        }
        let pos = self.mask_positions()?;
        let range = self.token_range()?;
        let hit = self.f.binary("equal", "mask_onehot_bool", &range, &pos)?;
        let onehot = self.f.cast("mask_onehot", &hit, self.opts.dtype)?;
        self.onehot = Some(onehot.clone());
        Ok(onehot)
    }

    /// The int32 `(1, S, 1, 1)` constant 0..S (made once per function).
    pub(super) fn token_range(&mut self) -> Result<Var, MilError> {
        if let Some(v) = &self.range {
            return Ok(v.clone());
        }
        let s = self.opts.seq_len;
        let range = Tensor::i32(vec![1, s, 1, 1], (0..s as i32).collect())?;
        let range = self.f.constant("token_positions", range)?;
        self.range = Some(range.clone());
        Ok(range)
    }
}
