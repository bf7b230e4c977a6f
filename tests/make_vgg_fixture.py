"""Writes tests/fixtures/vgg_bn.safetensors (a miniature torchvision-style
VGG with BatchNorm: features.{0,1,4,5,7,8} + classifier.{0,3,6}) and
tests/fixtures/vgg_bn_io.safetensors (an input batch and the logits a plain
numpy forward pass computes for it), the independent reference for
tests/model.rs. Run once with numpy and safetensors installed:

    python3 tests/make_vgg_fixture.py

The modules, as torchvision lists them: conv 3→8, BN, ReLU, max-pool,
conv 8→16, BN, ReLU, conv 16→16, BN, ReLU, max-pool; linear 16·4·4 → 32,
ReLU, dropout, linear 32 → 32, ReLU, dropout, linear 32 → 10. A 16×16 input
ends the features 4×4, the map the first linear reads (PyTorch flattens
channels first)."""
import numpy as np
from safetensors.numpy import save_file

rng = np.random.default_rng(7)
t = {}


def conv(i, cin, cout):
    t[f"features.{i}.weight"] = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (cin * 9))).astype(np.float32)
    t[f"features.{i}.bias"] = (rng.standard_normal(cout) * 0.1).astype(np.float32)


def bn(i, c):
    t[f"features.{i}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    t[f"features.{i}.bias"] = (rng.standard_normal(c) * 0.1).astype(np.float32)
    t[f"features.{i}.running_mean"] = (rng.standard_normal(c) * 0.1).astype(np.float32)
    t[f"features.{i}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)


def linear(j, fin, fout):
    t[f"classifier.{j}.weight"] = (rng.standard_normal((fout, fin)) * np.sqrt(2 / fin)).astype(np.float32)
    t[f"classifier.{j}.bias"] = (rng.standard_normal(fout) * 0.1).astype(np.float32)


conv(0, 3, 8); bn(1, 8)
conv(4, 8, 16); bn(5, 16)
conv(7, 16, 16); bn(8, 16)
linear(0, 16 * 4 * 4, 32); linear(3, 32, 32); linear(6, 32, 10)


def f_conv(x, i):
    w, b = t[f"features.{i}.weight"].astype(np.float64), t[f"features.{i}.bias"].astype(np.float64)
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h, wd))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, dy:dy + h, dx:dx + wd], w[:, :, dy, dx])
    return out + b[None, :, None, None]


def f_bn(x, i):
    g, be = t[f"features.{i}.weight"], t[f"features.{i}.bias"]
    m, v = t[f"features.{i}.running_mean"], t[f"features.{i}.running_var"]
    s = (g / np.sqrt(v.astype(np.float64) + 1e-5))[None, :, None, None]
    return (x - m[None, :, None, None]) * s + be[None, :, None, None]


def f_pool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def f_linear(x, j):
    return x @ t[f"classifier.{j}.weight"].astype(np.float64).T + t[f"classifier.{j}.bias"]


relu = lambda x: np.maximum(x, 0)
x = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
y = relu(f_bn(f_conv(x.astype(np.float64), 0), 1))
y = f_pool(y)
y = relu(f_bn(f_conv(y, 4), 5))
y = relu(f_bn(f_conv(y, 7), 8))
y = f_pool(y).reshape(3, -1)
y = relu(f_linear(y, 0))
y = relu(f_linear(y, 3))
y = f_linear(y, 6)

save_file(t, "tests/fixtures/vgg_bn.safetensors")
save_file({"input": x, "logits": y.astype(np.float32)}, "tests/fixtures/vgg_bn_io.safetensors")
print("logits[0]", y[0])
