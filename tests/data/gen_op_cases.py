"""Generates tests/data/op_cases.json: per-op inputs and numpy-computed expected outputs for the
CPU backend's op tests. Run once by a developer (numpy only); the JSON is checked in so the Rust
tests need no Python.  python3 tests/data/gen_op_cases.py
"""
import json
import math
import os

import numpy as np

rng = np.random.default_rng(1234)
CASES = []
F16 = np.float16


def enc(a):
    a = np.asarray(a)
    if a.dtype == np.bool_:
        dt, data = "bool", [bool(x) for x in a.ravel()]
    elif a.dtype.kind in "iu":
        dt, data = "int32", [int(x) for x in a.ravel()]
    else:
        dt = "fp16" if a.dtype == F16 else "fp32"
        data = [(("inf" if x > 0 else "-inf") if math.isinf(x) else "nan" if math.isnan(x) else float(x)) for x in a.astype(np.float64).ravel()]
    return {"dtype": dt, "shape": list(a.shape), "data": data}


def case(name, op, inputs, params, outputs, precision="f32", atol=1e-5, rtol=1e-5):
    CASES.append({
        "name": name, "op": op, "precision": precision, "atol": atol, "rtol": rtol,
        "inputs": {k: enc(v) for k, v in inputs.items()},
        "params": {k: (v if isinstance(v, str) else enc(v)) for k, v in params.items()},
        "outputs": [enc(o) for o in outputs],
    })


def r(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


i32 = lambda v: np.array(v, dtype=np.int32)
b = lambda v: np.array(v, dtype=np.bool_)

# ---- conv -------------------------------------------------------------------------------------
x, w, bias = r(1, 6, 1, 10), r(4, 6, 1, 1), r(4)
case("conv_1x1_bias", "conv", {"x": x}, {"weight": w, "bias": bias}, [np.einsum("oc,ncs->nos", w[:, :, 0, 0], x[:, :, 0, :])[:, :, None, :] + bias[None, :, None, None]])


def conv2d(x, w, stride, pad, dil, groups):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[1]), (pad[2], pad[3])))
    oh = (xp.shape[2] - ((kh - 1) * dil[0] + 1)) // stride[0] + 1
    ow = (xp.shape[3] - ((kw - 1) * dil[1] + 1)) // stride[1] + 1
    out = np.zeros((n, o, oh, ow), np.float64)
    og = o // groups
    for g in range(groups):
        for oc in range(g * og, (g + 1) * og):
            for i in range(oh):
                for j in range(ow):
                    patch = xp[:, g * cg:(g + 1) * cg, i * stride[0]:i * stride[0] + (kh - 1) * dil[0] + 1:dil[0], j * stride[1]:j * stride[1] + (kw - 1) * dil[1] + 1:dil[1]]
                    out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3))
    return out.astype(np.float32)


x, w = r(2, 4, 7, 8), r(6, 2, 3, 2)
case("conv_general_groups_stride_dilation_pad", "conv", {"x": x}, {"weight": w, "strides": i32([2, 1]), "pad_type": "custom", "pad": i32([1, 2, 0, 1]), "dilations": i32([1, 2]), "groups": i32(2)},
     [conv2d(x, w, (2, 1), (1, 2, 0, 1), (1, 2), 2)], atol=1e-4)
x, w = r(1, 3, 7, 7), r(5, 3, 3, 3)
case("conv_same_stride2", "conv", {"x": x}, {"weight": w, "strides": i32([2, 2]), "pad_type": "same"}, [conv2d(x, w, (2, 2), (1, 1, 1, 1), (1, 1), 1)], atol=1e-4)
x, w = r(1, 3, 9), r(2, 3, 3)
case("conv_1d", "conv", {"x": x}, {"weight": w, "strides": i32([1]), "pad": i32([0, 0]), "dilations": i32([1])}, [conv2d(x[:, :, None, :], w[:, :, None, :], (1, 1), (0, 0, 0, 0), (1, 1), 1)[:, :, 0, :]], atol=1e-4)

