//! Graph emission: Encoder IR → MIL ops in ANE form (docs/design.md §3).
//!
//! Activations are `(1, C, 1, S)`; every linear layer is a 1×1 `conv`; attention is split-einsum
//! per head with the `(1, S_k, 1, S_q)` score layout and softmax over axis 1; masks are additive
//! −1e4 built in the graph from `attention_mask`; no tensor axis exceeds the ANE limits.

pub mod ane_rules;
mod attention;
mod head;
mod packing;
mod tables;

use crate::compress::{self, Compression};
use crate::ir::*;
use crate::mil::{FunctionBuilder, InputShape, MilError, Var};
use anebert_runtime::contract::{ATTENTION_MASK, INPUT_IDS};
use anebert_runtime::{DType, Tensor};
use faer::Mat;
use std::collections::HashMap;

pub use attention::{tiling, Tiling, SCORE_TILE_BYTES};

/// Largest channel count of one conv or table chunk (ANE lookup/width limit is 16384).
pub const MAX_CHUNK: usize = 16384;
/// Additive mask value for masked-out keys (never −inf on the ANE).
pub const MASK_VALUE: f32 = -1e4;

/// Options for graph emission.
#[derive(Clone, Debug)]
pub struct GraphOptions {
    /// Sequence length S.
    pub seq_len: usize,
    /// Compute and weight dtype (`F16` for the ANE, `F32` for reference packages).
    pub dtype: DType,
    /// Most output channels of one conv / rows of one embedding-table chunk (≤ [`MAX_CHUNK`]).
    pub chunk: usize,
    /// Compression of conv weights with at least [`compress::MIN_ELEMENTS`] elements (the
    /// embedding table, norms and biases stay fp16).
    pub compression: Option<Compression>,
    /// Offer the weights that do not depend on the sequence length (conv weights and biases,
    /// norms, the embedding table) to the program's other functions, and take them from there
    /// when another function made them first: one copy in the weight file, encoded once.
    pub share_weights: bool,
    /// Positions per call of the fill-mask head (K of its `mask_positions` input).
    pub mask_slots: usize,
    /// Largest score tensor of one head and tile, in fp16 bytes ([`SCORE_TILE_BYTES`] by default).
    pub score_tile: usize,
    /// Packed inputs (`segment_ids`, `position_ids`) with this many text slots for pooled heads.
    pub packing: Option<usize>,
    /// LayerNorms as centre + overflow-safe L2 norm instead of the `layer_norm` op.
    pub safe_norm: bool,
}

/// Emits one encoder into a function, piece by piece.
pub struct Emitter<'f, 'a> {
    f: &'f mut FunctionBuilder<'a>,
    opts: GraphOptions,
    hidden: usize,
    ids: Var,
    mask_f: Var,
    pad_mask: Option<Var>,
    masks: HashMap<usize, Var>,
    /// Banded attention's masks, by half-window and first block of the tile.
    band_masks: HashMap<(usize, usize), Var>,
    /// Constant padding columns, by (channels, columns, value bits).
    pads: HashMap<(usize, usize, u32), Var>,
    rope: HashMap<u64, (Var, Var)>,
    /// Embedding table chunks (rows, const), viewed again by a tied decoder.
    table: Vec<(usize, Var)>,
    x: Option<Var>,
    emb_norm: Option<Var>,
    /// A packed function's `segment_ids` and `position_ids` inputs.
    packed: Option<(Var, Var)>,
    /// The `(1, S, 1, S)` one-hot of `position_ids`, once built.
    packed_onehot: Option<Var>,
    /// The int32 `(1, S, 1, 1)` range 0..S, once made.
    range: Option<Var>,
    /// The fill-mask head's `mask_positions` as a `(1, 1, 1, K)` row, once declared.
    positions: Option<Var>,
    /// The fill-mask head's position one-hot, once built.
    onehot: Option<Var>,
    /// Compute the next layer's queries (and everything after its attention) at the
    /// `mask_positions` only: the fill-mask head's last layer.
    select_next: bool,
    /// The stream holds the K selected positions, not all S.
    selected: bool,
    /// Which part of the graph the weights being emitted belong to, in their sharing keys: the
    /// backbone (empty), or a head by name (heads of one kind share; different heads never).
    scope: &'static str,
}

