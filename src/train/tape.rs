//! A training forward pass that keeps every value (the tape), and the
//! backward pass over it. Works on unfused graphs (BatchNorm in training mode:
//! batch statistics, running statistics updated) and on BN-folded fused
//! graphs (QAT: conv + bias + residual + ReLU in one node, weights and inputs
//! fake-quantized with a clipped straight-through estimator).
use crate::engine::ops::{self, Epilogue};
use crate::engine::Tensor;
use crate::model::{Graph, Op};
use crate::train::backward;
use crate::{Error, Result};

/// How BatchNorm behaves in a training step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnMode {
    /// Batch statistics; running statistics updated with momentum 0.1.
    Train,
    /// Running statistics (eval mode), still trainable γ and β.
    Frozen,
}

/// Fake quantization applied during a QAT step, per quantizable node.
#[derive(Clone, Debug, Default)]
pub struct FakeQuant {
    /// Weight bits per node index (None = FP weights).
    pub weight_bits: Vec<Option<u8>>,
    /// Per-tensor activation scale per node (None = FP input).
    pub act_scale: Vec<Option<f32>>,
    /// Activation bits (W8A8 QAT: Some(8)); ranges tracked by EMA.
    pub act_bits: Option<u8>,
    pub act_range: Vec<Option<f32>>,
}

pub struct Tape {
    pub values: Vec<Option<Tensor>>,
    bn: BnMode,
    /// Per node: BN's normalised input and 1/σ (train mode), or the
    /// fake-quantized weight and its STE mask (QAT).
    saved: Vec<Saved>,
}

#[derive(Default)]
enum Saved {
    #[default]
    Nothing,
    Bn {
        xhat: Tensor,
        inv_std: Vec<f32>,
    },
    Weight {
        w: Vec<f32>,
        mask: Vec<bool>,
        input: Option<Tensor>,
    },
}

/// Gradients of one node's parameters.
#[derive(Clone, Debug)]
pub struct ParamGrad {
    /// Conv/linear weight, or BN γ.
    pub w: Vec<f32>,
    /// Bias, or BN β.
    pub b: Option<Vec<f32>>,
}

fn shape_err(node: &str, problem: String) -> Error {
    Error::Shape {
        layer: node.to_string(),
        problem,
    }
}

/// Per-channel symmetric fake quantization (PyTorch QAT weights, `torch_sym`):
/// `Δ = max|w|/((2^b − 1)/2)`, codes in `[−2^{b−1}, 2^{b−1}−1]`. Returns the
/// quantized weight and the clipped-STE mask (1 inside the range).
pub fn fake_quant_weight(w: &[f32], rows: usize, bits: u8) -> (Vec<f32>, Vec<bool>) {
    let d = w.len() / rows.max(1);
    let qmax = ((1i32 << (bits - 1)) - 1) as f32;
    let qmin = -(1i32 << (bits - 1)) as f32;
    let mut q = vec![0f32; w.len()];
    let mut mask = vec![true; w.len()];
    for r in 0..rows {
        let row = &w[r * d..(r + 1) * d];
        let a = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if a > 0.0 {
            a / ((qmax - qmin) / 2.0)
        } else {
            1.0
        };
        for (k, &v) in row.iter().enumerate() {
            let code = (v / scale).round_ties_even();
            mask[r * d + k] = code >= qmin && code <= qmax;
            q[r * d + k] = code.clamp(qmin, qmax) * scale;
        }
    }
    (q, mask)
}

