//! Label-aware quantization (ALGORITHMS.md §10): class-subset generation by
//! inter-class distance. Features of the model under study (\[D\] the cheap
//! option) → UMAP to 2-D (seeded) → a Gaussian per class → symmetrised KL
//! between every pair → greedy subsets spanning the median-distance range.
pub mod chart;
pub mod experiment;
pub mod icd;
pub mod select;
pub mod umap;

pub use icd::{class_gaussians, icd_matrix, Gaussian2};
pub use select::{select_subsets, Subset, SubsetKind};
pub use umap::{umap_2d, UmapConfig};

use crate::data::{Preprocess, Split};
use crate::model::{Graph, Op, Runner};
use crate::{Error, Result};

/// Penultimate features (the classifier's input) of `split[indices]`.
pub fn features(graph: &Graph, split: &Split, indices: &[usize]) -> Result<(Vec<f32>, usize)> {
    let fused = graph.fused();
    let head = fused
        .nodes
        .iter()
        .rposition(|n| matches!(n.op, Op::Linear(_)))
        .ok_or_else(|| {
            Error::Invalid("model has no linear classifier to take features before".into())
        })?;
    let pre = Preprocess::for_model(&fused.meta);
    let mut out = Vec::new();
    let mut dim = 0;
    for chunk in indices.chunks(256) {
        let mut run = Runner::new(&fused, pre.batch(split, chunk))?;
        while run.next_node(&fused) != Some(head) {
            run.step(&fused)?;
        }
        let x = run
            .input_of(&fused, head)
            .ok_or_else(|| Error::Invalid("features not captured".into()))?;
        let (n, c, h, w) = x.dim();
        dim = c * h * w;
        out.extend(x.iter().copied());
        debug_assert_eq!(out.len() % (dim.max(1)), 0, "{n}");
    }
    Ok((out, dim))
}
