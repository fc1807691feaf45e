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
    /// Layer 0 reads `n = norm(e)` through `diag(γ_e) · basis` plus `β_e`.
    layer0_in: Option<(Mat<f64>, Option<Vec<f64>>)>,
}

/// `M = diag(gamma) · Q · s` (d × d).
fn gamma_q(gamma: Option<&[f64]>, q: &Mat<f64>, s: f64) -> Mat<f64> {
    Mat::from_fn(q.nrows(), q.ncols(), |i, j| {
        gamma.map_or(1.0, |g| g[i]) * q[(i, j)] * s
    })
}

/// `W ← W · M`, `b ← b + W · β` (β read through the original W).
fn fold_input(lin: &mut Linear, m: &Mat<f64>, beta: Option<&[f64]>) {
    let Weight::Dense(w) = &mut lin.weight else {
        unreachable!("tied decoders are never the first consumer of a folded norm")
    };
    if let Some(beta) = beta {
        let b = lin.bias.get_or_insert_with(|| vec![0.0; w.nrows()]);
        for (i, bi) in b.iter_mut().enumerate() {
            *bi += (0..w.ncols()).map(|j| w[(i, j)] * beta[j]).sum::<f64>();
        }
    }
    *w = &*w * m;
}

/// `W ← Qᵀ C W`, `b ← Qᵀ C b`: a writer into the residual stream.
fn fold_output(lin: &mut Linear, q: &Mat<f64>) {
    let Weight::Dense(w) = &mut lin.weight else {
        unreachable!("stream writers are dense")
    };
    let rows = w.nrows() as f64;
    for j in 0..w.ncols() {
        let mean = (0..w.nrows()).map(|i| w[(i, j)]).sum::<f64>() / rows;
        for i in 0..w.nrows() {
            w[(i, j)] -= mean;
        }
    }
    *w = q.transpose() * &*w;
    if let Some(b) = &mut lin.bias {
        let mean = b.iter().sum::<f64>() / rows;
        let c: Vec<f64> = b.iter().map(|x| x - mean).collect();
        for (i, bi) in b.iter_mut().enumerate() {
            *bi = (0..c.len()).map(|k| q[(k, i)] * c[k]).sum();
        }
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
        let q = &rot.q;
        let d = q.nrows();
        let (gamma, beta, eps) = layer_norm_parts(&e.norm);
        let (gamma, beta) = (gamma.map(<[f64]>::to_vec), beta.map(<[f64]>::to_vec));
        // basis: maps the norm output to n = (e − μ)/σ.
        let basis = if shared_table {
            e.norm = Norm::Layer {
                gamma: None,
                beta: None,
                eps,
            };
            Mat::<f64>::identity(d, d)
        } else {
            centre_and_rotate(&mut e.table, q);
            e.norm = Norm::ScaledRms { eps };
            Mat::from_fn(d, d, |i, j| q[(i, j)] * (d as f64).sqrt())
        };
        // Residual x̃0 = Qᵀ C (diag(γ) n + β).
        let mut r = Linear::dense(
            Mat::from_fn(d, d, |i, j| if i == j { 1.0 } else { 0.0 }),
            beta.clone(),
        );
        fold_input(&mut r, &gamma_q(gamma.as_deref(), &basis, 1.0), None);
        fold_output(&mut r, q);
        e.residual = Some(r);
        self.layer0_in = Some((gamma_q(gamma.as_deref(), &basis, 1.0), beta));
        e
    }

    /// Fold one layer.
    pub fn layer(&mut self, mut l: Layer) -> Layer {
        let Some(rot) = &self.rot else { return l };
        let q = &rot.q;
        let sd = (q.nrows() as f64).sqrt();
        let (m, beta) = match &l.attn_input {
            AttnInput::Norm(n) => {
                let (g, b, eps) = layer_norm_parts(n);
                let out = (gamma_q(g, q, sd), b.map(<[f64]>::to_vec));
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
            fold_input(lin, &m, beta.as_deref());
        }
        fold_output(&mut l.attn.out, q);
        let Some(mlp_norm) = &l.mlp_norm else {
            unreachable!("rotation is only applied to pre-norm encoders")
        };
        let (g, b, eps) = layer_norm_parts(mlp_norm);
        let m = gamma_q(g, q, sd);
        let beta = b.map(<[f64]>::to_vec);
        l.mlp_norm = Some(Norm::ScaledRms { eps });
        fold_input(&mut l.mlp.up, &m, beta.as_deref());
        fold_output(&mut l.mlp.down, q);
        l
    }

    /// Fold the final norm into the head (pooling commutes with the linear map it becomes).
    pub fn head(&mut self, mut h: Head) -> Head {
        let Some(rot) = &self.rot else { return h };
        let q = &rot.q;
        let sd = (q.nrows() as f64).sqrt();
        let Some(norm) = h.final_norm.take() else {
            unreachable!("pre-norm encoders end in a final norm")
        };
        let (g, b, eps) = layer_norm_parts(&norm);
        let m = gamma_q(g, q, sd);
        let beta = b.map(<[f64]>::to_vec);
        h.final_norm = Some(Norm::ScaledRms { eps });
        match h.steps.first_mut() {
            Some(Step::Linear(lin)) if lin.matrix().is_some() => {
                fold_input(lin, &m, beta.as_deref());
            }
            _ => h.steps.insert(0, Step::Linear(Linear::dense(m, beta))),
        }
        h
    }
}

/// Rows `t_v = Qᵀ C e_v`, in f64 blocks (the table is the largest tensor; never widen it whole).
fn centre_and_rotate(t: &mut Table, q: &Mat<f64>) {
    let d = t.cols;
    let block = 2048;
    for start in (0..t.rows).step_by(block) {
        let n = block.min(t.rows - start);
        let rows = &mut t.data[start * d..(start + n) * d];
        let means: Vec<f64> = rows
            .chunks_exact(d)
            .map(|r| r.iter().map(|&x| x as f64).sum::<f64>() / d as f64)
            .collect();
        let centred = Mat::from_fn(n, d, |i, j| rows[i * d + j] as f64 - means[i]);
        let r = &centred * q;
        for i in 0..n {
            for j in 0..d {
                rows[i * d + j] = r[(i, j)] as f32;
            }
        }
    }
}