/// Forward with the tape. `fq` applies only to graphs without BN nodes (QAT).
pub fn forward(
    graph: &mut Graph,
    input: Tensor,
    bn: BnMode,
    fq: Option<&FakeQuant>,
) -> Result<Tape> {
    let mut values: Vec<Option<Tensor>> = vec![None; graph.num_values];
    values[0] = Some(input);
    let mut saved: Vec<Saved> = (0..graph.nodes.len()).map(|_| Saved::Nothing).collect();
    for (i, node) in graph.nodes.iter_mut().enumerate() {
        let name = node.name.clone();
        let get = |v: usize| {
            values[v]
                .as_ref()
                .ok_or_else(|| shape_err(&name, format!("value {v} missing")))
        };
        let out = match &mut node.op {
            Op::Conv(c) => {
                if c.post.scale.is_some() {
                    return Err(Error::Invalid(format!(
                        "{name}: training needs BN as a node or folded into the weights"
                    )));
                }
                let x = get(node.inputs[0])?;
                let xin = fq
                    .and_then(|f| f.act_scale.get(i).copied().flatten())
                    .map(|s| crate::model::exec::fake_quant(x, Some(s)).into_owned());
                let bits = fq.and_then(|f| f.weight_bits.get(i).copied().flatten());
                let w = match bits {
                    Some(b) => {
                        let (q, mask) = fake_quant_weight(&c.weight, c.shape[0], b);
                        saved[i] = Saved::Weight {
                            w: q,
                            mask,
                            input: xin.clone(),
                        };
                        match &saved[i] {
                            Saved::Weight { w, .. } => w.as_slice(),
                            _ => &c.weight,
                        }
                    }
                    None => {
                        if xin.is_some() {
                            saved[i] = Saved::Weight {
                                w: c.weight.clone(),
                                mask: vec![true; c.weight.len()],
                                input: xin.clone(),
                            };
                        }
                        &c.weight
                    }
                };
                let residual = match node.inputs.get(1) {
                    Some(&r) => Some(get(r)?),
                    None => None,
                };
                let epi = Epilogue {
                    bias: c.bias.as_deref(),
                    residual,
                    relu: c.post.relu,
                };
                ops::conv2d(xin.as_ref().unwrap_or(x), w, c.shape, c.geom, epi)
                    .map_err(|e| shape_err(&name, e))?
            }
            Op::Linear(l) => {
                let x = get(node.inputs[0])?;
                let xin = fq
                    .and_then(|f| f.act_scale.get(i).copied().flatten())
                    .map(|s| crate::model::exec::fake_quant(x, Some(s)).into_owned());
                let bits = fq.and_then(|f| f.weight_bits.get(i).copied().flatten());
                let out = match bits {
                    Some(b) => {
                        let (q, mask) = fake_quant_weight(&l.weight, l.out_features, b);
                        let y = ops::linear(
                            xin.as_ref().unwrap_or(x),
                            &q,
                            l.out_features,
                            l.bias.as_deref(),
                        );
                        saved[i] = Saved::Weight {
                            w: q,
                            mask,
                            input: xin,
                        };
                        y
                    }
                    None => {
                        if xin.is_some() {
                            saved[i] = Saved::Weight {
                                w: l.weight.clone(),
                                mask: vec![true; l.weight.len()],
                                input: xin.clone(),
                            };
                        }
                        ops::linear(
                            xin.as_ref().unwrap_or(x),
                            &l.weight,
                            l.out_features,
                            l.bias.as_deref(),
                        )
                    }
                };
                out.map_err(|e| shape_err(&name, e))?
            }
            Op::BatchNorm(p) => {
                let x = get(node.inputs[0])?;
                match bn {
                    BnMode::Frozen => {
                        let (scale, shift) = p.scale_shift();
                        let inv_std: Vec<f32> =
                            p.var.iter().map(|v| 1.0 / (v + p.eps).sqrt()).collect();
                        let mut xhat = x.clone();
                        for (c, mut plane) in xhat.axis_iter_mut(ndarray::Axis(1)).enumerate() {
                            let (m, is) = (p.mean[c], inv_std[c]);
                            plane.mapv_inplace(|v| (v - m) * is);
                        }
                        saved[i] = Saved::Bn { xhat, inv_std };
                        ops::batchnorm(x.clone(), &scale, &shift)
                            .map_err(|e| shape_err(&name, e))?
                    }
                    BnMode::Train => {
                        let (xhat, inv_std, mean, var_unbiased) = backward::bn_normalise(x, p.eps);
                        for c in 0..p.mean.len() {
                            p.mean[c] = 0.9 * p.mean[c] + 0.1 * mean[c];
                            p.var[c] = 0.9 * p.var[c] + 0.1 * var_unbiased[c];
                        }
                        let mut y = xhat.clone();
                        for (c, mut plane) in y.axis_iter_mut(ndarray::Axis(1)).enumerate() {
                            let (g, b) = (p.gamma[c], p.beta[c]);
                            plane.mapv_inplace(|v| v * g + b);
                        }
                        saved[i] = Saved::Bn { xhat, inv_std };
                        y
                    }
                }
            }
            Op::Relu => ops::relu(get(node.inputs[0])?.clone()),
            Op::Add => ops::add(get(node.inputs[0])?, get(node.inputs[1])?)
                .map_err(|e| shape_err(&name, e))?,
            Op::MaxPool {
                kernel,
                stride,
                pad,
            } => ops::max_pool(get(node.inputs[0])?, *kernel, *stride, *pad)
                .map_err(|e| shape_err(&name, e))?,
            Op::AvgPool {
                kernel,
                stride,
                pad,
            } => ops::avg_pool(get(node.inputs[0])?, *kernel, *stride, *pad)
                .map_err(|e| shape_err(&name, e))?,
            Op::GlobalAvgPool => ops::global_avg_pool(get(node.inputs[0])?),
            Op::Flatten => {
                let x = get(node.inputs[0])?;
                let (n, c, h, w) = x.dim();
                Tensor::from_shape_vec((n, c * h * w, 1, 1), x.iter().copied().collect())
                    .map_err(|e| shape_err(&name, e.to_string()))?
            }
            Op::ShortcutPad {
                stride,
                pad_before,
                pad_after,
            } => ops::shortcut_pad(get(node.inputs[0])?, *stride, *pad_before, *pad_after),
        };
        values[node.output] = Some(out);
    }
    Ok(Tape { values, saved, bn })
}