fn err(msg: impl Into<String>) -> MilError {
    MilError::Program(msg.into())
}

impl<'f, 'a> Emitter<'f, 'a> {
    /// Declare the inputs `input_ids` and `attention_mask` (int32 `(1, S)`), or, packed,
    /// `input_ids`, `segment_ids` and `position_ids`.
    pub fn new(
        f: &'f mut FunctionBuilder<'a>,
        opts: GraphOptions,
        hidden: usize,
    ) -> Result<Self, MilError> {
        let s = opts.seq_len;
        let ids = f.input(INPUT_IDS, DType::I32, InputShape::Fixed(vec![1, s]))?;
        let (packed, mask_f) = if opts.packing.is_some() {
            let (seg, pos, mask_f) = packing::inputs(f, s, opts.dtype)?;
            (Some((seg, pos)), mask_f)
        } else {
            let mask = f.input(ATTENTION_MASK, DType::I32, InputShape::Fixed(vec![1, s]))?;
            (None, f.cast("attention_mask_f", &mask, opts.dtype)?)
        };
        Ok(Emitter {
            f,
            opts,
            hidden,
            ids,
            mask_f,
            pad_mask: None,
            masks: HashMap::new(),
            band_masks: HashMap::new(),
            pads: HashMap::new(),
            rope: HashMap::new(),
            table: Vec::new(),
            x: None,
            emb_norm: None,
            packed,
            packed_onehot: None,
            range: None,
            positions: None,
            onehot: None,
            select_next: false,
            selected: false,
            scope: "",
        })
    }

    /// A length-independent weight: the one another function of the program made under the same
    /// key, else `make`'s (then offered to the others). See [`GraphOptions::share_weights`].
    fn shared(
        &mut self,
        key: &str,
        hint: &str,
        make: impl FnOnce(&mut Self) -> Result<Var, MilError>,
    ) -> Result<Var, MilError> {
        if !self.opts.share_weights {
            return make(self);
        }
        let key = format!("{}/{key}", self.scope);
        if let Some(v) = self.f.shared_constant(&key, hint) {
            return Ok(v);
        }
        let v = make(self)?;
        self.f.share_constant(&key, &v)?;
        Ok(v)
    }

    /// A constant of the graph's precision. Refuses values that are not finite or that fp16 cannot
    /// hold (|w| > 65504 becomes ∞ on the ANE), naming the constant: the converter never writes a
    /// package that computes garbage.
    fn weight(&mut self, hint: &str, shape: Vec<usize>, v: Vec<f32>) -> Result<Var, MilError> {
        let t = self.checked(hint, shape, v)?;
        self.f.constant(hint, t)
    }

    /// A conv weight or embedding table: compressed when asked for and large enough, else as
    /// [`Self::weight`].
    fn large_weight(
        &mut self,
        hint: &str,
        shape: Vec<usize>,
        v: Vec<f32>,
    ) -> Result<Var, MilError> {
        let t = self.checked(hint, shape, v)?;
        match self.opts.compression {
            Some(c) if t.len() >= compress::MIN_ELEMENTS => {
                let values = t.as_f32().expect("float weights");
                let spec = self.f.spec_version();
                let e = compress::encode(values, t.shape(), c, spec);
                self.f.compressed_constant(hint, e.op_type, e.params, t)
            }
            _ => self.f.constant(hint, t),
        }
    }