# ---- linear / matmul / einsum ------------------------------------------------------------------
x, w, bias = r(2, 3, 5), r(4, 5), r(4)
case("linear", "linear", {"x": x}, {"weight": w, "bias": bias}, [x @ w.T + bias])
x, y = r(2, 1, 3, 4), r(3, 5, 4)
case("matmul_broadcast_transpose_y", "matmul", {"x": x, "y": y}, {"transpose_y": b(True)}, [x @ np.swapaxes(y, -1, -2)], atol=1e-5)
x, y = r(4, 3), r(4, 2)
case("matmul_transpose_x", "matmul", {"x": x, "y": y}, {"transpose_x": b(True)}, [x.T @ y])
x, y = r(3, 4), r(2, 4, 5)
case("matmul_rank2_rank3", "matmul", {"x": x, "y": y}, {}, [x @ y])
# split-einsum attention, both operand orders as the torch frontend emits them
k_h, q_h = r(1, 6, 1, 4), r(1, 4, 1, 5)
case("einsum_scores_k_q", "einsum", {"values_0": k_h, "values_1": q_h}, {"equation": "bkhc,bchq->bkhq"}, [np.einsum("bkhc,bchq->bkhq", k_h, q_h)])
v_h, w_h = r(1, 4, 1, 6), r(1, 6, 1, 5)
case("einsum_context_v_w", "einsum", {"values_0": v_h, "values_1": w_h}, {"equation": "bchk,bkhq->bchq"}, [np.einsum("bchk,bkhq->bchq", v_h, w_h)])
a3, b3 = r(3, 2, 4), r(4, 2, 5)
case("einsum_rank3", "einsum", {"values_0": a3, "values_1": b3}, {"equation": "chw,whu->chu"}, [np.einsum("chw,whu->chu", a3, b3)])
a4, b4 = r(2, 3, 1, 4), r(2, 4, 3, 5)
case("einsum_h_broadcast", "einsum", {"values_0": a4, "values_1": b4}, {"equation": "nchw,nwhu->nchu"}, [np.einsum("nchw,nwhu->nchu", np.broadcast_to(a4, (2, 3, 3, 4)), b4)])

# ---- elementwise binary ------------------------------------------------------------------------
x, y = r(2, 3, 4), r(3, 1)
xi, yi = i32([[-7, 7, 5], [9, -3, 0]]), i32([2, -2, 3])
for op, f in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("real_div", np.divide), ("maximum", np.maximum), ("minimum", np.minimum), ("floor_div", np.floor_divide)]:
    case(f"{op}_broadcast", op, {"x": x, "y": y}, {}, [f(x, y).astype(np.float32)])
xp = np.abs(r(2, 3)) + 0.5
case("pow", "pow", {"x": xp}, {"y": np.float32(1.7)}, [np.power(xp, np.float32(1.7))])
case("mod_float", "mod", {"x": x, "y": np.abs(y) + 0.5}, {}, [np.mod(x, np.abs(y) + 0.5).astype(np.float32)], atol=1e-5)
case("mod_int", "mod", {"x": xi, "y": i32([2, -2, 3])}, {}, [np.mod(xi, i32([2, -2, 3]))])
case("identity", "identity", {"x": x}, {}, [x])
case("add_int", "add", {"x": xi, "y": yi}, {}, [xi + yi])
case("floor_div_int", "floor_div", {"x": xi, "y": yi}, {}, [np.floor_divide(xi, yi)])
for op, f in [("equal", np.equal), ("not_equal", np.not_equal), ("less", np.less), ("less_equal", np.less_equal), ("greater", np.greater), ("greater_equal", np.greater_equal)]:
    xx, yy = np.round(r(3, 4)), np.round(r(4))
    case(op, op, {"x": xx, "y": yy}, {}, [f(xx, yy)])
