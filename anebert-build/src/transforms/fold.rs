//! QuaRot-style folding of a pre-norm encoder (docs/design.md §4), applied piece by piece as the
//! checkpoint is read: centre the residual stream, fold each norm's γ/β into the next linear
//! layer, rotate the stream by an orthogonal `Q` (`x̃ = Qᵀ x`), and turn every LayerNorm of the
//! stream into a weightless, overflow-safe RMSNorm.
//!
//! Why it is exact: a LayerNorm only sees `C x` (C = centering), so we may carry `z = C h` instead
//! of `h`; writers into the stream get `C W`. For a zero-mean `z`, LayerNorm is RMSNorm with the
//! same eps, and `rms(Qᵀ z) = rms(z)`. The [`Norm::ScaledRms`] output is `rms_normalize(x̃)/√d`,
//! so every consumer absorbs `diag(γ) · Q · √d`.

use super::rotation::Rotation;
use crate::ir::*;
use faer::Mat;

/// Folds and rotates IR pieces in pipeline order: [`Folder::embeddings`], then every
/// [`Folder::layer`], then [`Folder::head`]. With no rotation every piece passes through.
#[derive(Debug)]
pub struct Folder {
    rot: Option<Rotation>,
    /// Layer 0 reads `n = norm(e)` through this map plus `β_e`.
    layer0_in: Option<(InputMap, Option<Vec<f64>>)>,
}

/// `M = diag(γ) · Q · s` (`Q` = identity when `rotate` is false): what a consumer of a folded
/// norm absorbs. Kept as its parts so it is applied by the rotation's fast transform.
#[derive(Clone, Debug)]
struct InputMap {
    gamma: Option<Vec<f64>>,
    rotate: bool,
    scale: f64,
}

impl InputMap {
    fn new(gamma: Option<&[f64]>, rotate: bool, scale: f64) -> Self {
        InputMap {
            gamma: gamma.map(<[f64]>::to_vec),
            rotate,
            scale,
        }
    }

    /// `W ← W · M`.
    fn apply(&self, w: &mut Mat<f64>, rot: &Rotation) {
        for j in 0..w.ncols() {
            let g = self.gamma.as_ref().map_or(1.0, |g| g[j]) * self.scale;
            w.col_as_slice_mut(j).iter_mut().for_each(|x| *x *= g);
        }
        if self.rotate {
            rot.right_apply(w);
        }
    }

    /// `M` itself (d × d).
    fn matrix(&self, rot: &Rotation) -> Mat<f64> {
        let mut m = Mat::<f64>::identity(rot.dim(), rot.dim());
        self.apply(&mut m, rot);
        m
    }
}

/// `W ← W · M`, `b ← b + W · β` (β read through the original W).
fn fold_input(lin: &mut Linear, m: &InputMap, rot: &Rotation, beta: Option<&[f64]>) {
    let Weight::Dense(w) = &mut lin.weight else {
        unreachable!("tied decoders are never the first consumer of a folded norm")
    };
    if let Some(beta) = beta {
        // Σ_j w_ij β_j in j order, then added (column by column: W is column-major).
        let mut wb = vec![0.0; w.nrows()];
        for (j, &bj) in beta.iter().enumerate() {
            for (s, &x) in wb.iter_mut().zip(w.col_as_slice(j)) {
                *s += x * bj;
            }
        }
        let b = lin.bias.get_or_insert_with(|| vec![0.0; w.nrows()]);
        b.iter_mut().zip(&wb).for_each(|(bi, s)| *bi += s);
    }
    m.apply(w, rot);
}

/// `W ← Qᵀ C W`, `b ← Qᵀ C b`: a writer into the residual stream.
fn fold_output(lin: &mut Linear, rot: &Rotation) {
    let Weight::Dense(w) = &mut lin.weight else {
        unreachable!("stream writers are dense")
    };
    let rows = w.nrows() as f64;
    for j in 0..w.ncols() {
        let col = w.col_as_slice_mut(j);
        let mean = col.iter().sum::<f64>() / rows;
        col.iter_mut().for_each(|x| *x -= mean);
    }
    rot.left_apply_t(w);
    if let Some(b) = &mut lin.bias {
        let mean = b.iter().sum::<f64>() / rows;
        b.iter_mut().for_each(|x| *x -= mean);
        rot.apply_t(b);
    }
}

fn layer_norm_parts(n: &Norm) -> (Option<&[f64]>, Option<&[f64]>, f64) {
    match n {
        Norm::Layer { gamma, beta, eps } => (gamma.as_deref(), beta.as_deref(), *eps),
        Norm::ScaledRms { .. } => unreachable!("the source IR has LayerNorms"),
    }
}

impl Folder {
    /// A folder that rotates by `rot`, or passes everything through when `None`.
    pub fn new(rot: Option<Rotation>) -> Self {
        Folder {
            rot,
            layer0_in: None,
        }
    }

    /// The rotation in use.
    pub fn rotation(&self) -> Option<&Rotation> {
        self.rot.as_ref()
    }

