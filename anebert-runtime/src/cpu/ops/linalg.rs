//! conv, linear, matmul and einsum, all lowered onto the GEMMs of `gemm` (an fp16 weight the plan
//! kept as fp16 goes to `gemm_f16`). In fp16 mode the inputs already hold fp16 values and the
//! products accumulate in f32; the plan rounds the result — the "f32 accumulate, fp16 out" model.

use super::gemm::{gemm, gemm_f16, Mat, PAR_FLOPS};
use super::{float_out, strides, Ctx, OpResult};
use crate::op_table::dims::{self, EinsumPattern};

fn add_bias(out: &mut [f32], bias: &[f32], channels: usize, inner: usize) {
    for chunk in out.chunks_mut(channels * inner) {
        for (ch, b) in chunk.chunks_mut(inner).zip(bias) {
            ch.iter_mut().for_each(|v| *v += b);
        }
    }
}

/// In each row of `width` values, the values past `live` become a copy of value `live - 1`.
fn repeat_last_column(rows: &mut [f32], width: usize, live: usize) {
    if live == 0 || live >= width {
        return;
    }
    for row in rows.chunks_mut(width) {
        let v = row[live - 1];
        row[live..].fill(v);
    }
}

pub fn conv(c: &Ctx) -> OpResult {
    let n: usize = c.out_shape(0).iter().product();
    let mut out = c.zeros(n);
    conv_into(c, &mut out)?;
    Ok(vec![float_out(
        c.t("x")?.dtype(),
        c.out_shape(0).to_vec(),
        out,
    )?])
}

/// [`conv`] into `out` (every element written; its length is the output's): the fused
/// conv → concat step writes each conv straight into its part of the concatenation.
pub(crate) fn conv_into(c: &Ctx, out: &mut [f32]) -> Result<(), String> {
    let (x, xv) = (c.t("x")?, c.f32s("x")?);
    let half = c.half("weight");
    let (xs, ws) = (x.shape(), c.shape("weight")?);
    if xs.len() < 3 || xs.len() != ws.len() {
        return Err(format!(
            "conv needs x [N, C, *spatial] and a weight of the same rank; got {xs:?} and {ws:?}"
        ));
    }
    let sp = xs.len() - 2;
    if sp > 2 {
        return Err("3-D convolution is not supported by the CPU backend".into());
    }
    // The rule checked channels, groups, parameter lengths and the bias.
    let g = c.int("groups")? as usize;
    let (n, cin, cout) = (xs[0], xs[1], ws[0]);
    let (cin_g, cout_g) = (cin / g, cout / g);
    let strides_ = c.int_list("strides", sp)?;
    let dil = c.int_list("dilations", sp)?;
    let pad = c.int_list("pad", sp)?;
    let pad_type = c.string("pad_type")?;
    // Treat 1-D as 2-D with height 1.
    let (ih, iw, kh, kw, sh, sw, dh, dw, ph, pw) = if sp == 1 {
        (
            1,
            xs[2],
            1,
            ws[2],
            1,
            strides_[0] as usize,
            1,
            dil[0] as usize,
            (0, 0),
            (pad[0] as usize, pad[1] as usize),
        )
    } else {
        (
            xs[2],
            xs[3],
            ws[2],
            ws[3],
            strides_[0] as usize,
            strides_[1] as usize,
            dil[0] as usize,
            dil[1] as usize,
            (pad[0] as usize, pad[1] as usize),
            (pad[2] as usize, pad[3] as usize),
        )
    };
    let gh = dims::conv_dim(ih, kh, sh, dh, &pad_type, ph)?;
    let gw = dims::conv_dim(iw, kw, sw, dw, &pad_type, pw)?;
    let (oh, ow) = (gh.out, gw.out);
    let (ip, op) = (ih * iw, oh * ow);
    let kk = cin_g * kh * kw;
    if out.len() != n * cout * op {
        return Err(format!(
            "conv output holds {} values, not {}",
            out.len(),
            n * cout * op
        ));
    }
    let pointwise = kh == 1
        && kw == 1
        && sh == 1
        && sw == 1
        && gh.pad_before == 0
        && gw.pad_before == 0
        && op == ip;
    // An fp16 weight kept as fp16 feeds the pointwise product as it is; other convs widen it.
    let widened: Vec<f32>;
    let wv: &[f32] = match half {
        Some(h) if !pointwise => {
            widened = h.to_f32();
            &widened
        }
        Some(_) => &[],
        None => c.f32s("weight")?,
    };
    let mut col = if pointwise {
        Vec::new()
    } else {
        vec![0f32; kk * op]
    };
    // Trailing padding: a pointwise conv over a sequence's tokens computes the first `live`
    // columns and repeats the last of them over the rest (finite, sane values that the masks keep
    // out of every real token's result).
    let live = match c.tokens {
        Some((s, l)) if pointwise && n == 1 && ih == 1 && iw == s && l < s => l,
        _ => op,
    };
    // A pointwise conv's `rows` channels × its first `live` tokens, rows `ip` apart.
    let cols = |rows| Mat {
        rows,
        cols: live,
        rs: ip,
        cs: 1,
    };
    for b in 0..n {
        for gi in 0..g {
            let xg = &xv[(b * cin + gi * cin_g) * ip..(b * cin + (gi + 1) * cin_g) * ip];
            let og = &mut out[(b * cout + gi * cout_g) * op..(b * cout + (gi + 1) * cout_g) * op];
            if let (true, Some(h)) = (pointwise, half) {
                let wg = &h.bytes()[2 * gi * cout_g * kk..2 * (gi + 1) * cout_g * kk];
                gemm_f16(wg, cout_g, cin_g, xg, cols(cin_g), og, cols(cout_g), true);
                repeat_last_column(og, op, live);
                continue;
            }
            let wg = &wv[gi * cout_g * kk..(gi + 1) * cout_g * kk];
            if pointwise {
                // The ANE "linear": W (Cout×Cin) · X (Cin×S).
                gemm(
                    wg,
                    Mat::row_major(cout_g, cin_g),
                    xg,
                    cols(cin_g),
                    og,
                    cols(cout_g),
                );
                repeat_last_column(og, op, live);
                continue;
            }
            for ci in 0..cin_g {
                for ky in 0..kh {
                    for kx in 0..kw {
                        let row = &mut col[((ci * kh + ky) * kw + kx) * op..][..op];
                        for oy in 0..oh {
                            let y = (oy * sh + ky * dh) as isize - gh.pad_before as isize;
                            for ox in 0..ow {
                                let xx = (ox * sw + kx * dw) as isize - gw.pad_before as isize;
                                row[oy * ow + ox] =
                                    if y >= 0 && (y as usize) < ih && xx >= 0 && (xx as usize) < iw
                                    {
                                        xg[ci * ip + y as usize * iw + xx as usize]
                                    } else {
                                        0.0
                                    };
                            }
                        }
                    }
                }
            }
            gemm(
                wg,
                Mat::row_major(cout_g, kk),
                &col,
                Mat::row_major(kk, op),
                og,
                Mat::row_major(cout_g, op),
            );
        }
    }
    if c.has("bias") {
        add_bias(out, c.f32s("bias")?, cout, op);
    }
    Ok(())
}

