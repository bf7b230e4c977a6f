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

    /// Bits of a layer's integer codes in a file qscope exported (its
    /// `qscope.q.{layer}` metadata); `None` for a layer stored as f32.
    pub fn stored_bits(&self, layer: &str) -> Option<u8> {
        let spec = self.meta.file_metadata.get(&format!("qscope.q.{layer}"))?;
        let v: serde_json::Value = serde_json::from_str(spec).ok()?;
        v["bits"].as_u64().map(|b| b as u8)
    }

    /// Whether layer node `i` quantizes its input to int8 (W8A8).
    pub fn quantizes_input(&self, i: usize) -> bool {
        match &self.nodes[i].op {
            Op::Conv(c) => c.act_scale.is_some(),
            Op::Linear(l) => l.act_scale.is_some(),
            _ => false,
        }
    }

    /// One line about the model, for `qscope info` and the dashboard:
    /// `resnet20 · 10 classes · 3×32×32 · 270 k params · 40.6 MMAC/image ·
    /// 4-bit codes in 20 of 20 layers`.
    pub fn brief(&self) -> String {
        let m = &self.meta;
        let layers = self.layers();
        let bits: Vec<u8> = layers
            .iter()
            .filter_map(|l| self.stored_bits(&l.name))
            .collect();
        let a8 = layers
            .iter()
            .filter(|l| self.quantizes_input(l.node))
            .count();
        let params = self.param_count() as f64;
        let params = if params >= 1e6 {
            format!("{:.2} M", params / 1e6)
        } else {
            format!("{:.1} k", params / 1e3)
        };
        let mut s = format!(
            "{} · {} classes · {}×{}×{} · {params} params · {:.1} MMAC/image",
            m.arch,
            m.num_classes,
            m.input_channels,
            m.input_size,
            m.input_size,
            self.macs_per_image() as f64 / 1e6
        );
        let n = layers.len();
        match (bits.iter().min(), bits.iter().max()) {
            (Some(lo), Some(hi)) => {
                let range = if lo == hi {
                    format!("{lo}")
                } else {
                    format!("{lo}–{hi}")
                };
                s += &format!(" · {range}-bit codes in {} of {n} layers", bits.len());
            }
            // Said so for an F16/BF16 checkpoint, whose file is half the size.
            _ if !m.stored_floats.is_empty() => {
                s += &format!(
                    " · {} weights, run in f32",
                    m.stored_floats.join("/").to_lowercase()
                )
            }
            _ => s += " · f32 weights",
        }
        if a8 > 0 {
            s += &format!(" · int8 inputs in {a8} of {n} layers");
        }
        let adapted = m.adapter_ranks.len();
        if adapted > 0 {
            s += &format!(" · CoRa adapters in {adapted} of {n} layers");
        }
        s
    }
}
