//! The attention core of a layer, in tiles of bounded size (coreml-facts-wave2 §4).
//!
//! Every tile is the split-einsum chain the ANE runs and the CPU backend fuses: per head
//! `einsum(bkhc,bchq->bkhq)` of Kᵀ and Q, `add` of the mask, `softmax` over keys (axis 1),
//! `einsum(bchk,bkhq->bchq)` of V and the weights. The layout of the tiles depends on the size:
//! - **dense**: one `(1, S, 1, S)` score tensor per head, when it fits [`SCORE_TILE_BYTES`]
//!   (S ≤ 1448); sliding-window layers take a band-mask constant of that size while their band
//!   is over a quarter of the keys (ModernBERT: S < 768) or the function is packed;
//! - **banded** (the other sliding-window layers): query blocks of B tokens on the H axis,
//!   `(1, d, S/B, B)`, against their own key window `(1, B + 2w, S/B, d)` cut from K by shifted
//!   slices; the mask is a `(B + 2w, B)` band constant plus the key padding; FLOPs and memory grow
//!   linearly with S;
//! - **chunked** (global layers beyond that): per head, query chunks against all keys, each score
//!   tile `(1, S, 1, C)` at most [`SCORE_TILE_BYTES`].

use super::{Emitter, MASK_VALUE};
use crate::mil::{MilError, Var};
use anebert_runtime::op_table::dims::{
    ATTENTION_OUTPUT as OUTPUT_EQ, ATTENTION_SCORES as SCORES_EQ,
};
use anebert_runtime::Tensor;

/// Largest score tensor of one head and one tile, in bytes of fp16: 4 MiB (S_k × S_q ≤ 2²¹). The
/// ANE keeps about 2 MB of operands on chip and streams larger ones from DRAM; 4 MiB keeps the
/// dense form up to S = 1448 and halves the op count of 8192-token global layers against 2 MiB
/// (32 query chunks of 256 per head instead of 64 of 128).
pub const SCORE_TILE_BYTES: usize = 4 << 20;

/// Largest query block of banded attention (a divisor of the half-window, so the key window is
/// whole blocks): 64 for ModernBERT's window of 128 (±64).
const MAX_BAND_BLOCK: usize = 128;

/// A sliding-window layer whose scores fit one tile is still banded when its blocks' key windows
/// hold at most 1/`BAND_SHARE` of the keys: the dense form's S × S scores would be four or more
/// times the work (at S = 1024 ModernBERT's local layers compute 192 of 1024 keys per query).
const BAND_SHARE: usize = 4;

/// Smallest query block banded by choice: a block is the last axis of its tiles, and below 32
/// the ANE pads each row to 64 bytes (coreml-facts §9, rule 2), so a narrow window (the in-repo test
/// fixture's ±8) keeps the dense form until its scores must be tiled.
const BAND_MIN_BLOCK: usize = 32;

/// How one layer's attention is cut into tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tiling {
    /// One score tensor per head.
    Dense,
    /// Blocks of `block` queries against their `block + 2·window` keys, `group` blocks per tile.
    Banded {
        /// Queries per block.
        block: usize,
        /// Blocks per tile.
        group: usize,
    },
    /// Chunks of `chunk` queries against all keys.
    Chunked {
        /// Queries per chunk.
        chunk: usize,
    },
}

/// The tiling of attention of `s_q` queries over `s_k` keys with the half-window `window`
/// (queries and keys the same tokens when `s_q == s_k`), score tiles at most `tile_bytes` of
/// fp16.
///
/// A sliding-window layer is banded when its scores do not fit one tile, and also when its band
/// holds at most a quarter of the keys in blocks of 32 or more (`BAND_SHARE`,
/// `BAND_MIN_BLOCK`; ModernBERT's ±64 window from S = 768 on), unless `packed`: a packed
/// function's segment mask has only the dense form.
pub fn tiling(
    s_k: usize,
    s_q: usize,
    window: Option<usize>,
    tile_bytes: usize,
    packed: bool,
) -> Tiling {
    let elems = tile_bytes / 2;
    let dense = s_k.saturating_mul(s_q) <= elems;
    match window {
        // A window that excludes some key: only its band is computed.
        Some(w) if s_k == s_q && w + 1 < s_k => {
            let block = (1..=MAX_BAND_BLOCK.min(w.max(1)))
                .rev()
                .find(|b| w % b == 0)
                .unwrap_or(1);
            let keys = block + 2 * w;
            if dense && (packed || block < BAND_MIN_BLOCK || keys * BAND_SHARE > s_k) {
                return Tiling::Dense;
            }
            let group = (elems / (keys * block)).max(1);
            Tiling::Banded { block, group }
        }
        _ if dense => Tiling::Dense,
        _ => Tiling::Chunked {
            chunk: (elems / s_k).max(1),
        },
    }
}

