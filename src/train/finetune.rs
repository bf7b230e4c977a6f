//! Fine-tuning (LAQ's "FT") and quantization-aware training on a split.
use crate::data::{Preprocess, Split};
use crate::engine::Tensor;
use crate::model::Graph;
use crate::train::augment::crop_flip;
use crate::train::backward::softmax_cross_entropy;
use crate::train::optim::{OptimKind, Optimizer, Schedule};
use crate::train::tape::{self, BnMode, FakeQuant};
use crate::util::Rng;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub epochs: f64,
    pub batch: usize,
    pub lr: f64,
    pub optimizer: OptimKind,
    pub momentum: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
    pub augment: bool,
    pub seed: u64,
    /// BatchNorm statistics during training (FT: batch statistics).
    #[serde(default = "train_bn")]
    pub bn_train: bool,
}

fn train_bn() -> bool {
    true
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 1.0,
            batch: 128,
            lr: 0.01,
            optimizer: OptimKind::Sgd,
            momentum: 0.9,
            weight_decay: 5e-4,
            schedule: Schedule::Cosine,
            augment: true,
            seed: 0,
            bn_train: true,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainEvent {
    pub step: usize,
    pub steps: usize,
    pub epoch: f64,
    pub loss: f64,
    pub accuracy: f64,
    pub images_per_s: f64,
    pub lr: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainReport {
    pub steps: usize,
    pub images: usize,
    pub seconds: f64,
    pub images_per_s: f64,
    pub final_loss: f64,
    /// Loss and accuracy per step, for curves.
    pub history: Vec<(f64, f64)>,
}

/// Train `graph` in place on `split[indices]` (shuffled each epoch).
/// `fq` turns a step into a QAT step (graph must be BN-folded).
pub fn finetune(
    graph: &mut Graph,
    split: &Split,
    indices: &[usize],
    pre: &Preprocess,
    cfg: &TrainConfig,
    mut fq: Option<&mut FakeQuant>,
    cancel: &AtomicBool,
    on_step: &mut dyn FnMut(&TrainEvent),
) -> Result<TrainReport> {
    if indices.is_empty() {
        return Err(Error::Invalid("no training images".into()));
    }
    if cfg.batch == 0 || cfg.epochs <= 0.0 || !cfg.lr.is_finite() || cfg.lr <= 0.0 {
        return Err(Error::Invalid(format!(
            "invalid training settings: batch {}, epochs {}, lr {}",
            cfg.batch, cfg.epochs, cfg.lr
        )));
    }
    let per_epoch = indices.len().div_ceil(cfg.batch);
    let steps = ((cfg.epochs * per_epoch as f64).round() as usize).max(1);
    let mut opt = Optimizer::new(
        cfg.optimizer,
        cfg.momentum,
        cfg.weight_decay,
        graph.nodes.len(),
    );
    let mut rng = Rng::new(cfg.seed);
    let mut order: Vec<usize> = indices.to_vec();
    let start = Instant::now();
    let mut history = Vec::with_capacity(steps);
    let mut seen = 0usize;
    let bn = if cfg.bn_train {
        BnMode::Train
    } else {
        BnMode::Frozen
    };
    for step in 0..steps {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let pos = step % per_epoch;
        if pos == 0 {
            rng.shuffle(&mut order);
        }
        let chunk = &order[pos * cfg.batch..((pos + 1) * cfg.batch).min(order.len())];
        let images: Vec<crate::data::Image> = chunk
            .iter()
            .map(|&i| {
                if cfg.augment {
                    crop_flip(&split.images[i], 4, &mut rng)
                } else {
                    split.images[i].clone()
                }
            })
            .collect();
        let labels: Vec<u32> = chunk.iter().map(|&i| split.labels[i]).collect();
        let x: Tensor = pre.batch_images(&images);
        let mut t = tape::forward(graph, x, bn, fq.as_deref())?;
        if let Some(f) = fq.as_deref_mut() {
            observe_ranges(graph, &t, f);
        }
        let logits = t
            .output(graph)
            .ok_or_else(|| Error::Invalid("no output".into()))?
            .clone();
        let (loss, dlogits, correct) = softmax_cross_entropy(&logits, &labels);
        if !loss.is_finite() {
            return Err(Error::Numerical {
                layer: "training".into(),
                problem: format!("loss became {loss} at step {step}; lower the learning rate (now {}). Nothing was saved.", cfg.lr),
            });
        }
        let grads = t.backward(graph, dlogits)?;
        let lr = cfg.lr * cfg.schedule.factor(step, steps);
        opt.step(graph, &grads, lr);
        seen += chunk.len();
        let acc = correct as f64 / chunk.len() as f64;
        history.push((loss, acc));
        on_step(&TrainEvent {
            step: step + 1,
            steps,
            epoch: (step + 1) as f64 / per_epoch as f64,
            loss,
            accuracy: acc,
            images_per_s: seen as f64 / start.elapsed().as_secs_f64(),
            lr,
        });
    }
    graph.refold();
    let secs = start.elapsed().as_secs_f64();
    Ok(TrainReport {
        steps,
        images: seen,
        seconds: secs,
        images_per_s: seen as f64 / secs,
        final_loss: history.last().map_or(0.0, |h| h.0),
        history,
    })
}

/// QAT activation ranges: exponential moving average (constant 0.01) of each
/// quantized input's max |x|, as PyTorch's default observers.
fn observe_ranges(graph: &Graph, t: &tape::Tape, f: &mut FakeQuant) {
    for (i, n) in graph.nodes.iter().enumerate() {
        if f.act_bits.is_none()
            || !matches!(
                n.op,
                crate::model::Op::Conv(_) | crate::model::Op::Linear(_)
            )
        {
            continue;
        }
        let Some(x) = t.values[n.inputs[0]].as_ref() else {
            continue;
        };
        let r = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let qmax = ((1u32 << (f.act_bits.unwrap_or(8) - 1)) - 1) as f32;
        let prev = f.act_range.get(i).copied().flatten();
        let range = match prev {
            Some(p) => 0.99 * p + 0.01 * r,
            None => r,
        };
        if f.act_range.len() < graph.nodes.len() {
            f.act_range.resize(graph.nodes.len(), None);
            f.act_scale.resize(graph.nodes.len(), None);
        }
        f.act_range[i] = Some(range);
        f.act_scale[i] = (range > 0.0).then_some(range / qmax);
    }
}
