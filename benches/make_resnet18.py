"""Write a randomly initialised torchvision-named ResNet-18 (`conv1` 7×7,
`layer{1..4}.{0,1}.conv{1,2}`, `downsample.{0,1}`, `fc`, 1000 classes) for
batch-1 benchmarks of large layers, e.g. 4-bit weights streamed:

    python benches/make_resnet18.py /tmp/r18.safetensors
    qscope quantize --model /tmp/r18.safetensors --data DATA --method rtn --bits 4 --out /tmp/r18_w4.safetensors
    qscope bench --model /tmp/r18_w4.safetensors --threads 1 --batch 1

He-initialised convs and BN statistics with mild spread (as
`make_cifar_resnet.py`). Needs numpy and safetensors."""
import sys
import numpy as np
from safetensors.numpy import save_file
rng = np.random.default_rng(0)
t = {}
def conv(name, o, i, k=3):
    t[name + ".weight"] = (rng.standard_normal((o, i, k, k)) * np.sqrt(2.0 / (i * k * k))).astype(np.float32)
def bn(name, c):
    t[name + ".weight"] = (1 + 0.1 * rng.standard_normal(c)).astype(np.float32)
    t[name + ".bias"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
    t[name + ".running_mean"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
    t[name + ".running_var"] = (1 + 0.2 * rng.random(c)).astype(np.float32)
conv("conv1", 64, 3, 7); bn("bn1", 64)
cin = 64
for s, w in enumerate([64, 128, 256, 512], start=1):
    for b in range(2):
        p = f"layer{s}.{b}"
        conv(p + ".conv1", w, cin); bn(p + ".bn1", w)
        conv(p + ".conv2", w, w); bn(p + ".bn2", w)
        if b == 0 and (s > 1):
            conv(p + ".downsample.0", w, cin, 1); bn(p + ".downsample.1", w)
        cin = w
t["fc.weight"] = (rng.standard_normal((1000, 512)) * 0.05).astype(np.float32)
t["fc.bias"] = np.zeros(1000, np.float32)
save_file(t, sys.argv[1])
print(f"wrote ResNet-18 to {sys.argv[1]}")