    /// The weight as a tensor of the graph's precision, after the checks of [`Self::weight`].
    fn checked(&mut self, hint: &str, shape: Vec<usize>, v: Vec<f32>) -> Result<Tensor, MilError> {
        let limit = if self.opts.dtype == DType::F16 {
            half::f16::MAX.to_f32()
        } else {
            f32::MAX
        };
        if let Some((i, w)) = v
            .iter()
            .enumerate()
            .find(|(_, w)| w.is_nan() || w.abs() > limit)
        {
            let max = v
                .iter()
                .fold(0f32, |m, w| if w.is_nan() { m } else { m.max(w.abs()) });
            let msg = if w.is_finite() {
                format!(
                    "holds {w} at flat index {i} (max |w| {max:e}), beyond fp16's largest value \
                     65504; convert with `--weights fp32` (Config::weights(WeightPrecision::Fp32)), \
                     or rescale the checkpoint"
                )
            } else {
                format!("holds a non-finite value ({w}) at flat index {i}")
            };
            return Err(MilError::Constant {
                name: hint.to_string(),
                msg,
            });
        }
        Ok(match self.opts.dtype {
            DType::F16 => Tensor::f16(shape, v)?,
            _ => Tensor::f32(shape, v)?,
        })
    }

    fn scalar(&mut self, hint: &str, v: f32) -> Result<Var, MilError> {
        self.weight(hint, vec![], vec![v])
    }

    /// A 1×1 conv for `lin` (chunked on output channels above `opts.chunk`, concatenated).
    fn conv(&mut self, hint: &str, x: &Var, lin: &Linear) -> Result<Var, MilError> {
        let (rows, cols) = match &lin.weight {
            Weight::Dense(m) => (m.nrows(), m.ncols()),
            Weight::EmbeddingTable => (self.table.iter().map(|c| c.0).sum(), self.hidden),
        };
        let mut outs = Vec::new();
        let mut start = 0;
        let mut chunk_idx = 0;
        while start < rows {
            let n = self.opts.chunk.min(rows - start);
            let wv = match &lin.weight {
                Weight::Dense(m) => {
                    let name = format!("{hint}_weight");
                    self.shared(&format!("{name}#{chunk_idx}"), &name, |g| {
                        // Rows start..start+n, row-major, read column by column (m is
                        // column-major).
                        let mut v = vec![0f32; n * cols];
                        for j in 0..cols {
                            let col = &m.col_as_slice(j)[start..start + n];
                            for i in 0..n {
                                v[i * cols + j] = col[i] as f32;
                            }
                        }
                        g.large_weight(&name, vec![n, cols, 1, 1], v)
                    })?
                }
                Weight::EmbeddingTable => {
                    // A view of the gather table chunk: the weight file stores it once.
                    let (rows, table) = self.table[chunk_idx].clone();
                    debug_assert_eq!(rows, n);
                    let shape = [n, cols, 1, 1];
                    if self.f.is_compressed(&table) {
                        self.f
                            .compressed_view(&format!("{hint}_weight"), &table, &shape)?
                    } else {
                        self.f
                            .constant_view(&format!("{hint}_weight"), &table, &shape)?
                    }
                }
            };
            let bv = match &lin.bias {
                Some(b) => {
                    let name = format!("{hint}_bias");
                    Some(self.shared(&format!("{name}#{chunk_idx}"), &name, |g| {
                        let v = b[start..start + n].iter().map(|&x| x as f32).collect();
                        g.weight(&name, vec![n], v)
                    })?)
                }
                None => None,
            };
            outs.push(self.f.conv(hint, x, &wv, bv.as_ref())?);
            start += n;
            chunk_idx += 1;
        }
        if outs.len() == 1 {
            Ok(outs.pop().expect("one"))
        } else {
            self.f.concat(hint, &outs, 1, false)
        }
    }

