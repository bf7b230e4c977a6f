//! Top-1/top-5 over **All** logits and over the **Sub**set's logits only
//! (argmax restricted to the subset's classes, as in the LAQ paper).
use crate::data::{Preprocess, Split};
use crate::model::{forward, Graph};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassAccuracy {
    pub class: String,
    pub top1: f64,
    pub images: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EvalReport {
    pub top1_all: f64,
    pub top5_all: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top1_sub: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top5_sub: Option<f64>,
    pub images: usize,
    pub seconds: f64,
    pub per_class: Vec<ClassAccuracy>,
}

/// Rank of the true class among `candidates` (0 = top-1).
fn rank_of(logits: &[f32], truth: usize, candidates: &[usize]) -> usize {
    let t = logits[truth];
    candidates
        .iter()
        .filter(|&&c| c != truth && (logits[c] > t || (logits[c] == t && c < truth)))
        .count()
}

/// Evaluate `graph` (ideally `Graph::fused`) on `split[indices]`. With
/// `subset`, Sub accuracy is also reported; `indices` should then hold only
/// subset images. `progress(done, total)` is called after each batch.
pub fn evaluate(
    graph: &Graph,
    split: &Split,
    indices: &[usize],
    pre: &Preprocess,
    subset: Option<&[usize]>,
    batch: usize,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport> {
    if indices.is_empty() {
        return Err(Error::Invalid(format!(
            "no images to evaluate in {}",
            split.source
        )));
    }
    let classes = graph.meta.num_classes;
    if split.num_classes() > classes {
        return Err(Error::Invalid(format!(
            "dataset {} has {} classes but the model outputs {classes}",
            split.source,
            split.num_classes()
        )));
    }
    let start = Instant::now();
    let all: Vec<usize> = (0..classes).collect();
    let (mut top1, mut top5, mut sub1, mut sub5) = (0usize, 0usize, 0usize, 0usize);
    let mut per_class = vec![(0usize, 0usize); split.num_classes()];
    for (b, chunk) in indices.chunks(batch.max(1)).enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let logits = forward(graph, pre.batch(split, chunk))?;
        let flat = logits
            .as_slice()
            .ok_or_else(|| Error::Invalid("non-contiguous logits".into()))?;
        for (row, &i) in flat.chunks(classes).zip(chunk) {
            let truth = split.labels[i] as usize;
            let r = rank_of(row, truth, &all);
            top1 += usize::from(r == 0);
            top5 += usize::from(r < 5);
            per_class[truth].1 += 1;
            per_class[truth].0 += usize::from(r == 0);
            if let Some(s) = subset {
                let rs = rank_of(row, truth, s);
                sub1 += usize::from(rs == 0);
                sub5 += usize::from(rs < 5);
            }
        }
        progress(((b + 1) * batch).min(indices.len()), indices.len());
    }
    let n = indices.len() as f64;
    let pct = |k: usize| 100.0 * k as f64 / n;
    Ok(EvalReport {
        top1_all: pct(top1),
        top5_all: pct(top5),
        top1_sub: subset.map(|_| pct(sub1)),
        top5_sub: subset.map(|_| pct(sub5)),
        images: indices.len(),
        seconds: start.elapsed().as_secs_f64(),
        per_class: per_class
            .iter()
            .enumerate()
            .filter(|(_, (_, t))| *t > 0)
            .map(|(c, (ok, t))| ClassAccuracy {
                class: split.class_names[c].clone(),
                top1: 100.0 * *ok as f64 / *t as f64,
                images: *t,
            })
            .collect(),
    })
}

/// What a user should know when a model's class count differs from a
/// dataset's: labels are the dataset's folder order, so a dataset with
/// fewer classes must hold the model's first ones, and one with more
/// cannot be evaluated (`evaluate` refuses it).
pub fn class_count_warning(model_classes: usize, dataset_classes: usize) -> Option<String> {
    let (m, n) = (model_classes, dataset_classes);
    if n > m {
        Some(format!(
            "the model has {m} classes, the dataset {n}: jobs will fail"
        ))
    } else if n > 0 && n < m {
        Some(format!(
            "the model has {m} classes, the dataset {n}: labels follow folder order, so these must be its first {n}"
        ))
    } else {
        None
    }
}

/// The first `ceil(limit / k)` images of each class in `classes`, in file
/// order (a deterministic, balanced prefix); all of them without a limit.
pub fn eval_indices(split: &Split, classes: &[usize], limit: Option<usize>) -> Vec<usize> {
    let groups = split.by_class();
    let per = limit.map(|l| l.div_ceil(classes.len().max(1)));
    let mut out: Vec<usize> = classes
        .iter()
        .flat_map(|&c| groups[c].iter().take(per.unwrap_or(usize::MAX)).copied())
        .collect();
    if let Some(l) = limit {
        out.sort_unstable();
        out.truncate(l);
    }
    out
}
