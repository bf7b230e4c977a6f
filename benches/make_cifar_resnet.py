"""Write a randomly initialised CIFAR ResNet-(6n+2) in the akamaster naming
(`conv1`, `layer{1,2,3}.{i}.conv{1,2}`, `bn*`, `linear`) for benchmarks on
depths the repository does not ship, e.g. ResNet-56 (n = 9):

    python benches/make_cifar_resnet.py 9 /tmp/resnet56.safetensors

He-initialised convs and BN statistics with mild spread, so activations stay
in a realistic range through the depth. Needs numpy and safetensors.
`conv` and `bn` are shared with `make_resnet18.py`."""
import sys
import numpy as np
from safetensors.numpy import save_file


class Weights:
    """Named tensors drawn from one seeded generator, in creation order."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.t = {}

    def conv(self, name, o, i, k=3):
        he = np.sqrt(2.0 / (i * k * k))
        self.t[name + ".weight"] = (self.rng.standard_normal((o, i, k, k)) * he).astype(np.float32)

    def bn(self, name, c):
        r, t = self.rng, self.t
        t[name + ".weight"] = (1 + 0.1 * r.standard_normal(c)).astype(np.float32)
        t[name + ".bias"] = (0.1 * r.standard_normal(c)).astype(np.float32)
        t[name + ".running_mean"] = (0.1 * r.standard_normal(c)).astype(np.float32)
        t[name + ".running_var"] = (1 + 0.2 * r.random(c)).astype(np.float32)


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    m = Weights()
    m.conv("conv1", 16, 3)
    m.bn("bn1", 16)
    cin = 16
    for s, width in enumerate([16, 32, 64], start=1):
        for b in range(n):
            p = f"layer{s}.{b}"
            m.conv(p + ".conv1", width, cin)
            m.bn(p + ".bn1", width)
            m.conv(p + ".conv2", width, width)
            m.bn(p + ".bn2", width)
            cin = width
    m.t["linear.weight"] = (m.rng.standard_normal((10, 64)) * 0.1).astype(np.float32)
    m.t["linear.bias"] = np.zeros(10, np.float32)
    save_file(m.t, out)
    print(f"wrote ResNet-{6 * n + 2} to {out}")


if __name__ == "__main__":
    main()