    fn norm(&mut self, hint: &str, x: &Var, n: &Norm) -> Result<Var, MilError> {
        match n {
            Norm::Layer { gamma, beta, eps } => {
                let d = self.hidden;
                let g = match gamma {
                    Some(g) => {
                        let name = format!("{hint}_gamma");
                        Some(self.shared(&name, &name, |e| {
                            let v = g.iter().map(|&v| v as f32).collect();
                            e.weight(&name, vec![d], v)
                        })?)
                    }
                    None => None,
                };
                let b = match beta {
                    Some(b) => {
                        let name = format!("{hint}_beta");
                        Some(self.shared(&name, &name, |e| {
                            let v = b.iter().map(|&v| v as f32).collect();
                            e.weight(&name, vec![d], v)
                        })?)
                    }
                    None => None,
                };
                if self.opts.safe_norm {
                    return self.safe_layer_norm(hint, x, *eps, g.as_ref(), b.as_ref());
                }
                self.f
                    .layer_norm(hint, x, &[1], g.as_ref(), b.as_ref(), *eps as f32)
            }
            Norm::ScaledRms { eps } => self.scaled_rms(hint, x, *eps),
        }
    }

    /// LayerNorm without squares in fp16 (the `safe-norm` treatment): `c = x − mean(x)`, then
    /// `c / ‖[c, √(eps·d)]‖₂ · √d` (= `(x − μ)/√(var + eps)`), then γ and β. The stream keeps
    /// its own values (no centring folded into the writers, which would smear an outlier channel's
    /// mean over every channel); only the norm's input is centred.
    fn safe_layer_norm(
        &mut self,
        hint: &str,
        x: &Var,
        eps: f64,
        gamma: Option<&Var>,
        beta: Option<&Var>,
    ) -> Result<Var, MilError> {
        let mean = self
            .f
            .reduce("reduce_mean", &format!("{hint}_mean"), x, &[1], true)?;
        let c = self.f.binary("sub", &format!("{hint}_centred"), x, &mean)?;
        let n = self.scaled_rms(hint, &c, eps)?;
        let root_d = self.scalar(&format!("{hint}_sqrt_d"), (self.hidden as f32).sqrt())?;
        let mut y = self.f.binary("mul", &format!("{hint}_unit"), &n, &root_d)?;
        if let Some(g) = gamma {
            let g = self.f.reshape(
                &format!("{hint}_gamma_c"),
                g,
                &[1, self.hidden as i32, 1, 1],
            )?;
            y = self.f.binary("mul", &format!("{hint}_scaled"), &y, &g)?;
        }
        if let Some(b) = beta {
            let b = self
                .f
                .reshape(&format!("{hint}_beta_c"), b, &[1, self.hidden as i32, 1, 1])?;
            y = self.f.binary("add", &format!("{hint}_shifted"), &y, &b)?;
        }
        Ok(y)
    }

    /// `x / ‖[x, √(eps·d)]‖₂` over channels: `rms_normalize(x)/√d` of a zero-mean `x`.
    fn scaled_rms(&mut self, hint: &str, x: &Var, eps: f64) -> Result<Var, MilError> {
        // ‖[x, √(eps·d)]‖₂ = √d · sqrt(mean(x²) + eps), computed without squaring in fp16.
        // Over x's own positions: S, or K after the fill-mask head's selection.
        let s = x
            .shape()
            .and_then(|sh| sh.last().copied())
            .ok_or_else(|| err("a norm's input needs a known shape"))?;
        let c = (eps * self.hidden as f64).sqrt() as f32;
        let cv = self.weight(&format!("{hint}_eps_channel"), vec![1, 1, 1, s], vec![c; s])?;
        let cat = self
            .f
            .concat(&format!("{hint}_cat"), &[x.clone(), cv], 1, false)?;
        let l2 = self
            .f
            .reduce("reduce_l2_norm", &format!("{hint}_l2"), &cat, &[1], true)?;
        self.f.binary("real_div", hint, x, &l2)
    }

