//! A small graph IR: nodes in topological order, each reading value slots and
//! writing one. Value 0 is the network input. Every conv and linear node is a
//! named *quantizable layer*; its `weight` is always the raw PyTorch weight
//! (BatchNorm folding is kept separately in `post`, so quantizers see the
//! weights the papers quantize).
use crate::engine::ops::ConvGeom;
use crate::model::meta::ModelMeta;

#[derive(Clone, Debug)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub output: usize,
    pub num_values: usize,
    pub meta: ModelMeta,
}

#[derive(Clone, Debug)]
pub struct Node {
    /// PyTorch module path, e.g. `layer1.0.conv1`.
    pub name: String,
    pub op: Op,
    pub inputs: Vec<usize>,
    pub output: usize,
}

#[derive(Clone, Debug)]
pub enum Op {
    /// Inputs: `[x]`, or `[x, residual]` once an add has been fused in.
    Conv(ConvLayer),
    Linear(LinearLayer),
    BatchNorm(BatchNormParams),
    Relu,
    Add,
    MaxPool {
        kernel: usize,
        stride: usize,
        pad: usize,
    },
    AvgPool {
        kernel: usize,
        stride: usize,
        pad: usize,
    },
    GlobalAvgPool,
    Flatten,
    /// Option-A shortcut: subsample by `stride`, zero-pad channels.
    ShortcutPad {
        stride: usize,
        pad_before: usize,
        pad_after: usize,
    },
}