impl Emitter<'_, '_> {
    /// Attention of `q` `(1, D, 1, S_q)` over `k`, `v` `(1, D, 1, S)` with `heads` heads;
    /// `(1, D, 1, S_q)`. The queries are the S tokens, or the fill-mask head's K selected ones.
    pub(super) fn attend(
        &mut self,
        p: &str,
        q: &Var,
        k: &Var,
        v: &Var,
        heads: usize,
        window: Option<usize>,
    ) -> Result<Var, MilError> {
        let (s, s_q) = (self.opts.seq_len, dim(q, 3)?);
        match tiling(
            s,
            s_q,
            window,
            self.opts.score_tile,
            self.opts.packing.is_some(),
        ) {
            Tiling::Banded { block, group } => {
                let w = window.unwrap_or(0);
                self.banded(p, q, k, v, heads, w, block, group)
            }
            t => {
                let mask = if let Some(w) = window.filter(|&w| w + 1 < s) {
                    if self.selected {
                        self.selected_band_mask(w)?
                    } else {
                        self.attention_mask(Some(w))?
                    }
                } else {
                    self.pad_mask()?
                };
                let chunk = match t {
                    Tiling::Chunked { chunk } => chunk,
                    _ => s_q,
                };
                self.chunked(p, q, k, v, heads, &mask, chunk)
            }
        }
    }

    /// Per head, query chunks of `chunk` (all of them at once when `chunk ≥ S_q`: the dense form)
    /// against all keys; `mask` is `(1, S, 1, 1)` or `(1, S, 1, S_q)`.
    #[allow(clippy::too_many_arguments)]
    fn chunked(
        &mut self,
        p: &str,
        q: &Var,
        k: &Var,
        v: &Var,
        heads: usize,
        mask: &Var,
        chunk: usize,
    ) -> Result<Var, MilError> {
        let (d, s_q) = (dim(q, 1)?, dim(q, 3)?);
        let hd = d / heads;
        let kt = self.f.transpose(&format!("{p}_k_t"), k, &[0, 3, 2, 1])?;
        let (qs, ks, vs) = self.split_heads(p, q, &kt, v, heads, hd)?;
        // The chunks' query ranges and masks, made once for every head.
        let per_query = dim(mask, 3)? != 1;
        let mut chunks = Vec::new();
        for c0 in (0..s_q).step_by(chunk.max(1)) {
            let c1 = (c0 + chunk).min(s_q);
            let mc = if per_query && c1 - c0 < s_q {
                let s = dim(mask, 1)? as i32;
                self.f.slice(
                    &format!("{p}_c{}_mask", c0 / chunk),
                    mask,
                    &[0, 0, 0, c0 as i32],
                    &[1, s, 1, c1 as i32],
                )?
            } else {
                mask.clone()
            };
            chunks.push((c0, c1, mc));
        }
        let mut outs = Vec::with_capacity(heads);
        for i in 0..heads {
            let hp = format!("{p}_h{i}");
            let mut parts = Vec::new();
            for (c0, c1, mc) in &chunks {
                let (c0, c1) = (*c0, *c1);
                let (qc, cp) = if c1 - c0 == s_q {
                    (qs[i].clone(), hp.clone())
                } else {
                    let cp = format!("{hp}_c{}", c0 / chunk);
                    let end = [1, hd as i32, 1, c1 as i32];
                    let qc =
                        self.f
                            .slice(&format!("{cp}_q"), &qs[i], &[0, 0, 0, c0 as i32], &end)?;
                    (qc, cp)
                };
                parts.push(self.tile(&cp, &ks[i], &qc, mc, &vs[i])?);
            }
            outs.push(if parts.len() == 1 {
                parts.pop().expect("one")
            } else {
                self.f.concat(&format!("{hp}_chunks"), &parts, 3, false)?
            });
        }
        self.concat_heads(p, outs, 1)
    }