    fn act(&mut self, hint: &str, x: &Var, a: Activation) -> Result<Var, MilError> {
        match a {
            Activation::GeluExact => self.f.gelu(hint, x, "EXACT"),
            Activation::GeluTanh => self.f.gelu(hint, x, "TANH_APPROXIMATION"),
            Activation::Silu => self.f.unary("silu", hint, x),
            Activation::Relu => self.f.unary("relu", hint, x),
            Activation::Tanh => self.f.unary("tanh", hint, x),
        }
    }

    /// Embedding lookup, norm, and (rotated form) the layer-0 residual matrix.
    pub fn embeddings(&mut self, e: &Embeddings) -> Result<(), MilError> {
        let (v, d, s) = (e.table.rows, e.table.cols, self.opts.seq_len);
        if d != self.hidden {
            return Err(err("embedding width differs from the hidden size"));
        }
        // Tables over `opts.chunk` rows are stored in chunks (the ANE lookup bound; the MLM decoder
        // reuses the same chunks); each chunk gathers clamped ids and a range mask selects.
        let mut gathered: Option<Var> = None;
        let chunk = self.opts.chunk;
        let chunks = v.div_ceil(chunk);
        for k in 0..chunks {
            let a = k * chunk;
            let n = chunk.min(v - a);
            let tv = self.shared(&format!("embeddings_table#{k}"), "embeddings_table", |g| {
                let rows = e.table.data[a * d..(a + n) * d].to_vec();
                g.large_weight("embeddings_table", vec![n, d], rows)
            })?;
            self.table.push((n, tv.clone()));
            if chunks == 1 {
                gathered = Some(
                    self.f
                        .gather("embeddings_gather", &tv, &self.ids.clone(), 0)?,
                );
                break;
            }
            let ids = self.ids.clone();
            let lo = self.f.constant("emb_lo", Tensor::scalar_i32(a as i32))?;
            let hi = self
                .f
                .constant("emb_hi", Tensor::scalar_i32((a + n) as i32))?;
            let zero = self.f.constant("emb_zero", Tensor::scalar_i32(0))?;
            let top = self
                .f
                .constant("emb_top", Tensor::scalar_i32(n as i32 - 1))?;
            let shifted = self.f.binary("sub", "emb_shift", &ids, &lo)?;
            let clamped = self.f.binary("maximum", "emb_clamp_lo", &shifted, &zero)?;
            let clamped = self.f.binary("minimum", "emb_clamp_hi", &clamped, &top)?;
            let g = self.f.gather("embeddings_gather", &tv, &clamped, 0)?;
            let ge = self.f.binary("greater_equal", "emb_in_lo", &ids, &lo)?;
            let lt = self.f.binary("less", "emb_in_hi", &ids, &hi)?;
            let inside = self.f.binary("logical_and", "emb_in", &ge, &lt)?;
            let inside = self.f.cast("emb_in_f", &inside, self.opts.dtype)?;
            let inside = self.f.expand_dims("emb_in_x", &inside, &[2])?;
            let part = self.f.binary("mul", "emb_part", &g, &inside)?;
            gathered = Some(match gathered {
                None => part,
                Some(acc) => self.f.binary("add", "emb_sum", &acc, &part)?,
            });
        }
        let g = gathered.ok_or_else(|| err("empty embedding table"))?;
        // (1, S, d) → (1, d, 1, S)
        let t = self.f.transpose("embeddings_t", &g, &[0, 2, 1])?;
        let x = self.f.expand_dims("embeddings_bc1s", &t, &[2])?;
        debug_assert_eq!(x.shape(), Some(vec![1, d, 1, s]));
        // Learned positions 0..S−1 plus the type-0 embedding: one constant (1, d, 1, S).
        let x = if e.positions.is_some() || e.token_type.is_some() {
            let mut add = vec![0f32; d * s];
            if let Some(pos) = &e.positions {
                if pos.rows < s || pos.cols != d {
                    return Err(err(format!(
                        "{} position embeddings cannot cover S = {s}",
                        pos.rows
                    )));
                }
                for p in 0..s {
                    for c in 0..d {
                        add[c * s + p] += pos.data[p * d + c];
                    }
                }
            }
            if let Some(t) = &e.token_type {
                for c in 0..d {
                    for p in 0..s {
                        add[c * s + p] += t[c] as f32;
                    }
                }
            }
            let pv = self.weight("embeddings_positions", vec![1, d, 1, s], add)?;
            let pv = self.at_positions("embeddings_positions_packed", &pv)?;
            self.f.binary("add", "embeddings_sum", &x, &pv)?
        } else {
            x
        };
        let n = self.norm("embeddings_norm", &x, &e.norm)?;
        let x0 = match &e.residual {
            Some(r) => self.conv("embeddings_residual", &n, r)?,
            None => n.clone(),
        };
        self.emb_norm = Some(n);
        self.x = Some(x0);
        Ok(())
    }

