"""qscope's FP32 / W8A8 / W4 kernels against ONNX Runtime FP32 and static INT8,
run back to back (alternating, best of R rounds) so machine noise hits both
alike. Prints a markdown table of ratios.

    $HOME/.ortref/bin/python benches/compare_ort.py --data ../shared/data/cifar10 \
        --ort ../shared/bench/ort_reference.py --rounds 2 \
        resnet20=path/fp32.safetensors,path/w8a8.safetensors,path/w4.safetensors ...

Each model argument is `name=fp32,w8a8,w4` (files from `qscope quantize --out`).
`--avx2` runs qscope's AVX2 kernels (what AVX2-only CPUs get) on an AVX-512
machine; ONNX Runtime cannot be forced, so read the "vs own FP32" column then."""
import argparse, json, subprocess, sys

ap = argparse.ArgumentParser()
ap.add_argument("--data", required=True)
ap.add_argument("--ort", required=True)
ap.add_argument("--qscope", default="target/release/qscope")
ap.add_argument("--rounds", type=int, default=2)
ap.add_argument("--batch", type=int, default=256)
ap.add_argument("--threads", default="1,2")
ap.add_argument("--avx2", action="store_true", help="qscope bench --avx2 (ONNX Runtime unchanged)")
ap.add_argument("models", nargs="+")
a = ap.parse_args()


def qscope(path, threads):
    out = subprocess.run([a.qscope, "bench", "--model", path, "--threads", str(threads), "--batch", str(a.batch),
                          "--seconds", "1.5", "--json"] + (["--avx2"] if a.avx2 else []), check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    return r["images_per_s"], r["latency_ms_median"], r["gflops"], r["path"], r.get("weight_bytes", 0)


def ort(path, threads):
    out = subprocess.run([sys.executable, a.ort, "--model", path, "--data", a.data, "--threads", str(threads),
                          "--batch", str(a.batch), "--int8"], check=True, capture_output=True, text=True).stdout
    rows = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    return {r["precision"]: (r["images_per_s"], r["latency_ms_median"]) for r in rows}


def best(a_, b):
    return b if a_ is None else (max(a_[0], b[0]), min(a_[1], b[1])) + tuple(b[2:])


print(f"| model | threads | engine | images/s (batch {a.batch}) | batch-1 ms | vs ORT FP32 (thr / lat) | vs ORT INT8 (thr / lat) | vs own FP32 (thr / lat) | GFLOP/s | weights held MiB | kernels |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for spec in a.models:
    name, files = spec.split("=")
    fp32, w8, w4 = files.split(",")
    for threads in [int(t) for t in a.threads.split(",")]:
        res = {}
        for _ in range(a.rounds):
            for key, path in [("qscope fp32", fp32), ("qscope w8a8", w8), ("qscope w4", w4)]:
                res[key] = best(res.get(key), qscope(path, threads))
            o = ort(fp32, threads)
            res["ORT fp32"] = best(res.get("ORT fp32"), o["fp32"])
            res["ORT int8"] = best(res.get("ORT int8"), o["int8"])
        f, i8, own = res["ORT fp32"], res["ORT int8"], res["qscope fp32"]
        for key, r in res.items():
            gf = f"{r[2]:.0f}" if len(r) > 2 else ""
            kernels = r[3].split(";")[0] if len(r) > 3 else ""
            held = f"{r[4] / 2**20:.2f}" if len(r) > 4 else ""
            print(f"| {name} | {threads} | {key} | {r[0]:.0f} | {r[1]:.3f} | {r[0] / f[0]:.2f}× / {f[1] / r[1]:.2f}× "
                  f"| {r[0] / i8[0]:.2f}× / {i8[1] / r[1]:.2f}× | {r[0] / own[0]:.2f}× / {own[1] / r[1]:.2f}× "
                  f"| {gf} | {held} | {kernels} |", flush=True)