p, q = b([[True, False, True], [False, False, True]]), b([True, True, False])
for op, f in [("logical_and", np.logical_and), ("logical_or", np.logical_or), ("logical_xor", np.logical_xor)]:
    case(op, op, {}, {"x": p, "y": q}, [f(p, q)])
case("logical_not", "logical_not", {}, {"x": p}, [np.logical_not(p)])
c, a_, b_ = b([[True], [False]]), r(2, 3), r(3)
case("select", "select", {"a": a_, "b": b_}, {"cond": c}, [np.where(c, a_, b_)])

# ---- unary -------------------------------------------------------------------------------------
x = r(3, 5, scale=2.0)
pos = np.abs(x) + 0.1
erf = np.vectorize(math.erf)
sig = lambda v: 1 / (1 + np.exp(-v))
for op, inp, out in [
    ("sqrt", pos, np.sqrt(pos)), ("exp", x, np.exp(x)), ("erf", x, erf(x)), ("tanh", x, np.tanh(x)), ("sigmoid", x, sig(x)),
    ("sin", x, np.sin(x)), ("cos", x, np.cos(x)), ("abs", x, np.abs(x)), ("square", x, x * x), ("relu", x, np.maximum(x, 0)),
    ("silu", x, x * sig(x)), ("floor", x, np.floor(x)), ("ceil", x, np.ceil(x)), ("round", x * 2, np.round(x * 2)), ("sign", np.round(x), np.sign(np.round(x))),
]:
    case(op, op, {"x": inp}, {}, [np.asarray(out, np.float32)], atol=1e-5)
case("rsqrt_eps", "rsqrt", {"x": pos}, {"epsilon": np.float32(0.5)}, [1 / np.sqrt(pos + 0.5)])
case("log_eps", "log", {"x": pos}, {"epsilon": np.float32(1e-3)}, [np.log(pos + 1e-3)])
case("inverse_eps", "inverse", {"x": pos}, {"epsilon": np.float32(0.0)}, [1 / pos])
case("clip", "clip", {"x": x}, {"alpha": np.float32(-1.0), "beta": np.float32(0.5)}, [np.clip(x, -1, 0.5)])
case("gelu_exact", "gelu", {"x": x}, {"mode": "EXACT"}, [(0.5 * x * (1 + erf(x / math.sqrt(2)))).astype(np.float32)])
case("gelu_tanh", "gelu", {"x": x}, {"mode": "TANH_APPROXIMATION"}, [(0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))).astype(np.float32)])
case("gelu_sigmoid", "gelu", {"x": x}, {"mode": "SIGMOID_APPROXIMATION"}, [(x * sig(1.702 * x)).astype(np.float32)])

# ---- reductions, norms, softmax ----------------------------------------------------------------
x = r(2, 3, 4, 5)
for op, f in [("reduce_mean", np.mean), ("reduce_sum", np.sum), ("reduce_max", np.max), ("reduce_min", np.min), ("reduce_prod", np.prod)]:
    case(f"{op}_axis1", op, {"x": x}, {"axes": i32([1]), "keep_dims": b(True)}, [f(x, axis=1, keepdims=True)], atol=1e-5)