    /// One encoder layer.
    pub fn layer(&mut self, l: &Layer) -> Result<(), MilError> {
        self.layer_with_qkv(l, &stack_qkv(&l.attn)?)
    }

    /// The fill-mask head reads the last layer at K positions only: its keys and values still
    /// come from all S tokens, its queries, attention output and MLP from the K selected. Call
    /// before that layer (does nothing for other heads).
    pub fn select_in_next_layer(&mut self, head: HeadKind) {
        self.select_next = head == HeadKind::FillMask;
    }

    /// One encoder layer whose fused projection [`stack_qkv`] made (once for every function that
    /// emits the layer).
    pub fn layer_with_qkv(&mut self, l: &Layer, qkv: &Linear) -> Result<(), MilError> {
        let x = self
            .x
            .clone()
            .ok_or_else(|| err("layers come after embeddings"))?;
        let d = self.hidden;
        let h = l.attn.heads;
        let hd = d / h;
        let p = format!("layer{}", l.index);
        let a_in = match &l.attn_input {
            AttnInput::Norm(n) => self.norm(&format!("{p}_attn_norm"), &x, n)?,
            AttnInput::Stream => x.clone(),
            AttnInput::EmbeddingNorm => self
                .emb_norm
                .clone()
                .ok_or_else(|| err("no embedding norm"))?,
        };
        let y = self.conv(&format!("{p}_qkv"), &a_in, qkv)?;
        let pieces = self
            .f
            .split(&format!("{p}_qkv_split"), &y, 1, &[d as i32; 3])?;
        let (q, k, v) = (pieces[0].clone(), pieces[1].clone(), pieces[2].clone());
        let (q, k) = if let Some(rope) = l.attn.rope {
            let (cos, sin) = self.rope_tables(rope.theta, h)?;
            let half = (hd / 2) as i32;
            let (hh, hdi, si) = (h as i32, hd as i32, self.opts.seq_len as i32);
            // Per head, (1, h, hd, S) against (1, 1, hd, S) tables: O(S·hd) constants, not
            // O(S·D). rotate_half(x) = [−x₂, x₁]: swap the halves with split + concat; the sign
            // lives in the sin table. Cheaper than folding it into the weights (+2d² MACs/token).
            let mut rot = |name: &str, a: &Var| -> Result<Var, MilError> {
                let a = self
                    .f
                    .reshape(&format!("{p}_{name}_per_head"), a, &[1, hh, hdi, si])?;
                let halves = self
                    .f
                    .split(&format!("{p}_{name}_halves"), &a, 2, &[half, half])?;
                let swapped = [halves[1].clone(), halves[0].clone()];
                let sw = self
                    .f
                    .concat(&format!("{p}_{name}_swapped"), &swapped, 2, false)?;
                let ac = self.f.binary("mul", &format!("{p}_{name}_cos"), &a, &cos)?;
                let bs = self
                    .f
                    .binary("mul", &format!("{p}_{name}_sin"), &sw, &sin)?;
                let r = self
                    .f
                    .binary("add", &format!("{p}_{name}_rope"), &ac, &bs)?;
                self.f
                    .reshape(&format!("{p}_{name}_rotated"), &r, &[1, hh * hdi, 1, si])
            };
            (rot("q", &q)?, rot("k", &k)?)
        } else {
            (q, k)
        };
        // The fill-mask head's last layer: queries and the residual stream at the K positions.
        let (q, x) = if std::mem::take(&mut self.select_next) {
            self.selected = true;
            (
                self.select_positions(&format!("{p}_q_selected"), &q)?,
                self.select_positions(&format!("{p}_x_selected"), &x)?,
            )
        } else {
            (q, x)
        };
        let o = self.attend(&p, &q, &k, &v, h, l.attn.window)?;
        let o = self.conv(&format!("{p}_attn_out"), &o, &l.attn.out)?;
        let mut x = self
            .f
            .binary("add", &format!("{p}_attn_residual"), &x, &o)?;
        if let Some((n, _)) = &l.post_norms {
            x = self.norm(&format!("{p}_attn_post_norm"), &x, n)?;
        }

        let m_in = match &l.mlp_norm {
            Some(n) => self.norm(&format!("{p}_mlp_norm"), &x, n)?,
            None => x.clone(),
        };
        let up = self.conv(&format!("{p}_mlp_up"), &m_in, &l.mlp.up)?;
        let hidden = if l.mlp.gated {
            let i = up
                .shape()
                .map(|s| s[1] / 2)
                .ok_or_else(|| err("unknown MLP width"))?;
            let ag = self
                .f
                .split(&format!("{p}_mlp_split"), &up, 1, &[i as i32, i as i32])?;
            let a = self.act(&format!("{p}_mlp_act"), &ag[0], l.mlp.act)?;
            self.f.binary("mul", &format!("{p}_mlp_gate"), &a, &ag[1])?
        } else {
            self.act(&format!("{p}_mlp_act"), &up, l.mlp.act)?
        };
        let down = self.conv(&format!("{p}_mlp_down"), &hidden, &l.mlp.down)?;
        let mut x = self
            .f
            .binary("add", &format!("{p}_mlp_residual"), &x, &down)?;
        if let Some((_, n)) = &l.post_norms {
            x = self.norm(&format!("{p}_mlp_post_norm"), &x, n)?;
        }
        self.x = Some(x);
        Ok(())
    }
}