pub fn linear(c: &Ctx) -> OpResult {
    let (x, xv) = (c.t("x")?, c.f32s("x")?);
    let ws = c.shape("weight")?;
    let (din, dout) = (ws[1], ws[0]);
    let m = xv.len() / din.max(1);
    let mut out = c.zeros(m * dout);
    if let Some(h) = c.half("weight") {
        let (xm, om) = (Mat::row_major(m, din), Mat::row_major(m, dout));
        gemm_f16(h.bytes(), dout, din, xv, xm, &mut out, om, false);
    } else {
        let wv = c.f32s("weight")?;
        gemm(
            xv,
            Mat::row_major(m, din),
            wv,
            Mat::row_major(dout, din).t(),
            &mut out,
            Mat::row_major(m, dout),
        );
    }
    if c.has("bias") {
        add_bias(&mut out, c.f32s("bias")?, dout, 1);
    }
    Ok(vec![float_out(x.dtype(), c.out_shape(0).to_vec(), out)?])
}

pub fn matmul(c: &Ctx) -> OpResult {
    let (x, y) = (c.t("x")?, c.t("y")?);
    let (xv, yv) = (c.f32s("x")?, c.f32s("y")?);
    let (tx, ty) = (c.boolean("transpose_x")?, c.boolean("transpose_y")?);
    let out_shape = c.out_shape(0).to_vec();
    let mut xs = x.shape().to_vec();
    let mut ys = y.shape().to_vec();
    if xs.len() == 1 {
        xs.insert(0, 1);
    }
    if ys.len() == 1 {
        ys.push(1);
    }
    let (xr, yr) = (xs.len(), ys.len());
    let xm = {
        let m = Mat::row_major(xs[xr - 2], xs[xr - 1]);
        if tx {
            m.t()
        } else {
            m
        }
    };
    let ym = {
        let m = Mat::row_major(ys[yr - 2], ys[yr - 1]);
        if ty {
            m.t()
        } else {
            m
        }
    };
    let (xb, yb) = (&xs[..xr - 2], &ys[..yr - 2]);
    let batch = dims::broadcast_shapes(xb, yb)?;
    let nb: usize = batch.iter().product();
    let (m, n) = (xm.rows, ym.cols);
    let mut out = c.zeros(nb * m * n);
    let bstrides = |sh: &[usize], mat: usize| {
        let s = strides(sh);
        let pad = batch.len() - sh.len();
        (0..batch.len())
            .map(|i| {
                if i < pad || sh[i - pad] == 1 {
                    0
                } else {
                    s[i - pad] * mat
                }
            })
            .collect::<Vec<_>>()
    };
    let (sx, sy) = (
        bstrides(xb, xs[xr - 2] * xs[xr - 1]),
        bstrides(yb, ys[yr - 2] * ys[yr - 1]),
    );
    let bst = strides(&batch);
    let offsets: Vec<(usize, usize)> = (0..nb)
        .map(|i| {
            let (mut ox, mut oy) = (0, 0);
            for d in 0..batch.len() {
                let idx = (i / bst[d]) % batch[d];
                ox += idx * sx[d];
                oy += idx * sy[d];
            }
            (ox, oy)
        })
        .collect();
    let run = |i: usize, dst: &mut [f32]| {
        let (ox, oy) = offsets[i];
        gemm(&xv[ox..], xm, &yv[oy..], ym, dst, Mat::row_major(m, n));
    };
    if nb > 1 && 2 * m * n * xm.cols < PAR_FLOPS {
        // Many small products (e.g. attention heads): parallel over the batch.
        use rayon::prelude::*;
        out.par_chunks_mut((m * n).max(1))
            .enumerate()
            .for_each(|(i, dst)| run(i, dst));
    } else {
        for (i, dst) in out.chunks_mut((m * n).max(1)).enumerate() {
            run(i, dst);
        }
    }
    Ok(vec![float_out(x.dtype(), out_shape, out)?])
}