case("reduce_sum_nonadjacent", "reduce_sum", {"x": x}, {"axes": i32([0, 2]), "keep_dims": b(False)}, [x.sum(axis=(0, 2))], atol=1e-5)
case("reduce_mean_all", "reduce_mean", {"x": x}, {"keep_dims": b(False)}, [np.float32(x.mean())])
case("reduce_l2_norm", "reduce_l2_norm", {"x": x}, {"axes": i32([-1]), "keep_dims": b(False)}, [np.sqrt((x * x).sum(-1))])
case("reduce_sum_square", "reduce_sum_square", {"x": x}, {"axes": i32([1, 2]), "keep_dims": b(False)}, [(x * x).sum(axis=(1, 2))], atol=1e-5)
case("reduce_log_sum_exp", "reduce_log_sum_exp", {"x": x * 10}, {"axes": i32([3]), "keep_dims": b(False)}, [np.log(np.exp(x * 10).sum(3))], atol=1e-4)
case("reduce_argmin", "reduce_argmin", {"x": x}, {"axis": i32(-1), "keep_dims": b(True)}, [np.argmin(x, axis=-1)[..., None].astype(np.int32)])
case("reduce_l1_norm", "reduce_l1_norm", {"x": x}, {"axes": i32([0, 1]), "keep_dims": b(False)}, [np.abs(x).sum(axis=(0, 1))], atol=1e-5)
case("reduce_log_sum", "reduce_log_sum", {"x": np.abs(x) + 0.1}, {"axes": i32([2]), "keep_dims": b(False)}, [np.log((np.abs(x) + 0.1).sum(2))], atol=1e-5)
case("reduce_argmax", "reduce_argmax", {"x": x}, {"axis": i32(2), "keep_dims": b(False)}, [np.argmax(x, axis=2).astype(np.int32)])
x, g, be = r(1, 8, 1, 6), r(8), r(8)
m = x.mean(1, keepdims=True); v = ((x - m) ** 2).mean(1, keepdims=True)
case("layer_norm_bc1s_gamma_beta", "layer_norm", {"x": x}, {"axes": i32([1]), "gamma": g, "beta": be, "epsilon": np.float32(1e-5)}, [(x - m) / np.sqrt(v + 1e-5) * g[None, :, None, None] + be[None, :, None, None]], atol=1e-5)
x = r(3, 10)
m = x.mean(-1, keepdims=True); v = ((x - m) ** 2).mean(-1, keepdims=True)
case("layer_norm_last_axis", "layer_norm", {"x": x}, {"axes": i32([-1]), "epsilon": np.float32(1e-3)}, [(x - m) / np.sqrt(v + 1e-3)], atol=1e-5)
x = r(2, 5, 3)
e = np.exp(x - x.max(1, keepdims=True))
case("softmax_axis1", "softmax", {"x": x}, {"axis": i32(1)}, [e / e.sum(1, keepdims=True)])
e = np.exp(x - x.max(-1, keepdims=True))
case("softmax_last", "softmax", {"x": x}, {"axis": i32(-1)}, [e / e.sum(-1, keepdims=True)])

