//! CoRa-H (ALGORITHMS.md §9): closed-form rank allocations, and the rule that
//! picks among them. Each allocation costs a few forward or backward passes,
//! against CoRa-O's hundreds of Adam steps.
//!
//! \[D\] Measured on held-out train images (ResNet-20, 3-bit RTN, 5/10/20 %
//! budgets) no single closed-form rule is best at every budget: residual
//! energy and output energy win at small budgets, the reference's same-
//! fraction rule (⌊C_in·β⌋) at 20 %, where it gives late layers large ranks.
//! So CoRa-H computes five allocations and keeps the one with the lowest
//! cross-entropy on calibration images (`selected`). That choice tracked the
//! held-out accuracy: at each budget it picked the best rule or one within
//! 0.3 points of it.
use crate::data::{Preprocess, Split};
use crate::model::{forward, Graph, Op, Runner};
use crate::quant::cora::{
    energy_ranks, greedy_ranks, heuristic_ranks, output_gains, uniform_ranks, ResidualSvd,
};
use crate::quant::stats::{gram, LayerGeom};
use crate::train::backward::softmax_cross_entropy;
use crate::train::tape::{self, BnMode};
use crate::{Error, Result};

/// Calibration images used for statistics and for the selection.
const STATS_IMAGES: usize = 256;
const FISHER_IMAGES: usize = 128;
const SELECT_IMAGES: usize = 512;

/// The closed-form rules, by CLI name.
pub const RULES: [&str; 5] = ["energy", "output", "fisher", "channels", "uniform"];

/// What one layer needs: its node, the residual's SVD.
pub type Layer = (usize, ResidualSvd);

/// The rules' shared inputs.
pub struct RuleInputs<'a> {
    /// FP graph (unfused); its layer inputs and gradients give the statistics.
    pub original: &'a Graph,
    /// The quantized graph (unfused, same node indices as `original`).
    pub quantized: &'a Graph,
    pub layers: &'a [Layer],
    pub split: &'a Split,
    pub calib: &'a [usize],
    /// Adapter parameters allowed.
    pub budget: usize,
}

/// The ranks of closed-form rule `rule` (one of [`RULES`]).
pub fn rule_ranks(rule: &str, inp: &RuleInputs) -> Result<Vec<usize>> {
    let svds: Vec<&ResidualSvd> = inp.layers.iter().map(|(_, s)| s).collect();
    Ok(match rule {
        // Σ‖ΔW − ΔW_r‖² smallest (weight error).
        "energy" => energy_ranks(&svds, inp.budget),
        // Σ E‖(ΔW − ΔW_r) x‖² smallest over the layers' FP inputs (output error).
        "output" => {
            let grams = input_grams(inp.original, inp.layers, inp.split, inp.calib)?;
            let gains: Vec<Vec<f64>> = inp
                .layers
                .iter()
                .zip(&grams)
                .map(|((_, svd), h)| output_gains(svd, h, None))
                .collect();
            greedy_ranks(&svds, &gains, inp.budget)
        }
        // Second-order loss increase (empirical Fisher) smallest.
        "fisher" => {
            let gains = fisher_gains(inp.original, inp.layers, inp.split, inp.calib)?;
            greedy_ranks(&svds, &gains, inp.budget)
        }
        // The reference's rule: one fraction β of each layer's channels.
        "channels" => {
            let info: Vec<(usize, usize, &ResidualSvd)> = inp
                .layers
                .iter()
                .map(|(n, s)| (inp.original.weight(*n).map_or(0, |(_, sh)| sh[1]), s.n, s))
                .collect();
            heuristic_ranks(&info, inp.budget)
        }
        // Plain truncation with an equal share of the budget per layer.
        "uniform" => uniform_ranks(&svds, inp.budget),
        r => {
            return Err(Error::Invalid(format!(
                "unknown CoRa rank rule `{r}` ({})",
                RULES.join(", ")
            )))
        }
    })
}

/// One rule's outcome in the selection.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub rule: &'static str,
    pub ranks: Vec<usize>,
    /// Mean cross-entropy on the selection images.
    pub loss: f64,
}

/// CoRa-H: every rule of [`RULES`], scored by the adapted model's
/// cross-entropy on calibration images; the lowest first.
pub fn selected(inp: &RuleInputs) -> Result<Vec<Candidate>> {
    let idx = &inp.calib[..inp.calib.len().min(SELECT_IMAGES)];
    let x = Preprocess::for_model(&inp.original.meta).batch(inp.split, idx);
    let labels: Vec<u32> = idx.iter().map(|&i| inp.split.labels[i]).collect();
    let mut out = vec![];
    for rule in RULES {
        let ranks = rule_ranks(rule, inp)?;
        let g = with_adapters(inp.quantized, inp.layers, &ranks);
        // (The batch mean.)
        let (loss, _, _) = softmax_cross_entropy(&forward(&g.fused(), x.clone())?, &labels);
        out.push(Candidate { rule, ranks, loss });
    }
    out.sort_by(|a, b| a.loss.total_cmp(&b.loss));
    Ok(out)
}