pub fn einsum(c: &Ctx) -> OpResult {
    let vals = c.list("values")?;
    let [a, b] = vals else {
        return Err("einsum takes exactly two values".into());
    };
    let eq = c.string("equation")?;
    let p = dims::einsum_pattern(&eq)?;
    let av = a.as_f32().ok_or("einsum operands must be fp16/fp32")?;
    let bv = b.as_f32().ok_or("einsum operands must be fp16/fp32")?;
    let (asz, bsz) = (a.shape(), b.shape());
    let out_shape = c.out_shape(0).to_vec();
    // Normalize both patterns to rank 4 [N, C, H, W] · [N, W, H, U].
    let (a4, b4): ([usize; 4], [usize; 4]) = match p {
        EinsumPattern::Rank4 => (
            [asz[0], asz[1], asz[2], asz[3]],
            [bsz[0], bsz[1], bsz[2], bsz[3]],
        ),
        EinsumPattern::Rank3 => ([1, asz[0], asz[1], asz[2]], [1, bsz[0], bsz[1], bsz[2]]),
    };
    let (nn, hh) = (a4[0].max(b4[0]), a4[2].max(b4[2]));
    let (cc, ww, uu) = (a4[1], a4[3], b4[3]);
    let mut out = c.zeros(nn * cc * hh * uu);
    for n in 0..nn {
        for h in 0..hh {
            let (an, ah) = (
                if a4[0] == 1 { 0 } else { n },
                if a4[2] == 1 { 0 } else { h },
            );
            let (bn, bh) = (
                if b4[0] == 1 { 0 } else { n },
                if b4[2] == 1 { 0 } else { h },
            );
            let aoff = an * cc * a4[2] * ww + ah * ww;
            let boff = bn * ww * b4[2] * uu + bh * uu;
            let ooff = n * cc * hh * uu + h * uu;
            let am = Mat {
                rows: cc,
                cols: ww,
                rs: a4[2] * ww,
                cs: 1,
            };
            let bm = Mat {
                rows: ww,
                cols: uu,
                rs: b4[2] * uu,
                cs: 1,
            };
            let om = Mat {
                rows: cc,
                cols: uu,
                rs: hh * uu,
                cs: 1,
            };
            gemm(&av[aoff..], am, &bv[boff..], bm, &mut out[ooff..], om);
        }
    }
    Ok(vec![float_out(a.dtype(), out_shape, out)?])
}