# ---- indexing and shape ------------------------------------------------------------------------
table, ids = r(4, 10), i32([[3, 0, 9, 3, 5]])
case("gather_embedding_axis1", "gather", {"x": table, "indices": ids}, {"axis": i32(1)}, [table[:, ids]])
x, idx = r(5, 3), i32([4, 0, 4])
case("gather_axis0", "gather", {"x": x, "indices": idx}, {"axis": i32(0)}, [x[idx]])
x, idx = r(3, 4), i32([[0, 3], [1, 1], [2, 0]])
case("gather_along_axis", "gather_along_axis", {"x": x, "indices": idx}, {"axis": i32(1)}, [np.take_along_axis(x, idx, 1)])
a_, b_ = r(1, 2, 1, 3), r(1, 4, 1, 3)
case("concat_channels", "concat", {"values_0": a_, "values_1": b_}, {"axis": i32(1)}, [np.concatenate([a_, b_], 1)])
a_, b_ = r(2, 3), r(2, 3)
case("concat_interleave", "concat", {"values_0": a_, "values_1": b_}, {"axis": i32(0), "interleave": b(True)}, [np.stack([a_, b_], 1).reshape(4, 3)])
x = r(2, 6, 3)
case("split_num", "split", {"x": x}, {"axis": i32(1), "num_splits": i32(3)}, list(np.split(x, 3, axis=1)))
case("split_sizes", "split", {"x": x}, {"axis": i32(1), "split_sizes": i32([1, 5])}, [x[:, :1], x[:, 1:]])
x = r(4, 6, 5)
case("slice_by_index_stride_masks", "slice_by_index", {"x": x}, {"begin": i32([1, 0, 4]), "end": i32([4, 5, 0]), "stride": i32([2, 1, -2]), "begin_mask": b([False, True, False]), "end_mask": b([False, False, True])}, [x[1:4:2, :5, 4::-2]])
case("slice_by_index_squeeze_negative", "slice_by_index", {"x": x}, {"begin": i32([-1, 1, 0]), "end": i32([0, -1, 5]), "squeeze_mask": b([True, False, False])}, [x[-1, 1:-1, 0:5]])
case("slice_by_size", "slice_by_size", {"x": x}, {"begin": i32([1, 2, 0]), "size": i32([2, -1, 3])}, [x[1:3, 2:, 0:3]])
case("reshape_infer", "reshape", {"x": x}, {"shape": i32([2, -1, 5])}, [x.reshape(2, -1, 5)])
case("transpose", "transpose", {"x": x}, {"perm": i32([2, 0, 1])}, [x.transpose(2, 0, 1)])
case("expand_dims", "expand_dims", {"x": x}, {"axes": i32([0, -1])}, [x[None, ..., None]])
x1 = r(1, 3, 1, 2)
case("squeeze", "squeeze", {"x": x1}, {"axes": i32([0, 2])}, [x1[0, :, 0, :]])
xf = r(2, 3, scale=3.0)
case("cast_fp32_int32", "cast", {"x": xf}, {"dtype": "int32"}, [np.trunc(xf).astype(np.int32)])
xi = i32([[-3, 0, 7]])
case("cast_int32_fp32", "cast", {"x": xi}, {"dtype": "fp32"}, [xi.astype(np.float32)])
case("cast_bool_fp32", "cast", {}, {"x": p, "dtype": "fp32"}, [p.astype(np.float32)])
case("range_1d", "range_1d", {}, {"end": i32(10), "start": i32(1), "step": i32(3)}, [np.arange(1, 10, 3, dtype=np.int32)])
case("range_1d_float", "range_1d", {}, {"end": np.float32(2.0), "start": np.float32(0.0), "step": np.float32(0.5)}, [np.arange(0, 2, 0.5, dtype=np.float32)])
case("fill", "fill", {}, {"shape": i32([2, 3]), "value": np.float32(-2.5)}, [np.full((2, 3), -2.5, np.float32)])
x = np.ones((1, 6, 6), np.float32)
m, n = np.indices((6, 6))
case("band_part_window", "band_part", {"x": x}, {"lower": i32(2), "upper": i32(1)}, [np.where(((m - n) <= 2) & ((n - m) <= 1), 1.0, 0.0).astype(np.float32)[None]])
x = r(2, 3)
case("tile", "tile", {"x": x}, {"reps": i32([2, 3])}, [np.tile(x, (2, 3))])
x = r(3, 7)
ix = np.argsort(-x, axis=1, kind="stable")[:, :3]
case("topk_desc", "topk", {"x": x}, {"k": i32(3), "axis": i32(-1)}, [np.take_along_axis(x, ix, 1), ix.astype(np.int32)])
ix = np.argsort(x, axis=0, kind="stable")[:2]
case("topk_asc_axis0", "topk", {"x": x}, {"k": i32(2), "axis": i32(0), "ascending": b(True)}, [np.take_along_axis(x, ix, 0), ix.astype(np.int32)])
x = r(2, 5)
case("cumsum", "cumsum", {"x": x}, {"axis": i32(1)}, [np.cumsum(x, 1)])
case("cumsum_exclusive_reverse", "cumsum", {"x": x}, {"axis": i32(1), "exclusive": b(True), "reverse": b(True)}, [np.concatenate([np.cumsum(x[:, ::-1], 1)[:, ::-1][:, 1:], np.zeros((2, 1), np.float32)], 1)])

