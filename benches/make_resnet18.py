"""Write a randomly initialised torchvision-named ResNet-18 (`conv1` 7×7,
`layer{1..4}.{0,1}.conv{1,2}`, `downsample.{0,1}`, `fc`, 1000 classes) for
batch-1 benchmarks of large layers, e.g. 4-bit weights streamed:

    python benches/make_resnet18.py /tmp/r18.safetensors
    qscope quantize --model /tmp/r18.safetensors --data DATA --method rtn --bits 4 --out /tmp/r18_w4.safetensors
    qscope bench --model /tmp/r18_w4.safetensors --threads 1 --batch 1

Initialised as `make_cifar_resnet.py` (whose `Weights` it uses). Needs numpy
and safetensors."""
import sys
import numpy as np
from safetensors.numpy import save_file
from make_cifar_resnet import Weights

m = Weights()
m.conv("conv1", 64, 3, 7)
m.bn("bn1", 64)
cin = 64
for s, w in enumerate([64, 128, 256, 512], start=1):
    for b in range(2):
        p = f"layer{s}.{b}"
        m.conv(p + ".conv1", w, cin)
        m.bn(p + ".bn1", w)
        m.conv(p + ".conv2", w, w)
        m.bn(p + ".bn2", w)
        if b == 0 and s > 1:
            m.conv(p + ".downsample.0", w, cin, 1)
            m.bn(p + ".downsample.1", w)
        cin = w
m.t["fc.weight"] = (m.rng.standard_normal((1000, 512)) * 0.05).astype(np.float32)
m.t["fc.bias"] = np.zeros(1000, np.float32)
save_file(m.t, sys.argv[1])
print(f"wrote ResNet-18 to {sys.argv[1]}")
