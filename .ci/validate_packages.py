"""Validate every .mlpackage under the given directories with coremltools (docs/coreml-format.md §8).

For each package:
  1. ModelPackage.isValid + manifest items (libmodelpackage)
  2. ct.utils.load_spec (Apple's generated protobuf classes parse it)
  3. ct.models.MLModel(path, skip_model_load=True) finds the weights dir
  4. milproto -> pymil load (re-runs type inference against every declared output type)
  5. prog.validate()
  6. weight.bin byte-equality: every blob our writer stored is re-written with coremltools' own
     _BlobStorageWriter, in file order, and the two files must be identical.
Exit status is non-zero if any package fails.
"""
import glob
import os
import sys
import tempfile
import traceback

import coremltools as ct
from coremltools.libmodelpackage import ModelPackage
from coremltools.libmilstoragepython import _BlobStorageReader, _BlobStorageWriter
from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

# blob dtype code -> (reader method, writer method); arrays are passed through as the reader
# returns them (fp16 comes back as its uint16 bit patterns).
BLOB = {
    1: ("read_fp16_data", "write_fp16_data"),
    2: ("read_float_data", "write_float_data"),
    3: ("read_uint8_data", "write_uint8_data"),
    4: ("read_int8_data", "write_int8_data"),
    6: ("read_int16_data", "write_int16_data"),
    7: ("read_uint16_data", "write_uint16_data"),
    8: ("read_int4_data", "write_int4_data"),
    9: ("read_uint1_data", "write_uint1_data"),
    10: ("read_uint2_data", "write_uint2_data"),
    11: ("read_uint4_data", "write_uint4_data"),
    12: ("read_uint3_data", "write_uint3_data"),
    13: ("read_uint6_data", "write_uint6_data"),
    14: ("read_int32_data", "write_int32_data"),
    15: ("read_uint32_data", "write_uint32_data"),
}


def blob_offsets(path):
    """(metadata offset, dtype code) of every blob, walking the file as Core ML's reader does."""
    data = open(path, "rb").read()
    count = int.from_bytes(data[0:4], "little")
    out, off = [], 64
    for _ in range(count):
        code = int.from_bytes(data[off + 4 : off + 8], "little")
        size = int.from_bytes(data[off + 8 : off + 16], "little")
        out.append((off, code))
        off = (off + 64 + size + 63) // 64 * 64
    return data, out


def check_weight_bytes(wpath):
    data, blobs = blob_offsets(wpath)
    reader = _BlobStorageReader(wpath)
    with tempfile.TemporaryDirectory() as tmp:
        ref = os.path.join(tmp, "weight.bin")
        writer = _BlobStorageWriter(ref)
        for off, code in blobs:
            if code not in BLOB:
                raise AssertionError(f"blob at {off}: dtype code {code} not checked by this script")
            rd, wr = BLOB[code]
            arr = getattr(reader, rd)(off)
            new_off = getattr(writer, wr)(arr)
            if new_off != off:
                raise AssertionError(f"blob offset {off} != coremltools offset {new_off}")
        del writer
        ours, theirs = data, open(ref, "rb").read()
        if ours != theirs:
            first = next(i for i in range(min(len(ours), len(theirs))) if ours[i] != theirs[i]) if len(ours) == len(theirs) else min(len(ours), len(theirs))
            raise AssertionError(f"weight.bin differs from coremltools' writer at byte {first} (ours {len(ours)} B, theirs {len(theirs)} B)")
    return len(blobs)


def validate(pkg):
    assert ModelPackage.isValid(pkg), "ModelPackage.isValid is false"
    mp = ModelPackage(pkg)
    root = mp.getRootModel().path()
    assert os.path.exists(root), root
    spec = ct.utils.load_spec(pkg)
    model = ct.models.MLModel(pkg, skip_model_load=True)
    wdir = model.weights_dir
    functions = list(spec.mlProgram.functions.keys())
    # Every function at once (milproto loads them all), each re-typed against its declarations.
    prog = milproto_load(spec, specification_version=spec.specificationVersion, file_weights_dir=wdir)
    prog.validate()
    assert sorted(prog.functions.keys()) == sorted(functions), (prog.functions.keys(), functions)
    n_ops = sum(len(f.operations) for f in prog.functions.values())
    desc = spec.description
    if len(functions) > 1:
        # Multifunction: spec 9, a description per function with the program's inputs, and a
        # default that exists.
        assert spec.specificationVersion >= 9, "multifunction needs spec 9"
        assert desc.defaultFunctionName in functions, desc.defaultFunctionName
        described = {f.name: f for f in desc.functions}
        assert sorted(described) == sorted(functions), (sorted(described), functions)
        for name in functions:
            want = [i.name for i in spec.mlProgram.functions[name].inputs]
            got = [i.name for i in described[name].input]
            assert want == got, (name, want, got)
            assert len(described[name].output) > 0, name
    nblobs = 0
    wfile = os.path.join(wdir, "weight.bin") if wdir else None
    if wfile and os.path.exists(wfile):
        nblobs = check_weight_bytes(wfile)
    return f"spec {spec.specificationVersion}, functions {functions}, {n_ops} ops, {nblobs} blobs"


def main():
    roots = sys.argv[1:] or ["target/anebert-packages"]
    pkgs = sorted(p for r in roots for p in glob.glob(os.path.join(r, "**", "*.mlpackage"), recursive=True))
    if not pkgs:
        print(f"no .mlpackage found under {roots}")
        return 1
    failed = 0
    for p in pkgs:
        try:
            print(f"ok   {p}: {validate(p)}")
        except Exception as e:  # report every failure, then fail
            failed += 1
            print(f"FAIL {p}: {type(e).__name__}: {e}")
            traceback.print_exc(limit=3)
    print(f"coremltools validation: {len(pkgs)} packages, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