# ---- fp16 ANE simulation -----------------------------------------------------------------------
h = lambda a: np.asarray(a, np.float32).astype(F16)
x, y = h([[60000.0, -60000.0, 1.0, 0.1]]), h([[10000.0, -10000.0, 2.0 ** -11, 0.2]])
with np.errstate(over="ignore"):
    case("fp16_add_overflow_and_rounding", "add", {"x": x, "y": y}, {}, [(x + y)], precision="fp16-ane", atol=0, rtol=0)
    x = h(r(3, 4, scale=3.0)); y = h(r(3, 4, scale=3.0))
    case("fp16_mul_rounding", "mul", {"x": x, "y": y}, {}, [(x.astype(np.float32) * y.astype(np.float32)).astype(F16)], precision="fp16-ane", atol=0, rtol=0)
    a_, b_ = h(r(3, 64, scale=4.0)), h(r(64, 5, scale=4.0))
    case("fp16_matmul_f32_accumulate", "matmul", {"x": a_, "y": b_}, {}, [(a_.astype(np.float32) @ b_.astype(np.float32)).astype(F16)], precision="fp16-ane", atol=0, rtol=2e-3)
    x = h(r(2, 6, scale=3.0))
    e = np.exp(x.astype(np.float32) - x.astype(np.float32).max(1, keepdims=True)).astype(F16).astype(np.float32)
    case("fp16_softmax", "softmax", {"x": x}, {"axis": i32(1)}, [(e / e.sum(1, keepdims=True)).astype(F16)], precision="fp16-ane", atol=1e-3, rtol=0)


def ln_fp16(x, eps):
    x = x.astype(np.float32)
    m = x.mean(1, keepdims=True).astype(F16).astype(np.float32)
    d = (x - m).astype(F16).astype(np.float32)
    with np.errstate(over="ignore"):
        sq = (d * d).astype(F16).astype(np.float32)
    var = (sq.sum(1, keepdims=True) / x.shape[1]).astype(F16).astype(np.float32)
    rs = (1.0 / np.sqrt(var + np.float32(F16(eps)))).astype(F16).astype(np.float32)
    return (d * rs).astype(F16)


# channel 0 of token 1 carries 400: |x - mu| > 256, (x - mu)^2 overflows fp16, the token normalizes to 0
x = h(r(1, 8, 1, 3))
x[0, 0, 0, 1] = F16(400.0)
out = ln_fp16(x, 1e-5)
assert np.all(out[0, :, 0, 1] == 0), "the overflow case must collapse token 1"
case("fp16_layer_norm_overflow", "layer_norm", {"x": x}, {"axes": i32([1]), "epsilon": F16(1e-5)}, [out], precision="fp16-ane", atol=2e-3, rtol=0)
# same input in f32: no collapse
xf = x.astype(np.float32); m = xf.mean(1, keepdims=True); v = ((xf - m) ** 2).mean(1, keepdims=True)
case("f32_layer_norm_no_overflow", "layer_norm", {"x": xf}, {"axes": i32([1]), "epsilon": np.float32(1e-5)}, [(xf - m) / np.sqrt(v + 1e-5)], atol=1e-5)
x = h([[300.0, -300.0, 10.0]])
case("fp16_reduce_l2_norm_overflow_safe", "reduce_l2_norm", {"x": x}, {"axes": i32([1]), "keep_dims": b(False)}, [np.sqrt((x.astype(np.float32) ** 2).sum(1)).astype(F16)], precision="fp16-ane", atol=0, rtol=1e-3)
with np.errstate(over="ignore"):
    case("fp16_reduce_sum_square_overflows", "reduce_sum_square", {"x": x}, {"axes": i32([1]), "keep_dims": b(False)}, [np.array([np.inf], F16)], precision="fp16-ane", atol=0, rtol=0)

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "op_cases.json")
with open(out, "w") as f:
    json.dump({"generator": "tests/data/gen_op_cases.py", "numpy": np.__version__, "cases": CASES}, f, separators=(",", ":"))
print(f"{len(CASES)} cases -> {out}")