/// Clipped straight-through estimator: no gradient where the code was clipped.
fn apply_ste_mask(dw: &mut [f32], mask: Option<&Vec<bool>>) {
    if let Some(m) = mask {
        dw.iter_mut()
            .zip(m)
            .filter(|(_, &keep)| !keep)
            .for_each(|(g, _)| *g = 0.0);
    }
}

impl Tape {
    /// The weight node `i` actually multiplied in the forward pass (fake-
    /// quantized under QAT), its STE mask, and its fake-quantized input.
    fn weight_used<'a>(
        &'a self,
        i: usize,
        raw: &'a [f32],
    ) -> (&'a [f32], Option<&'a Vec<bool>>, Option<&'a Tensor>) {
        match &self.saved[i] {
            Saved::Weight { w, mask, input } => (w.as_slice(), Some(mask), input.as_ref()),
            _ => (raw, None, None),
        }
    }

    pub fn output(&self, graph: &Graph) -> Option<&Tensor> {
        self.values[graph.output].as_ref()
    }

    /// Backward from `d_output` (gradient of the loss w.r.t. the graph
    /// output). Returns per-node parameter gradients.
    pub fn backward(&mut self, graph: &Graph, d_output: Tensor) -> Result<Vec<Option<ParamGrad>>> {
        let mut grads: Vec<Option<Tensor>> = vec![None; graph.num_values];
        grads[graph.output] = Some(d_output);
        let mut pgrads: Vec<Option<ParamGrad>> = vec![None; graph.nodes.len()];
        // Elementwise passes over a batch's activations (megabytes each) run
        // on every core: serial, they were a tenth of a training step.
        let accumulate = |grads: &mut Vec<Option<Tensor>>, v: usize, g: Tensor| {
            grads[v] = Some(match grads[v].take() {
                Some(mut prev) => {
                    ndarray::Zip::from(&mut prev)
                        .and(&g)
                        .par_for_each(|p, &d| *p += d);
                    prev
                }
                None => g,
            });
        };
        let relu_mask = |g: &mut Tensor, y: &Tensor| {
            ndarray::Zip::from(g).and(y).par_for_each(|g, &yv| {
                if yv <= 0.0 {
                    *g = 0.0
                }
            })
        };
        for (i, node) in graph.nodes.iter().enumerate().rev() {
            let Some(gy) = grads[node.output].take() else {
                continue;
            };
            let x = |k: usize| {
                self.values[node.inputs[k]]
                    .as_ref()
                    .ok_or_else(|| shape_err(&node.name, "value missing on tape".into()))
            };
            let y = self.values[node.output]
                .as_ref()
                .ok_or_else(|| shape_err(&node.name, "output missing on tape".into()))?;
            match &node.op {
                Op::Conv(c) => {
                    let mut gpre = gy;
                    if c.post.relu {
                        relu_mask(&mut gpre, y);
                    }
                    if let Some(&r) = node.inputs.get(1) {
                        accumulate(&mut grads, r, gpre.clone());
                    }
                    let (w, mask, xin) = self.weight_used(i, &c.weight);
                    let xv = xin.map_or_else(|| x(0), Ok)?;
                    let (dx, mut dw, db) = backward::conv(xv, w, c.shape, c.geom, &gpre)
                        .map_err(|e| shape_err(&node.name, e))?;
                    apply_ste_mask(&mut dw, mask);
                    accumulate(&mut grads, node.inputs[0], dx);
                    pgrads[i] = Some(ParamGrad {
                        w: dw,
                        b: c.bias.as_ref().map(|_| db),
                    });
                }
                Op::Linear(l) => {
                    let (w, mask, xin) = self.weight_used(i, &l.weight);
                    let xv = xin.map_or_else(|| x(0), Ok)?;
                    let (dx, mut dw, db) = backward::linear(xv, w, l.out_features, &gy);
                    apply_ste_mask(&mut dw, mask);
                    accumulate(&mut grads, node.inputs[0], dx);
                    pgrads[i] = Some(ParamGrad {
                        w: dw,
                        b: l.bias.as_ref().map(|_| db),
                    });
                }
                Op::BatchNorm(p) => {
                    let Saved::Bn { xhat, inv_std } = &self.saved[i] else {
                        return Err(shape_err(&node.name, "batch norm state missing".into()));
                    };
                    let (dx, dgamma, dbeta) =
                        backward::batchnorm(&gy, xhat, inv_std, &p.gamma, self.bn == BnMode::Train);
                    accumulate(&mut grads, node.inputs[0], dx);
                    pgrads[i] = Some(ParamGrad {
                        w: dgamma,
                        b: Some(dbeta),
                    });
                }
                Op::Relu => {
                    let mut g = gy;
                    relu_mask(&mut g, y);
                    accumulate(&mut grads, node.inputs[0], g);
                }
                Op::Add => {
                    accumulate(&mut grads, node.inputs[0], gy.clone());
                    accumulate(&mut grads, node.inputs[1], gy);
                }
                Op::MaxPool {
                    kernel,
                    stride,
                    pad,
                } => accumulate(
                    &mut grads,
                    node.inputs[0],
                    backward::max_pool(x(0)?, &gy, *kernel, *stride, *pad),
                ),
                Op::AvgPool {
                    kernel,
                    stride,
                    pad,
                } => accumulate(
                    &mut grads,
                    node.inputs[0],
                    backward::avg_pool(x(0)?.dim(), &gy, *kernel, *stride, *pad),
                ),
                Op::GlobalAvgPool => {
                    let (n, c, h, w) = x(0)?.dim();
                    let area = (h * w) as f32;
                    accumulate(
                        &mut grads,
                        node.inputs[0],
                        Tensor::from_shape_fn((n, c, h, w), |(b, ch, _, _)| {
                            gy[[b, ch, 0, 0]] / area
                        }),
                    );
                }
                Op::Flatten => {
                    let d = x(0)?.dim();
                    let g = Tensor::from_shape_vec(d, gy.iter().copied().collect())
                        .map_err(|e| shape_err(&node.name, e.to_string()))?;
                    accumulate(&mut grads, node.inputs[0], g);
                }
                Op::ShortcutPad {
                    stride, pad_before, ..
                } => {
                    let d = x(0)?.dim();
                    accumulate(
                        &mut grads,
                        node.inputs[0],
                        backward::shortcut_pad(d, &gy, *stride, *pad_before),
                    );
                }
            }
        }
        Ok(pgrads)
    }
}