/// One conv for `[q·scale; k; v]`: the attention scale 1/√head_dim folded into the query weights.
pub fn stack_qkv(a: &Attention) -> Result<Linear, MilError> {
    fn get(l: &Linear) -> Result<&Mat<f64>, MilError> {
        l.matrix()
            .ok_or_else(|| err("attention projections are dense"))
    }
    let (q, k, v) = (get(&a.q)?, get(&a.k)?, get(&a.v)?);
    let (d, cols) = (q.nrows(), q.ncols());
    let scale = 1.0 / ((d / a.heads.max(1)) as f64).sqrt();
    let mut w = Mat::<f64>::zeros(3 * d, cols);
    let mut bias = vec![0.0; 3 * d];
    let blocks = [(q, &a.q, scale), (k, &a.k, 1.0), (v, &a.v, 1.0)];
    for (bi, (m, lin, s)) in blocks.into_iter().enumerate() {
        for c in 0..cols {
            let dst = &mut w.col_as_slice_mut(c)[bi * d..(bi + 1) * d];
            dst.iter_mut()
                .zip(m.col_as_slice(c))
                .for_each(|(o, &x)| *o = x * s);
        }
        for r in 0..d {
            bias[bi * d + r] = lin.bias.as_ref().map_or(0.0, |b| b[r]) * s;
        }
    }
    let has_bias = a.q.bias.is_some() || a.k.bias.is_some() || a.v.bias.is_some();
    Ok(Linear::dense(w, has_bias.then_some(bias)))
}
