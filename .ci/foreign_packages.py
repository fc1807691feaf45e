"""The CPU backend runs packages it did not write: build programs with coremltools' own MIL builder,
convert them with ct.convert (no PyTorch needed), run them with `cargo anebert run`, and compare
with numpy.  usage: foreign_packages.py PATH/TO/cargo-anebert OUTDIR
"""
import math
import os
import subprocess
import sys

import numpy as np
import coremltools as ct
from coremltools.converters.mil.mil import Builder as mb
from safetensors.numpy import load_file, save_file

rng = np.random.default_rng(7)
r = lambda *s: rng.standard_normal(s).astype(np.float32)
CASES = []


def case(name, input_specs, inputs, expected, atol=1e-4, precision=ct.precision.FLOAT32):
    def deco(fn):
        prog = mb.program(input_specs=input_specs, opset_version=ct.target.iOS17)(fn)
        CASES.append((name, prog, inputs, expected, atol, precision))
        return fn
    return deco


W = r(4, 8, 1, 1); B = r(4)
X = r(1, 8, 1, 16)
case("conv_relu", [mb.TensorSpec(shape=(1, 8, 1, 16))], {"x": X},
     np.maximum(np.einsum("oc,ncs->nos", W[:, :, 0, 0], X[:, :, 0, :])[:, :, None, :] + B[None, :, None, None], 0))(
    lambda x: mb.relu(x=mb.conv(x=x, weight=W, bias=B)))

Q, K, V = r(1, 4, 1, 6), r(1, 6, 1, 4), r(1, 4, 1, 6)
s = np.einsum("bkhc,bchq->bkhq", K, Q); e = np.exp(s - s.max(1, keepdims=True)); p = e / e.sum(1, keepdims=True)
case("split_einsum_attention", [mb.TensorSpec(shape=(1, 4, 1, 6)), mb.TensorSpec(shape=(1, 6, 1, 4)), mb.TensorSpec(shape=(1, 4, 1, 6))],
     {"q": Q, "k": K, "v": V}, np.einsum("bchk,bkhq->bchq", V, p))(
    lambda q, k, v: mb.einsum(values=(v, mb.softmax(x=mb.einsum(values=(k, q), equation="bkhc,bchq->bkhq"), axis=1)), equation="bchk,bkhq->bchq"))

G, BE = r(8), r(8); XL = r(1, 8, 1, 5) * 3
m = XL.mean(1, keepdims=True); v = ((XL - m) ** 2).mean(1, keepdims=True)
case("layer_norm_bc1s", [mb.TensorSpec(shape=(1, 8, 1, 5))], {"x": XL},
     (XL - m) / np.sqrt(v + 1e-5) * G[None, :, None, None] + BE[None, :, None, None])(
    lambda x: mb.layer_norm(x=x, axes=[1], gamma=G, beta=BE, epsilon=1e-5))

T = r(10, 4); IDS = np.array([[3, 0, 9, 3, 7]], np.int32)
case("gather_embedding", [mb.TensorSpec(shape=(1, 5), dtype=ct.converters.mil.mil.types.int32)], {"ids": IDS}, T[IDS])(
    lambda ids: mb.gather(x=T, indices=ids, axis=0))

XS = r(4, 6, 5)
case("slicing_reshape_concat", [mb.TensorSpec(shape=(4, 6, 5))], {"x": XS},
     np.concatenate([XS[1:4:2, :5, ::2].reshape(2, -1), XS[0:2, 1:3, :].transpose(0, 2, 1).reshape(2, -1)], 1))(
    lambda x: mb.concat(values=[
        mb.reshape(x=mb.slice_by_index(x=x, begin=[1, 0, 0], end=[4, 5, 5], stride=[2, 1, 2]), shape=[2, -1]),
        mb.reshape(x=mb.transpose(x=mb.slice_by_size(x=x, begin=[0, 1, 0], size=[2, 2, -1]), perm=[0, 2, 1]), shape=[2, -1]),
    ], axis=1))

XR = r(2, 3, 4)
case("reductions", [mb.TensorSpec(shape=(2, 3, 4))], {"x": XR},
     XR.mean(1) + XR.sum(1) * 0.5 + XR.max(1) - np.sqrt((XR * XR).sum(1)))(
    lambda x: mb.sub(x=mb.add(x=mb.add(x=mb.reduce_mean(x=x, axes=[1]), y=mb.mul(x=mb.reduce_sum(x=x, axes=[1]), y=0.5)), y=mb.reduce_max(x=x, axes=[1])), y=mb.reduce_l2_norm(x=x, axes=[1])))

M = r(5, 3); XM = r(2, 5)
erf = np.vectorize(math.erf)
case("matmul_gelu", [mb.TensorSpec(shape=(2, 5))], {"x": XM}, 0.5 * (XM @ M) * (1 + erf((XM @ M) / math.sqrt(2))))(
    lambda x: mb.gelu(x=mb.matmul(x=x, y=M), mode="EXACT"))

case("layer_norm_fp16_compute", [mb.TensorSpec(shape=(1, 8, 1, 5))], {"x": XL},
     (XL - m) / np.sqrt(v + 1e-5) * G[None, :, None, None] + BE[None, :, None, None], atol=2e-2, precision=ct.precision.FLOAT16)(
    lambda x: mb.layer_norm(x=x, axes=[1], gamma=G, beta=BE, epsilon=1e-5))