    /// Sliding-window attention by query blocks (see the module doc).
    #[allow(clippy::too_many_arguments)]
    fn banded(
        &mut self,
        p: &str,
        q: &Var,
        k: &Var,
        v: &Var,
        heads: usize,
        w: usize,
        block: usize,
        group: usize,
    ) -> Result<Var, MilError> {
        let (d, s) = (dim(q, 1)?, self.opts.seq_len);
        let hd = d / heads;
        let blocks = s.div_ceil(block);
        let sp = blocks * block;
        // Queries padded to whole blocks; keys and values by w on the left and w + (sp − s) on
        // the right, so block b's keys are padded columns [b·B, b·B + B + 2w).
        let q = self.pad_columns(&format!("{p}_q_pad"), q, 0, sp - s)?;
        let k = self.pad_columns(&format!("{p}_k_pad"), k, w, w + sp - s)?;
        let v = self.pad_columns(&format!("{p}_v_pad"), v, w, w + sp - s)?;
        let mut tiles = Vec::new();
        for b0 in (0..blocks).step_by(group) {
            let n = group.min(blocks - b0);
            let gp = if n == blocks {
                p.to_string()
            } else {
                format!("{p}_g{}", b0 / group)
            };
            let qg = self.f.slice(
                &format!("{gp}_q_blocks"),
                &q,
                &[0, 0, 0, (b0 * block) as i32],
                &[1, d as i32, 1, ((b0 + n) * block) as i32],
            )?;
            let qg = self.f.reshape(
                &format!("{gp}_q_blocks"),
                &qg,
                &[1, d as i32, n as i32, block as i32],
            )?;
            let kb = self.band(&format!("{gp}_k_band"), &k, b0, n, block, w)?;
            let vb = self.band(&format!("{gp}_v_band"), &v, b0, n, block, w)?;
            let kt = self
                .f
                .transpose(&format!("{gp}_k_band_t"), &kb, &[0, 3, 2, 1])?;
            let (qs, ks, vs) = self.split_heads(&gp, &qg, &kt, &vb, heads, hd)?;
            let mask = self.band_mask(w, b0, n, block)?;
            let mut outs = Vec::with_capacity(heads);
            for i in 0..heads {
                outs.push(self.tile(&format!("{gp}_h{i}"), &ks[i], &qs[i], &mask, &vs[i])?);
            }
            let o = self.concat_heads(&gp, outs, 1)?;
            tiles.push(self.f.reshape(
                &format!("{gp}_unblocked"),
                &o,
                &[1, d as i32, 1, (n * block) as i32],
            )?);
        }
        let o = if tiles.len() == 1 {
            tiles.pop().expect("one")
        } else {
            self.f.concat(&format!("{p}_groups"), &tiles, 3, false)?
        };
        if sp == s {
            Ok(o)
        } else {
            self.f.slice(
                &format!("{p}_unpadded"),
                &o,
                &[0, 0, 0, 0],
                &[1, d as i32, 1, s as i32],
            )
        }
    }

    /// The key windows of blocks `b0..b0 + n` from the padded `(1, C, 1, S + 2w)` tensor `x`:
    /// `(1, C, n, B + 2w)`, one shifted slice per block of the window, concatenated.
    fn band(
        &mut self,
        hint: &str,
        x: &Var,
        b0: usize,
        n: usize,
        block: usize,
        w: usize,
    ) -> Result<Var, MilError> {
        let c = dim(x, 1)? as i32;
        let mut parts = Vec::new();
        for j in 0..(block + 2 * w) / block {
            let a = (b0 + j) * block;
            let sl = self.f.slice(
                &format!("{hint}{j}"),
                x,
                &[0, 0, 0, a as i32],
                &[1, c, 1, (a + n * block) as i32],
            )?;
            parts.push(self.f.reshape(
                &format!("{hint}{j}_blocks"),
                &sl,
                &[1, c, n as i32, block as i32],
            )?);
        }
        if parts.len() == 1 {
            return Ok(parts.pop().expect("one"));
        }
        self.f.concat(hint, &parts, 3, false)
    }

