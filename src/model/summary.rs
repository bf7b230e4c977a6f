//! Shape inference and the per-layer table `qscope info` prints: computed
//! analytically, without running the network, so it is instant on any size.
use crate::engine::ops::conv_output_size;
use crate::model::graph::{Graph, LayerInfo, Op};

impl Graph {
    /// Output shape `(C, H, W)` of every value for a `input_size²` input.
    pub fn value_shapes(&self) -> Vec<(usize, usize, usize)> {
        let m = &self.meta;
        let mut shapes = vec![(0, 0, 0); self.num_values];
        shapes[0] = (m.input_channels, m.input_size, m.input_size);
        for n in &self.nodes {
            let (c, h, w) = shapes[n.inputs[0]];
            let pooled = |k: usize, s: usize, p: usize| {
                (
                    c,
                    conv_output_size(h, k, s, p).unwrap_or(0),
                    conv_output_size(w, k, s, p).unwrap_or(0),
                )
            };
            shapes[n.output] = match &n.op {
                Op::Conv(cv) => {
                    let [o, _, kh, kw] = cv.shape;
                    let s = cv.geom.stride.max(1);
                    (
                        o,
                        conv_output_size(h, kh, s, cv.geom.pad).unwrap_or(0),
                        conv_output_size(w, kw, s, cv.geom.pad).unwrap_or(0),
                    )
                }
                Op::Linear(l) => (l.out_features, 1, 1),
                Op::MaxPool {
                    kernel,
                    stride,
                    pad,
                }
                | Op::AvgPool {
                    kernel,
                    stride,
                    pad,
                } => pooled(*kernel, *stride, *pad),
                Op::GlobalAvgPool => (c, 1, 1),
                Op::Flatten => (c * h * w, 1, 1),
                Op::ShortcutPad {
                    stride,
                    pad_before,
                    pad_after,
                } => (
                    c + pad_before + pad_after,
                    h.div_ceil(*stride),
                    w.div_ceil(*stride),
                ),
                Op::BatchNorm(_) | Op::Relu | Op::Add => (c, h, w),
            };
        }
        shapes
    }

    /// One row per quantizable layer.
    pub fn layers(&self) -> Vec<LayerInfo> {
        let shapes = self.value_shapes();
        self.layer_nodes()
            .into_iter()
            .filter_map(|i| {
                let n = &self.nodes[i];
                let (_, shape) = self.weight(i)?;
                let (_, ho, wo) = shapes[n.output];
                let bias = match &n.op {
                    Op::Conv(c) => c.bias.as_ref().map_or(0, Vec::len),
                    Op::Linear(l) => l.bias.as_ref().map_or(0, Vec::len),
                    _ => 0,
                };
                let wcount: usize = shape.iter().product();
                Some(LayerInfo {
                    node: i,
                    name: n.name.clone(),
                    kind: if matches!(n.op, Op::Conv(_)) {
                        "conv"
                    } else {
                        "linear"
                    },
                    shape,
                    params: wcount + bias,
                    macs: (wcount * ho * wo) as u64,
                    output_hw: (ho, wo),
                })
            })
            .collect()
    }

    pub fn macs_per_image(&self) -> u64 {
        self.layers().iter().map(|l| l.macs).sum()
    }
}
