//! CoRa-O: optimal adapter ranks by gradient descent on relaxed ranks r̃
//! (ALGORITHMS.md §9). Each conv's weight is `Q + Σ_i T_i(r̃)² σ_i u_i v_iᵀ`;
//! the loss is cross-entropy plus `γ·exp(relu(Σ_l w_l r̃_l − b))`. The
//! gradient of the loss w.r.t. component i's weight is `σ_i u_iᵀ (∂L/∂W) v_i`,
//! so one ordinary backward pass per step gives every ∂L/∂r̃_l.
use crate::data::{Preprocess, Split};
use crate::model::{Graph, Op};
use crate::quant::cora::{butterworth, ResidualSvd};
use crate::train::backward::{softmax_cross_entropy, softmax_kl};
use crate::train::tape::{self, BnMode};
use crate::util::Rng;
use crate::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SearchConfig {
    /// Adapter parameters allowed, as a fraction of the conv parameters.
    pub budget: f64,
    pub iterations: usize,
    pub batch: usize,
    pub lr: f64,
    /// Butterworth order n.
    pub order: u32,
    /// Initial r̃; 0 = start at the budget.
    pub init: f64,
    /// Start from these integer ranks instead (overrides `init`).
    #[serde(default)]
    pub init_ranks: Option<Vec<usize>>,
    pub gamma: f64,
    pub seed: u64,
    /// Match the FP model's output distribution (KL to the teacher's softmax)
    /// instead of cross-entropy against the labels.
    #[serde(default)]
    pub distill: bool,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            budget: 0.05,
            iterations: 200,
            batch: 32,
            lr: 0.01,
            order: 4,
            init: 0.0,
            init_ranks: None,
            // [D] γ = 10, not the reference's 1: with γ = 1 the search ended
            // over budget (13.4 % relaxed for a 10 % budget, ResNet-20 3-bit)
            // and `fit_budget`'s uniform scale-down then distorted the
            // allocation it had found; γ = 10 ends at 10.1 %. Chosen on
            // held-out train images: +1.3 (5 %) and +1.5 points (10 %).
            gamma: 10.0,
            seed: 0,
            distill: false,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SearchStep {
    pub iteration: usize,
    pub loss: f64,
    /// `Σ w_l r̃_l`, the adapter share of the conv parameters.
    pub budget_used: f64,
    pub relaxed: Vec<f64>,
}

/// `layers[k] = (node index in graph, residual SVD)`; `graph` holds the
/// quantized weights `Q` (unfused, BN as nodes); `teacher` is the FP graph,
/// needed when `cfg.distill`. Returns integer ranks.
#[allow(clippy::too_many_arguments)]
pub fn search(
    graph: &Graph,
    teacher: Option<&Graph>,
    layers: &[(usize, ResidualSvd)],
    split: &Split,
    indices: &[usize],
    pre: &Preprocess,
    cfg: &SearchConfig,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(&SearchStep),
) -> Result<Vec<usize>> {
    if indices.is_empty() || layers.is_empty() {
        return Err(Error::Invalid(
            "CoRa search needs calibration images and at least one conv layer".into(),
        ));
    }
    let conv_params: usize = graph
        .nodes
        .iter()
        .map(|n| {
            if let Op::Conv(c) = &n.op {
                c.weight.len()
            } else {
                0
            }
        })
        .sum();
    // w_l = (N_l + C_in k²)·R_l / Σ conv params, so Σ w_l r̃_l ≈ adapter share.
    let weights: Vec<f64> = layers
        .iter()
        .map(|(_, s)| s.adapter_params(s.rank_max()) as f64 / conv_params as f64)
        .collect();
    let base: Vec<Vec<f32>> = layers
        .iter()
        .map(|(node, _)| {
            graph
                .weight(*node)
                .map(|(w, _)| w.to_vec())
                .unwrap_or_default()
        })
        .collect();
    let mut g = graph.clone();
    // [D] Start at the budget (Σ w_l r̃_l = b) rather than the reference's 0.9:
    // from 0.9 the soft penalty cannot bring a 2–20 % budget back within a
    // few hundred Adam steps (measured: 35 % used for a 10 % budget).
    let total_w: f64 = weights.iter().sum();
    let start = if cfg.init > 0.0 {
        cfg.init
    } else {
        cfg.budget / total_w.max(1e-12)
    };
    let mut rt: Vec<f64> = match &cfg.init_ranks {
        // Start from given integer ranks (e.g. CoRa-H's), as fractions of R.
        Some(r) if r.len() == layers.len() => layers
            .iter()
            .zip(r)
            .map(|((_, s), &k)| {
                (k as f64 / s.rank_max() as f64).clamp(1.0 / s.rank_max() as f64, 1.0)
            })
            .collect(),
        _ => layers
            .iter()
            .map(|(_, s)| start.clamp(1.0 / s.rank_max() as f64, 1.0))
            .collect(),
    };
    let (mut m, mut v) = (vec![0f64; layers.len()], vec![0f64; layers.len()]);
    let targets = match (cfg.distill, teacher) {
        (true, Some(t)) => Some(teacher_logits(t, split, indices, pre, cfg.batch.max(1))?),
        (true, None) => {
            return Err(Error::Invalid(
                "CoRa distillation needs the FP model".into(),
            ))
        }
        _ => None,
    };
    let mut rng = Rng::new(cfg.seed);
    let mut order = indices.to_vec();
    let per_epoch = order.len().div_ceil(cfg.batch.max(1));
    for it in 0..cfg.iterations {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        if it % per_epoch == 0 {
            rng.shuffle(&mut order);
        }
        let pos = it % per_epoch;
        let chunk = &order[pos * cfg.batch..((pos + 1) * cfg.batch).min(order.len())];
        let kernels: Vec<(Vec<f64>, Vec<f64>)> = layers
            .iter()
            .zip(&rt)
            .map(|((_, s), &r)| butterworth(s.rank_max(), r, cfg.order))
            .collect();
        // Layers are independent: their deltas in parallel, each summed in
        // its own fixed order.
        let deltas: Vec<Vec<f32>> = layers
            .par_iter()
            .zip(&kernels)
            .map(|((_, svd), kernel)| svd.reconstruct(&kernel.0))
            .collect();
        for (k, ((node, _), delta)) in layers.iter().zip(deltas).enumerate() {
            if let Some(w) = g.weight_mut(*node) {
                for ((o, q), dd) in w.iter_mut().zip(&base[k]).zip(&delta) {
                    *o = q + dd;
                }
            }
        }
        let x = pre.batch(split, chunk);
        let labels: Vec<u32> = chunk.iter().map(|&i| split.labels[i]).collect();
        let mut t = tape::forward(&mut g, x, BnMode::Frozen, None)?;
        let logits = t
            .output(&g)
            .ok_or_else(|| Error::Invalid("no output".into()))?
            .clone();
        let (ce, dlogits) = match &targets {
            Some(t) => {
                let rows: Vec<&[f32]> = chunk.iter().map(|i| t[i].as_slice()).collect();
                softmax_kl(&logits, &rows)
            }
            None => {
                let (ce, d, _) = softmax_cross_entropy(&logits, &labels);
                (ce, d)
            }
        };
        let grads = t.backward(&g, dlogits)?;
        let used: f64 = weights.iter().zip(&rt).map(|(w, r)| w * r).sum();
        let over = used - cfg.budget;
        let penalty = cfg.gamma * over.max(0.0).exp();
        let projections: Vec<Option<Vec<f64>>> = layers
            .par_iter()
            .map(|(node, svd)| grads[*node].as_ref().map(|gw| svd.project(&gw.w)))
            .collect();
        for (k, ((_, svd), p)) in layers.iter().zip(projections).enumerate() {
            let Some(p) = p else {
                continue;
            };
            let dce: f64 = (0..svd.rank_max())
                .map(|i| kernels[k].1[i] * svd.s[i] * p[i])
                .sum();
            let dpen = if over > 0.0 {
                penalty * weights[k]
            } else {
                0.0
            };
            let grad = (dce + dpen).clamp(-0.2, 0.2);
            let (b1, b2) = (0.9f64, 0.999f64);
            m[k] = b1 * m[k] + (1.0 - b1) * grad;
            v[k] = b2 * v[k] + (1.0 - b2) * grad * grad;
            let mh = m[k] / (1.0 - b1.powi(it as i32 + 1));
            let vh = v[k] / (1.0 - b2.powi(it as i32 + 1));
            let lo = 1.0 / svd.rank_max() as f64;
            let next = rt[k] - cfg.lr * mh / (vh.sqrt() + 1e-8);
            rt[k] = if next.is_nan() {
                lo
            } else {
                next.clamp(lo, 1.0)
            };
        }
        on_step(&SearchStep {
            iteration: it + 1,
            loss: ce + penalty,
            budget_used: used,
            relaxed: rt.clone(),
        });
    }
    Ok(fit_budget(
        layers,
        &rt,
        (cfg.budget * conv_params as f64) as usize,
    ))
}

/// The FP model's logits for every calibration image, computed once: the
/// distillation targets do not change during the search.
fn teacher_logits(
    teacher: &Graph,
    split: &Split,
    indices: &[usize],
    pre: &Preprocess,
    batch: usize,
) -> Result<std::collections::HashMap<usize, Vec<f32>>> {
    let mut t = teacher.clone();
    let mut out = std::collections::HashMap::new();
    for chunk in indices.chunks(batch) {
        let tape = tape::forward(&mut t, pre.batch(split, chunk), BnMode::Frozen, None)?;
        let logits = tape
            .output(&t)
            .ok_or_else(|| Error::Invalid("no output".into()))?;
        let k = logits.dim().1;
        for (b, &i) in chunk.iter().enumerate() {
            out.insert(i, (0..k).map(|j| logits[[b, j, 0, 0]]).collect());
        }
    }
    Ok(out)
}

/// Integer ranks `ceil(R·r̃)` (at least 1), with every r̃ scaled by the largest
/// common factor (bisection) that keeps the adapters within `budget` params.
/// If even rank 1 everywhere does not fit (ResNet-20 at a 2 % budget), the
/// layers the search wanted least (smallest `R·r̃`) get no adapter until it
/// fits: the budget is a hard limit.
pub fn fit_budget(layers: &[(usize, ResidualSvd)], rt: &[f64], budget: usize) -> Vec<usize> {
    let ranks = |f: f64| -> Vec<usize> {
        layers
            .iter()
            .zip(rt)
            .map(|((_, s), &r)| {
                ((s.rank_max() as f64 * r * f).ceil() as usize).clamp(1, s.rank_max())
            })
            .collect()
    };
    let cost = |r: &[usize]| -> usize {
        layers
            .iter()
            .zip(r)
            .map(|((_, s), &k)| s.adapter_params(k))
            .sum()
    };
    let mut fitted = ranks(crate::quant::cora::largest_fitting(|f| {
        cost(&ranks(f)) <= budget
    }));
    let mut order: Vec<usize> = (0..layers.len()).collect();
    order.sort_by(|&a, &b| {
        let want = |k: usize| layers[k].1.rank_max() as f64 * rt[k];
        want(a).total_cmp(&want(b))
    });
    for k in order {
        if cost(&fitted) <= budget {
            break;
        }
        fitted[k] = 0;
    }
    fitted
}
