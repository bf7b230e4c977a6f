"""ONNX Runtime FP32 (or, with --int8, static INT8) latency and throughput of a torchvision-style VGG
stored as safetensors (`features.N` convs with optional BatchNorm, folded;
`classifier.N` linears), for comparing `qscope bench` on the same file.
Pools are placed from the index gaps as qscope does; the input size comes
from the map the classifier reads (7×7 → 224).

    $HOME/.ortref/bin/python benches/ort_vgg.py --model vgg11.safetensors \
        --threads 2 --batch 16

`--int8` quantizes the graph statically first, as `ort_reference.py --int8`
does for ResNets (QDQ, per-channel int8 weights, uint8 activations, MinMax),
calibrated on random inputs: for timing only, its accuracy means nothing.

`--check tests/fixtures/vgg_bn_io.safetensors` (with the fixture's model)
first compares the ONNX graph's logits with the numpy reference's.

Prints one JSON line: latency_ms_median (batch 1), images_per_s (batch N)."""
import argparse, json, os, re, tempfile, time
import numpy as np
import onnx, onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--seconds", type=float, default=3.0)
ap.add_argument("--int8", action="store_true", help="static INT8 (QDQ) instead of FP32")
ap.add_argument("--check", help="safetensors with `input` and `logits` (tests/fixtures/vgg_bn_io.safetensors)")
a = ap.parse_args()

p = {k.removeprefix("module."): v.astype(np.float32) for k, v in load_file(a.model).items()
     if v.dtype != np.int64}
convs = sorted(int(m.group(1)) for k, v in p.items()
               for m in [re.match(r"features\.(\d+)\.weight$", k)] if m and v.ndim == 4)
nodes, inits = [], []


def const(name, arr):
    inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
    return name


x, nxt, pools = "input", 0, 0
for i in convs:
    for q in range(nxt, i):
        nodes.append(helper.make_node("MaxPool", [x], [f"pool{q}"], kernel_shape=[2, 2], strides=[2, 2]))
        x, pools = f"pool{q}", pools + 1
    w, b = p[f"features.{i}.weight"], p.get(f"features.{i}.bias", np.zeros(p[f"features.{i}.weight"].shape[0], np.float32))
    relu_at = i + 1
    if f"features.{i+1}.running_mean" in p:
        g, be, m, v = (p[f"features.{i+1}.{s}"] for s in ("weight", "bias", "running_mean", "running_var"))
        sc = g / np.sqrt(v + 1e-5)
        w, b = w * sc[:, None, None, None], (b - m) * sc + be
        relu_at = i + 2
    k = w.shape[-1]
    nodes.append(helper.make_node("Conv", [x, const(f"w{i}", w), const(f"b{i}", b)], [f"c{i}"],
                                  kernel_shape=[k, k], pads=[k // 2] * 4))
    nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
    x, nxt = f"r{i}", relu_at + 1
nodes.append(helper.make_node("MaxPool", [x], ["poolend"], kernel_shape=[2, 2], strides=[2, 2]))
x, pools = "poolend", pools + 1
heads = sorted(int(m.group(1)) for k in p for m in [re.match(r"classifier\.(\d+)\.weight$", k)] if m)
names = [f"classifier.{j}" for j in heads] or ["classifier"]
cin = p[names[0] + ".weight"].shape[1]
c = p[f"features.{convs[-1]}.weight"].shape[0]
side = int(round((cin / c) ** 0.5))
size = 224 if side == 7 else (32 if side == 1 else side * 2 ** pools)
if side == 1 and size // 2 ** pools != 1:
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    x = "gap"
nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
x = "flat"
for n, h in enumerate(names):
    nodes.append(helper.make_node("Gemm", [x, const(h + "_W", p[h + ".weight"]), const(h + "_B", p[h + ".bias"])],
                                  [h + "_y"], transB=1))
    x = h + "_y"
    if n + 1 < len(names):
        nodes.append(helper.make_node("Relu", [x], [h + "_r"]))
        x = h + "_r"
graph = helper.make_graph(nodes, "vgg", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", None])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "fp32.onnx")
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="fp32.data")
    if a.int8:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
        rng = np.random.default_rng(1)

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter([{"input": rng.standard_normal((2, 3, size, size), dtype=np.float32)}
                                for _ in range(4)])

            def get_next(self):
                return next(self.it, None)

        pre, int8 = os.path.join(tmp, "pre.onnx"), os.path.join(tmp, "int8.onnx")
        quant_pre_process(path, pre, skip_symbolic_shape=True, save_as_external_data=True,
                          all_tensors_to_one_file=True, external_data_location="pre.data")
        quantize_static(pre, int8, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, use_external_data_format=True)
        path = int8
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def timed(batch):
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    s.run(None, {"input": x})
    times, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < a.seconds or len(times) < 3:
        t = time.perf_counter()
        s.run(None, {"input": x})
        times.append(time.perf_counter() - t)
    return float(np.median(times))


if a.check:
    io = load_file(a.check)
    got = s.run(None, {"input": io["input"]})[0]
    err = float(np.abs(got - io["logits"]).max() / np.abs(io["logits"]).max())
    assert err < 1e-4, f"ONNX graph differs from the reference logits by {err}"
lat = timed(1)
thr = a.batch / timed(a.batch)
print(json.dumps({"engine": "ort int8" if a.int8 else "ort fp32", "model": a.model, "input": size, "threads": a.threads,
                  "latency_ms_median": lat * 1e3, "batch": a.batch, "images_per_s": thr}))