    /// The mask of blocks `b0..b0 + n`: `(1, B + 2w, n, B)`, the band constant (key j of the
    /// window sees query i iff |j − w − i| ≤ w) plus the windows of the key-padding row (−1e4 on
    /// padding and outside the sequence). Made once per function and tile.
    fn band_mask(&mut self, w: usize, b0: usize, n: usize, block: usize) -> Result<Var, MilError> {
        if let Some(m) = self.band_masks.get(&(w, b0)) {
            return Ok(m.clone());
        }
        let kw = block + 2 * w;
        let band: Vec<f32> = (0..kw)
            .flat_map(|j| (0..block).map(move |i| (j, i)))
            .map(|(j, i)| {
                if (j + i).abs_diff(w + 2 * i) > w {
                    MASK_VALUE
                } else {
                    0.0
                }
            })
            .collect();
        let band = self.weight(&format!("band_{w}_blocks"), vec![1, kw, 1, block], band)?;
        let s = self.opts.seq_len;
        let sp = s.div_ceil(block) * block;
        let row = self.pad_row()?;
        let row =
            self.pad_columns_with(&format!("key_pad_{w}"), &row, w, w + sp - s, MASK_VALUE)?;
        let win = self.band(&format!("key_pad_{w}_g{b0}"), &row, b0, n, block, w)?;
        let win = self
            .f
            .transpose(&format!("key_pad_{w}_g{b0}_t"), &win, &[0, 3, 2, 1])?;
        let m = self
            .f
            .binary("add", &format!("band_mask_{w}_g{b0}"), &band, &win)?;
        self.band_masks.insert((w, b0), m.clone());
        Ok(m)
    }

    /// `x` `(1, C, 1, L)` with `left` and `right` zero columns.
    fn pad_columns(
        &mut self,
        hint: &str,
        x: &Var,
        left: usize,
        right: usize,
    ) -> Result<Var, MilError> {
        self.pad_columns_with(hint, x, left, right, 0.0)
    }

    /// `x` `(1, C, 1, L)` with `left` and `right` columns of `value` (constants made once per
    /// function and shape).
    fn pad_columns_with(
        &mut self,
        hint: &str,
        x: &Var,
        left: usize,
        right: usize,
        value: f32,
    ) -> Result<Var, MilError> {
        let c = dim(x, 1)?;
        let mut parts = Vec::with_capacity(3);
        for (n, side) in [(left, "left"), (0, ""), (right, "right")] {
            if side.is_empty() {
                parts.push(x.clone());
            } else if n > 0 {
                let key = (c, n, value.to_bits());
                let block = match self.pads.get(&key) {
                    Some(b) => b.clone(),
                    None => {
                        let name = format!("pad_{c}x{n}");
                        let b = self.weight(&name, vec![1, c, 1, n], vec![value; c * n])?;
                        self.pads.insert(key, b.clone());
                        b
                    }
                };
                parts.push(block);
            }
        }
        if parts.len() == 1 {
            return Ok(x.clone());
        }
        self.f.concat(hint, &parts, 3, false)
    }

    /// Queries split by head on axis 1, Kᵀ on axis 3, values on axis 1.
    #[allow(clippy::type_complexity)]
    fn split_heads(
        &mut self,
        p: &str,
        q: &Var,
        kt: &Var,
        v: &Var,
        heads: usize,
        hd: usize,
    ) -> Result<(Vec<Var>, Vec<Var>, Vec<Var>), MilError> {
        if heads == 1 {
            return Ok((vec![q.clone()], vec![kt.clone()], vec![v.clone()]));
        }
        let sizes = vec![hd as i32; heads];
        Ok((
            self.f.split(&format!("{p}_q_heads"), q, 1, &sizes)?,
            self.f.split(&format!("{p}_k_heads"), kt, 3, &sizes)?,
            self.f.split(&format!("{p}_v_heads"), v, 1, &sizes)?,
        ))
    }

    /// One tile: scores, mask, softmax over keys, weighted values.
    fn tile(&mut self, hp: &str, kt: &Var, q: &Var, mask: &Var, v: &Var) -> Result<Var, MilError> {
        let sc = self.f.einsum(&format!("{hp}_scores"), SCORES_EQ, kt, q)?;
        let sc = self.f.binary("add", &format!("{hp}_masked"), &sc, mask)?;
        let w = self.f.softmax(&format!("{hp}_weights"), &sc, 1)?;
        self.f.einsum(&format!("{hp}_out"), OUTPUT_EQ, v, &w)
    }