# Compressed weights written by coremltools' own optimize passes (uniform palettes: k-means needs scikit-learn) (the constexpr_* ops in both
# serializations: iOS16/17 attributes, iOS18 inputs); expected = the conv over the weights
# coremltools itself decompresses.
OPT = ct.optimize.coreml
WC, XC = r(64, 32, 1, 1), r(1, 32, 1, 8)
COMPRESSED = [
    ("int8_affine_ios17", ct.target.iOS17, lambda m: OPT.linear_quantize_weights(m, OPT.OptimizationConfig(
        OPT.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=100)))),
    ("lut4_per_tensor_ios17", ct.target.iOS17, lambda m: OPT.palettize_weights(m, OPT.OptimizationConfig(
        OPT.OpPalettizerConfig(mode="uniform", nbits=4, weight_threshold=100)))),
    ("lut6_grouped_ios18", ct.target.iOS18, lambda m: OPT.palettize_weights(m, OPT.OptimizationConfig(
        OPT.OpPalettizerConfig(mode="uniform", nbits=6, granularity="per_grouped_channel", group_size=16, weight_threshold=100)))),
    ("lut3_grouped_ios18", ct.target.iOS18, lambda m: OPT.palettize_weights(m, OPT.OptimizationConfig(
        OPT.OpPalettizerConfig(mode="uniform", nbits=3, granularity="per_grouped_channel", group_size=8, weight_threshold=100)))),
    ("uint8_offset_ios18", ct.target.iOS18, lambda m: OPT.linear_quantize_weights(m, OPT.OptimizationConfig(
        OPT.OpLinearQuantizerConfig(mode="linear", dtype="uint8", weight_threshold=100)))),
    ("pruned_ios17", ct.target.iOS17, lambda m: OPT.prune_weights(m, OPT.OptimizationConfig(
        OPT.OpMagnitudePrunerConfig(target_sparsity=0.6, weight_threshold=100)))),
    ("pruned_ios18", ct.target.iOS18, lambda m: OPT.prune_weights(m, OPT.OptimizationConfig(
        OPT.OpMagnitudePrunerConfig(target_sparsity=0.6, weight_threshold=100)))),
    # Joint compression: pruned, then palettized / quantized (constexpr_lut_to_sparse and
    # constexpr_sparse_blockwise_shift_scale, each feeding a constexpr_sparse_to_dense).
    ("pruned_lut4_ios18", ct.target.iOS18, lambda m: OPT.palettize_weights(
        OPT.prune_weights(m, OPT.OptimizationConfig(OPT.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=100))),
        OPT.OptimizationConfig(OPT.OpPalettizerConfig(mode="uniform", nbits=4, weight_threshold=100)), joint_compression=True)),
    ("pruned_int8_ios18", ct.target.iOS18, lambda m: OPT.linear_quantize_weights(
        OPT.prune_weights(m, OPT.OptimizationConfig(OPT.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=100))),
        OPT.OptimizationConfig(OPT.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=100)), joint_compression=True)),
    ("int4_per_block_ios18", ct.target.iOS18, lambda m: OPT.linear_quantize_weights(m, OPT.OptimizationConfig(
        OPT.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=8, weight_threshold=100)))),
]


def compressed_models():
    for name, target, compress in COMPRESSED:
        prog = mb.program(input_specs=[mb.TensorSpec(shape=(1, 32, 1, 8))], opset_version=target)(
            lambda x: mb.conv(x=x, weight=WC))
        model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=target,
                           compute_precision=ct.precision.FLOAT32, skip_model_load=True)
        model = compress(model)
        ops = {op.op_type for op in model._mil_program.functions["main"].operations}
        assert any(o.startswith("constexpr_") for o in ops), f"{name}: not compressed ({ops})"
        dense = OPT.decompress_weights(model)
        w = dense._mil_program.functions["main"].find_ops(op_type="conv")[0].weight.val
        want = np.einsum("oc,ncs->nos", w[:, :, 0, 0].astype(np.float32), XC[:, :, 0, :])[:, :, None, :]
        yield name, model, {"x": XC}, want, 1e-4


def main():
    binary, outdir = sys.argv[1], sys.argv[2]
    os.makedirs(outdir, exist_ok=True)
    failed = 0
    converted = []
    for name, prog, inputs, expected, atol, precision in CASES:
        model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
                           compute_precision=precision, skip_model_load=True)
        converted.append((name, model, inputs, expected, atol))
    for name, model, inputs, expected, atol in converted + list(compressed_models()):
        pkg = os.path.join(outdir, f"{name}.mlpackage")
        model.save(pkg)
        out_name = model.get_spec().description.output[0].name
        fin, fout = os.path.join(outdir, f"{name}.in.safetensors"), os.path.join(outdir, f"{name}.out.safetensors")
        save_file(inputs, fin)
        res = subprocess.run([binary, "anebert", "run", "--package", pkg, "--inputs", fin, "--outputs", fout], capture_output=True, text=True)
        if res.returncode != 0:
            failed += 1
            print(f"FAIL {name}: cargo anebert run exited {res.returncode}: {res.stderr.strip()}")
            continue
        got = load_file(fout)[out_name]
        want = np.asarray(expected, np.float32)
        err = float(np.abs(got.reshape(want.shape) - want).max()) if got.size == want.size else float("inf")
        ok = got.size == want.size and err <= atol
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: max abs err {err:.2e} (atol {atol:g}), ops: {sorted(set(op.op_type for op in model._mil_program.functions['main'].operations)) if model._mil_program else ''}")
    print(f"foreign packages: {len(CASES) + len(COMPRESSED)} run, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