    /// Fold the embedding norm. `shared_table`: the table doubles as the MLM decoder, so it stays
    /// as stored (its norm stays a plain `layer_norm`, whose input — raw embeddings — is small);
    /// otherwise the rows are centred and rotated and the norm becomes an RMSNorm.
    pub fn embeddings(&mut self, mut e: Embeddings, shared_table: bool) -> Embeddings {
        let Some(rot) = &self.rot else { return e };
        let d = rot.dim();
        let (gamma, beta, eps) = layer_norm_parts(&e.norm);
        let beta = beta.map(<[f64]>::to_vec);
        // How the norm output maps to n = (e − μ)/σ: identity, or Q · √d.
        let map = if shared_table {
            let map = InputMap::new(gamma, false, 1.0);
            e.norm = Norm::Layer {
                gamma: None,
                beta: None,
                eps,
            };
            map
        } else {
            let map = InputMap::new(gamma, true, (d as f64).sqrt());
            centre_and_rotate(&mut e.table, rot);
            e.norm = Norm::ScaledRms { eps };
            map
        };
        // Residual x̃0 = Qᵀ C (diag(γ) n + β).
        let mut r = Linear::dense(Mat::<f64>::identity(d, d), beta.clone());
        fold_input(&mut r, &map, rot, None);
        fold_output(&mut r, rot);
        e.residual = Some(r);
        self.layer0_in = Some((map, beta));
        e
    }

    /// Fold one layer.
    pub fn layer(&mut self, mut l: Layer) -> Layer {
        let Some(rot) = &self.rot else { return l };
        let sd = (rot.dim() as f64).sqrt();
        let (m, beta) = match &l.attn_input {
            AttnInput::Norm(n) => {
                let (g, b, eps) = layer_norm_parts(n);
                let out = (InputMap::new(g, true, sd), b.map(<[f64]>::to_vec));
                l.attn_input = AttnInput::Norm(Norm::ScaledRms { eps });
                out
            }
            AttnInput::Stream | AttnInput::EmbeddingNorm => {
                l.attn_input = AttnInput::EmbeddingNorm;
                self.layer0_in
                    .clone()
                    .expect("embeddings are folded before layer 0")
            }
        };
        for lin in [&mut l.attn.q, &mut l.attn.k, &mut l.attn.v] {
            fold_input(lin, &m, rot, beta.as_deref());
        }
        fold_output(&mut l.attn.out, rot);
        let Some(mlp_norm) = &l.mlp_norm else {
            unreachable!("rotation is only applied to pre-norm encoders")
        };
        let (g, b, eps) = layer_norm_parts(mlp_norm);
        let m = InputMap::new(g, true, sd);
        let beta = b.map(<[f64]>::to_vec);
        l.mlp_norm = Some(Norm::ScaledRms { eps });
        fold_input(&mut l.mlp.up, &m, rot, beta.as_deref());
        fold_output(&mut l.mlp.down, rot);
        l
    }

    /// Fold the final norm into the head (pooling commutes with the linear map it becomes).
    pub fn head(&mut self, mut h: Head) -> Head {
        let Some(rot) = &self.rot else { return h };
        let sd = (rot.dim() as f64).sqrt();
        let Some(norm) = h.final_norm.take() else {
            unreachable!("pre-norm encoders end in a final norm")
        };
        let (g, b, eps) = layer_norm_parts(&norm);
        let m = InputMap::new(g, true, sd);
        let beta = b.map(<[f64]>::to_vec);
        h.final_norm = Some(Norm::ScaledRms { eps });
        match h.steps.first_mut() {
            Some(Step::Linear(lin)) if lin.matrix().is_some() => {
                fold_input(lin, &m, rot, beta.as_deref());
            }
            _ => h
                .steps
                .insert(0, Step::Linear(Linear::dense(m.matrix(rot), beta))),
        }
        h
    }
}

/// Rows `t_v = Qᵀ C e_v`, in f64 blocks (the table is the largest tensor; never widen it whole).
fn centre_and_rotate(t: &mut Table, rot: &Rotation) {
    let d = t.cols;
    let block = 2048;
    for start in (0..t.rows).step_by(block) {
        let n = block.min(t.rows - start);
        let rows = &mut t.data[start * d..(start + n) * d];
        let means: Vec<f64> = rows
            .chunks_exact(d)
            .map(|r| r.iter().map(|&x| x as f64).sum::<f64>() / d as f64)
            .collect();
        // Column by column, with plain index loops: faer's element accessors cost a call per
        // element in an unoptimized build script (as in `Checkpoint::matrix`).
        let mut r = Mat::<f64>::zeros(n, d);
        for j in 0..d {
            let col = r.col_as_slice_mut(j);
            let mut i = 0;
            while i < n {
                col[i] = rows[i * d + j] as f64 - means[i];
                i += 1;
            }
        }
        rot.right_apply(&mut r);
        for j in 0..d {
            let col = r.col_as_slice(j);
            let mut i = 0;
            while i < n {
                rows[i * d + j] = col[i] as f32;
                i += 1;
            }
        }
    }
}