    fn concat_heads(&mut self, p: &str, mut outs: Vec<Var>, axis: i32) -> Result<Var, MilError> {
        if outs.len() == 1 {
            return Ok(outs.pop().expect("one"));
        }
        self.f.concat(&format!("{p}_heads"), &outs, axis, false)
    }

    /// The key-padding row `(1, 1, 1, S)`: 0 for tokens, −1e4 for padding.
    fn pad_row(&mut self) -> Result<Var, MilError> {
        let pad = self.pad_mask()?;
        let s = self.opts.seq_len as i32;
        self.f.reshape("pad_row", &pad, &[1, 1, 1, s])
    }

    /// The band of the fill-mask head's K selected queries: `(1, S, 1, K)`, −1e4 where
    /// |key − position| > w, plus the key padding. From the int32 positions (exact at any S; no
    /// S × S constant, no position in fp16).
    fn selected_band_mask(&mut self, w: usize) -> Result<Var, MilError> {
        let pos = self.mask_positions()?;
        let range = self.token_range()?;
        let diff = self.f.binary("sub", "selected_offsets", &range, &pos)?;
        let dist = self.f.unary("abs", "selected_distance", &diff)?;
        let lim = self.f.constant("window", Tensor::scalar_i32(w as i32))?;
        let out = self.f.binary("greater", "selected_outside", &dist, &lim)?;
        let out = self.f.cast("selected_outside_f", &out, self.opts.dtype)?;
        let big = self.scalar("selected_mask_value", MASK_VALUE)?;
        let band = self.f.binary("mul", "selected_band", &out, &big)?;
        let pad = self.pad_mask()?;
        self.f.binary("add", "selected_band_mask", &band, &pad)
    }
}

/// Axis `i` of a value with a known shape.
fn dim(v: &Var, i: usize) -> Result<usize, MilError> {
    v.shape()
        .and_then(|s| s.get(i).copied())
        .ok_or_else(|| super::err(format!("`{}` needs a known shape", v.name())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_stay_within_the_bound() {
        const T: usize = SCORE_TILE_BYTES;
        // Dense while the band is over a quarter of the keys (192 of 512), banded from there
        // on (192 of 768) — except packed, whose segment mask is dense only.
        assert_eq!(tiling(512, 512, Some(64), T, false), Tiling::Dense);
        assert_eq!(tiling(767, 767, Some(64), T, false), Tiling::Dense);
        let band = Tiling::Banded {
            block: 64,
            group: 170,
        };
        assert_eq!(tiling(768, 768, Some(64), T, false), band);
        assert_eq!(tiling(1024, 1024, Some(64), T, false), band);
        assert_eq!(tiling(1024, 1024, Some(64), T, true), Tiling::Dense);
        assert_eq!(tiling(1024, 1024, Some(8), T, false), Tiling::Dense);
        assert_eq!(tiling(1024, 1024, None, T, false), Tiling::Dense);
        assert_eq!(tiling(8192, 8, Some(64), T, false), Tiling::Dense);
        assert_eq!(
            tiling(8192, 8192, Some(64), T, false),
            Tiling::Banded {
                block: 64,
                group: 170
            }
        );
        assert_eq!(
            tiling(8192, 8192, None, T, false),
            Tiling::Chunked { chunk: 256 }
        );
        // A window wider than the sequence excludes nothing: global tiling.
        assert_eq!(
            tiling(4096, 4096, Some(5000), T, false),
            Tiling::Chunked { chunk: 512 }
        );
        for (s, w) in [(2048, 64), (8192, 64), (65536, 64), (8192, 100), (3000, 7)] {
            match tiling(s, s, Some(w), T, false) {
                Tiling::Banded { block, group } => {
                    assert_eq!(w % block, 0);
                    assert!((block + 2 * w) * block * group * 2 <= SCORE_TILE_BYTES);
                }
                t => panic!("{s} {w}: {t:?}"),
            }
        }
        let Tiling::Chunked { chunk } = tiling(8192, 8192, None, T, false) else {
            unreachable!()
        };
        assert!(8192 * chunk * 2 <= SCORE_TILE_BYTES);
    }
}
