//! Optimisers (SGD with momentum and weight decay; Adam / AdamW) and
//! learning-rate schedules. Weight decay applies to conv and linear weights,
//! not to biases or BatchNorm parameters.
use crate::model::{Graph, Op};
use crate::train::tape::ParamGrad;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimKind {
    Sgd,
    Adam,
    /// Adam with decoupled weight decay.
    Adamw,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    /// Cosine decay to 0 over the run.
    Cosine,
    /// ×0.1 at 50 % and 75 % of the run.
    Step,
}

impl Schedule {
    pub fn factor(self, step: usize, total: usize) -> f64 {
        let t = step as f64 / total.max(1) as f64;
        match self {
            Schedule::Constant => 1.0,
            Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
            Schedule::Step => {
                if t >= 0.75 {
                    0.01
                } else if t >= 0.5 {
                    0.1
                } else {
                    1.0
                }
            }
        }
    }
}

pub struct Optimizer {
    pub kind: OptimKind,
    pub momentum: f64,
    pub weight_decay: f64,
    step: u64,
    /// Per node: first and second moments for (w, b).
    state: Vec<Option<[(Vec<f32>, Vec<f32>); 2]>>,
}

fn params_mut(op: &mut Op) -> Option<(&mut Vec<f32>, Option<&mut Vec<f32>>, bool)> {
    match op {
        Op::Conv(c) => {
            c.folded = None;
            Some((&mut c.weight, c.bias.as_mut(), true))
        }
        Op::Linear(l) => {
            l.lowbit = None;
            Some((&mut l.weight, l.bias.as_mut(), true))
        }
        Op::BatchNorm(b) => Some((&mut b.gamma, Some(&mut b.beta), false)),
        _ => None,
    }
}

impl Optimizer {
    pub fn new(kind: OptimKind, momentum: f64, weight_decay: f64, nodes: usize) -> Self {
        Optimizer {
            kind,
            momentum,
            weight_decay,
            step: 0,
            state: vec![None; nodes],
        }
    }

    pub fn step(&mut self, graph: &mut Graph, grads: &[Option<ParamGrad>], lr: f64) {
        self.step += 1;
        let t = self.step as i32;
        for (i, (node, g)) in graph.nodes.iter_mut().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            let Some((w, b, decays)) = params_mut(&mut node.op) else {
                continue;
            };
            let st = self.state[i].get_or_insert_with(|| {
                let zb = g.b.as_ref().map_or(0, Vec::len);
                [
                    (vec![0.0; g.w.len()], vec![0.0; g.w.len()]),
                    (vec![0.0; zb], vec![0.0; zb]),
                ]
            });
            let update =
                |p: &mut Vec<f32>, grad: &[f32], (m, v): &mut (Vec<f32>, Vec<f32>), wd: f64| {
                    for k in 0..p.len().min(grad.len()) {
                        let mut gk = grad[k] as f64;
                        match self.kind {
                            OptimKind::Sgd => {
                                gk += wd * p[k] as f64;
                                let mk = self.momentum * m[k] as f64 + gk;
                                m[k] = mk as f32;
                                p[k] -= (lr * mk) as f32;
                            }
                            OptimKind::Adam | OptimKind::Adamw => {
                                if self.kind == OptimKind::Adam {
                                    gk += wd * p[k] as f64;
                                } else {
                                    p[k] -= (lr * wd * p[k] as f64) as f32;
                                }
                                let (b1, b2) = (0.9f64, 0.999f64);
                                let mk = b1 * m[k] as f64 + (1.0 - b1) * gk;
                                let vk = b2 * v[k] as f64 + (1.0 - b2) * gk * gk;
                                m[k] = mk as f32;
                                v[k] = vk as f32;
                                let mh = mk / (1.0 - b1.powi(t));
                                let vh = vk / (1.0 - b2.powi(t));
                                p[k] -= (lr * mh / (vh.sqrt() + 1e-8)) as f32;
                            }
                        }
                    }
                };
            let [sw, sb] = st;
            update(w, &g.w, sw, if decays { self.weight_decay } else { 0.0 });
            if let (Some(b), Some(gb)) = (b, &g.b) {
                update(b, gb, sb, 0.0);
            }
        }
    }
}