/// `q` with each layer's first `ranks[k]` residual components added to its
/// weight (the adapters merged: exact, the branch is linear).
pub fn with_adapters(q: &Graph, layers: &[Layer], ranks: &[usize]) -> Graph {
    let mut g = q.clone();
    for ((n, svd), &r) in layers.iter().zip(ranks) {
        let c: Vec<f64> = (0..svd.rank_max())
            .map(|i| if i < r { 1.0 } else { 0.0 })
            .collect();
        let delta = svd.reconstruct(&c);
        if let Some(w) = g.weight_mut(*n) {
            w.iter_mut().zip(&delta).for_each(|(o, d)| *o += d);
        }
    }
    g
}

/// `E[x xᵀ]` per image of each layer's input in the FP model.
fn input_grams(
    original: &Graph,
    layers: &[Layer],
    split: &Split,
    calib: &[usize],
) -> Result<Vec<Vec<f64>>> {
    let fp = original.fused();
    let take = &calib[..calib.len().min(STATS_IMAGES)];
    let pre = Preprocess::for_model(&original.meta);
    let mut out = vec![vec![]; layers.len()];
    // A few images at a time: large inputs (ImageNet-sized maps) would hold
    // every layer's activations of all of them at once.
    for chunk in take.chunks(32) {
        let mut run = Runner::new(&fp, pre.batch(split, chunk))?;
        // Folding BN away renumbers nodes: match layers by name.
        while let Some(node) = run.next_node(&fp) {
            let name = &fp.nodes[node].name;
            let k = layers
                .iter()
                .position(|(n, _)| original.nodes[*n].name == *name);
            if let (Some(k), Op::Conv(c)) = (k, &fp.nodes[node].op) {
                let x = run
                    .input_of(&fp, node)
                    .ok_or_else(|| Error::Invalid(format!("{name}: input not captured")))?;
                let lg = LayerGeom::Conv {
                    shape: c.shape,
                    geom: c.geom,
                };
                let g = gram(x, lg);
                if out[k].is_empty() {
                    out[k] = vec![0.0; g.len()];
                }
                for (o, v) in out[k].iter_mut().zip(g) {
                    *o += v / take.len() as f64;
                }
            }
            run.step(&fp)?;
        }
    }
    if let Some(k) = out.iter().position(|h| h.is_empty()) {
        return Err(Error::Invalid(format!(
            "{}: conv input not reached while capturing statistics",
            original.nodes[layers[k].0].name
        )));
    }
    Ok(out)
}

/// The empirical Fisher of the loss along each residual component, times
/// its energy: `σ_i² · mean_s (u_iᵀ G_s v_i)²`, with `G_s` image s's gradient
/// of the cross-entropy with respect to the layer's weight at the FP model —
/// the second-order loss increase that dropping component i would cause
/// (cross terms ignored).
fn fisher_gains(
    original: &Graph,
    layers: &[Layer],
    split: &Split,
    calib: &[usize],
) -> Result<Vec<Vec<f64>>> {
    let pre = Preprocess::for_model(&original.meta);
    let take = &calib[..calib.len().min(FISHER_IMAGES)];
    let zero: Vec<Vec<f64>> = layers
        .iter()
        .map(|(_, s)| vec![0.0; s.rank_max()])
        .collect();
    // Added in image order (`ordered_fold`): the same seed gives the same
    // allocation on any number of threads.
    let sums = crate::ordered::ordered_fold(
        take.len(),
        || original.clone(),
        |g, k| -> Result<Vec<Vec<f64>>> {
            let i = take[k];
            let mut t = tape::forward(g, pre.batch(split, &[i]), BnMode::Frozen, None)?;
            let logits = t
                .output(g)
                .ok_or_else(|| Error::Invalid("no output".into()))?
                .clone();
            let (_, d, _) = softmax_cross_entropy(&logits, &[split.labels[i]]);
            let grads = t.backward(g, d)?;
            Ok(layers
                .iter()
                .map(|(node, svd)| match grads[*node].as_ref() {
                    Some(gw) => svd.project(&gw.w).iter().map(|p| p * p).collect(),
                    None => vec![0.0; svd.rank_max()],
                })
                .collect())
        },
        Ok(zero),
        // The first error is kept; later terms are then ignored.
        |acc, term| match (acc.as_mut(), term) {
            (Ok(a), Ok(b)) => {
                for (x, y) in a.iter_mut().zip(b) {
                    x.iter_mut().zip(y).for_each(|(p, q)| *p += q);
                }
            }
            (Ok(_), Err(e)) => *acc = Err(e),
            (Err(_), _) => {}
        },
    )?;
    Ok(layers
        .iter()
        .zip(sums)
        .map(|((_, svd), f)| svd.s.iter().zip(f).map(|(s, f)| s * s * f).collect())
        .collect())
}