/// Per-output-channel work fused after a conv: `relu(conv·scale + shift (+ residual))`.
#[derive(Clone, Debug, Default)]
pub struct PostOps {
    pub scale: Option<Vec<f32>>,
    pub shift: Option<Vec<f32>>,
    pub relu: bool,
    /// Name of the BatchNorm folded in here (kept so exports use the original names).
    pub bn_name: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ConvLayer {
    /// `[out, in/groups, kh, kw]`, row-major.
    pub weight: Vec<f32>,
    pub shape: [usize; 4],
    pub bias: Option<Vec<f32>>,
    pub geom: ConvGeom,
    pub post: PostOps,
    /// Weight and bias with `post.scale/shift` applied, cached by
    /// `Graph::fused`; cleared whenever the weight changes.
    pub folded: Option<std::sync::Arc<FoldedConv>>,
    /// Static per-tensor int8 scale of the input (W8A8): the executor feeds
    /// `clamp(round(x/s), −127, 127)·s` to the conv. None = FP input.
    pub act_scale: Option<f32>,
}

#[derive(Clone, Debug)]
pub struct FoldedConv {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    /// `weight` in the direct-convolution kernel's layout, built on first
    /// use by a layer that kernel runs (most layers never need it: a copy
    /// of every layer made up front was a third of a loaded model's peak).
    pub packed: std::sync::OnceLock<Vec<f32>>,
    /// `weight` as int8 codes (W8A8 layers), built on first use; the flag
    /// says whether the values were exactly on an int8 grid.
    pub int8:
        std::sync::OnceLock<Option<std::sync::Arc<(crate::engine::ops::qconv::Int8Weights, bool)>>>,
    /// `weight` as 4-bit codes when it lies on a ≤ 16-level grid (weight-only
    /// models), built on first use.
    pub lowbit: std::sync::OnceLock<Option<std::sync::Arc<crate::model::lower::LowBitWeights>>>,
    /// `weight` in the Winograd kernel's layout (3×3 convs), built on first use.
    pub winograd: std::sync::OnceLock<Vec<f32>>,
}

#[derive(Clone, Debug)]
pub struct LinearLayer {
    /// `[out, in]`, row-major.
    pub weight: Vec<f32>,
    pub out_features: usize,
    pub in_features: usize,
    pub bias: Option<Vec<f32>>,
    /// As for `ConvLayer::act_scale`.
    pub act_scale: Option<f32>,
    /// The weights as 4-bit codes when every row lies on a ≤ 16-level grid
    /// (weight-only models): set by `Graph::refold`, cleared whenever the
    /// weights may change, so the executor never reads stale codes.
    pub lowbit: Option<std::sync::Arc<crate::model::lower::LowBitWeights>>,
}

#[derive(Clone, Debug)]
pub struct BatchNormParams {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub eps: f32,
}

impl BatchNormParams {
    /// Eval-mode BN as `x·scale + shift`: `scale = γ/√(σ²+ε)`, `shift = β − μ·scale`.
    pub fn scale_shift(&self) -> (Vec<f32>, Vec<f32>) {
        let scale: Vec<f32> = self
            .gamma
            .iter()
            .zip(&self.var)
            .map(|(g, v)| g / (v + self.eps).sqrt())
            .collect();
        let shift = self
            .beta
            .iter()
            .zip(&self.mean)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        (scale, shift)
    }
}

/// A quantizable layer's weight as a GEMM matrix `W ∈ R^{N×d}`.
#[derive(Clone, Debug)]
pub struct LayerInfo {
    pub node: usize,
    pub name: String,
    pub kind: &'static str,
    /// `[out, in/groups, kh, kw]` (linear: `[out, in, 1, 1]`).
    pub shape: [usize; 4],
    pub params: usize,
    /// Multiply-accumulates per image.
    pub macs: u64,
    pub output_hw: (usize, usize),
}

impl Graph {
    /// Indices of conv and linear nodes, in forward order.
    pub fn layer_nodes(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n.op, Op::Conv(_) | Op::Linear(_)))
            .map(|(i, _)| i)
            .collect()
    }

    pub fn find_layer(&self, name: &str) -> crate::Result<usize> {
        self.layer_nodes()
            .into_iter()
            .find(|&i| self.nodes[i].name == name)
            .ok_or_else(|| crate::Error::UnknownLayer {
                name: name.to_string(),
                known: self.layer_names().join(", "),
            })
    }

    pub fn layer_names(&self) -> Vec<String> {
        self.layer_nodes()
            .iter()
            .map(|&i| self.nodes[i].name.clone())
            .collect()
    }

    /// The raw weight of a quantizable layer.
    pub fn weight(&self, node: usize) -> Option<(&[f32], [usize; 4])> {
        match &self.nodes.get(node)?.op {
            Op::Conv(c) => Some((&c.weight, c.shape)),
            Op::Linear(l) => Some((&l.weight, [l.out_features, l.in_features, 1, 1])),
            _ => None,
        }
    }

    pub fn weight_mut(&mut self, node: usize) -> Option<&mut Vec<f32>> {
        match &mut self.nodes.get_mut(node)?.op {
            Op::Conv(c) => {
                c.folded = None;
                Some(&mut c.weight)
            }
            Op::Linear(l) => {
                l.lowbit = None;
                Some(&mut l.weight)
            }
            _ => None,
        }
    }

    /// Recompute every conv's cached folded weights and every linear's
    /// 4-bit codes (after weights changed). Always from the weights, never
    /// trusting a cache: a linear's rows are re-checked each time (a float
    /// row is rejected at its 17th distinct value).
    pub fn refold(&mut self) {
        for n in &mut self.nodes {
            if let Op::Linear(l) = &mut n.op {
                let shape = [l.out_features, l.in_features, 1, 1];
                l.lowbit = crate::model::lower::lower_lowbit(
                    &l.weight,
                    shape,
                    crate::model::lower::CodeOrder::Rows,
                )
                .map(|lb| std::sync::Arc::new(lb.hold_3bit()));
            }
            if let Op::Conv(c) = &mut n.op {
                let (w, b) = crate::model::exec::fold_conv(c);
                c.folded = Some(std::sync::Arc::new(FoldedConv {
                    weight: w.into_owned(),
                    bias: b,
                    packed: Default::default(),
                    int8: Default::default(),
                    lowbit: Default::default(),
                    winograd: Default::default(),
                }));
            }
        }
    }

    pub fn param_count(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| match &n.op {
                Op::Conv(c) => {
                    // The shape, not `weight.len()`: inference graphs may
                    // have released their f32 copy (`release_f32_weights`).
                    c.shape.iter().product::<usize>()
                        + c.bias.as_ref().map_or(0, Vec::len)
                        + c.post.scale.as_ref().map_or(0, Vec::len)
                        + c.post.shift.as_ref().map_or(0, Vec::len)
                }
                Op::Linear(l) => {
                    l.out_features * l.in_features + l.bias.as_ref().map_or(0, Vec::len)
                }
                Op::BatchNorm(b) => 2 * b.gamma.len(),
                _ => 0,
            })
            .sum()
    }
}
