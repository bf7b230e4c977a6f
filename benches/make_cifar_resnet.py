"""Write a randomly initialised CIFAR ResNet-(6n+2) in the akamaster naming
(`conv1`, `layer{1,2,3}.{i}.conv{1,2}`, `bn*`, `linear`) for benchmarks on
depths the repository does not ship, e.g. ResNet-56 (n = 9):

    python benches/make_cifar_resnet.py 9 /tmp/resnet56.safetensors

He-initialised convs and BN statistics with mild spread, so activations stay
in a realistic range through the depth. Needs numpy and safetensors."""
import sys
import numpy as np
from safetensors.numpy import save_file

n, out = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
t = {}


def conv(name, o, i, k=3):
    t[name + ".weight"] = (rng.standard_normal((o, i, k, k)) * np.sqrt(2.0 / (i * k * k))).astype(np.float32)


def bn(name, c):
    t[name + ".weight"] = (1 + 0.1 * rng.standard_normal(c)).astype(np.float32)
    t[name + ".bias"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
    t[name + ".running_mean"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
    t[name + ".running_var"] = (1 + 0.2 * rng.random(c)).astype(np.float32)


conv("conv1", 16, 3)
bn("bn1", 16)
cin = 16
for s, width in enumerate([16, 32, 64], start=1):
    for b in range(n):
        p = f"layer{s}.{b}"
        conv(p + ".conv1", width, cin)
        bn(p + ".bn1", width)
        conv(p + ".conv2", width, width)
        bn(p + ".bn2", width)
        cin = width
t["linear.weight"] = (rng.standard_normal((10, 64)) * 0.1).astype(np.float32)
t["linear.bias"] = np.zeros(10, np.float32)
save_file(t, out)
print(f"wrote ResNet-{6 * n + 2} to {out}")
