//! UMAP to 2-D, following umap-learn 0.5's defaults (n_neighbors 15,
//! min_dist 0.1 → a = 1.577, b = 0.8951, learning rate 1, negative sample
//! rate 5, 200 epochs above 10,000 points and 500 below) with two \[D\] choices:
//! exact kNN (from a GEMM; the data here is ≤ 50k points) and a seeded random
//! initial layout in [−10, 10]² instead of the spectral one, so runs are
//! reproducible and no eigen-solver is needed.
use crate::engine::kernels::{sgemm, MatRef};
use crate::util::Rng;
use rayon::prelude::*;

#[derive(Clone, Debug)]
pub struct UmapConfig {
    pub n_neighbors: usize,
    pub a: f64,
    pub b: f64,
    pub epochs: Option<usize>,
    pub negative_rate: usize,
    pub seed: u64,
}

impl Default for UmapConfig {
    fn default() -> Self {
        UmapConfig {
            n_neighbors: 15,
            a: 1.577,
            b: 0.8951,
            epochs: None,
            negative_rate: 5,
            seed: 0,
        }
    }
}

/// For every point, its k nearest neighbours (excluding itself) and distances.
fn knn(x: &[f32], n: usize, d: usize, k: usize) -> Vec<Vec<(usize, f32)>> {
    let norms: Vec<f32> = x.chunks(d).map(|r| r.iter().map(|v| v * v).sum()).collect();
    let block = 512;
    (0..n.div_ceil(block))
        .into_par_iter()
        .flat_map_iter(|bi| {
            let (a, z) = (bi * block, ((bi + 1) * block).min(n));
            let mut dots = vec![0f32; (z - a) * n];
            sgemm(
                MatRef::row_major(&x[a * d..z * d], z - a, d),
                MatRef::transposed(x, d, n),
                &mut dots,
                false,
                1,
            );
            (a..z)
                .map(|i| {
                    let row = &dots[(i - a) * n..(i - a + 1) * n];
                    let mut cand: Vec<(usize, f32)> = (0..n)
                        .filter(|&j| j != i)
                        .map(|j| (j, (norms[i] + norms[j] - 2.0 * row[j]).max(0.0).sqrt()))
                        .collect();
                    let kk = k.min(cand.len());
                    if kk > 0 && kk < cand.len() {
                        cand.select_nth_unstable_by(kk - 1, |p, q| p.1.total_cmp(&q.1));
                    }
                    cand.truncate(kk);
                    cand.sort_by(|p, q| p.1.total_cmp(&q.1));
                    cand
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Fuzzy simplicial set: per point ρ (nearest distance) and σ with
/// `Σ_j exp(−(d_j − ρ)/σ) = log2(k)`; symmetrised by fuzzy union.
fn fuzzy_graph(nn: &[Vec<(usize, f32)>]) -> Vec<(usize, usize, f64)> {
    let mut directed: std::collections::HashMap<(usize, usize), f64> = Default::default();
    for (i, row) in nn.iter().enumerate() {
        let target = (row.len().max(1) as f64).log2();
        let rho = row.first().map_or(0.0, |p| p.1 as f64);
        let (mut lo, mut hi, mut sigma) = (0.0f64, f64::INFINITY, 1.0f64);
        for _ in 0..64 {
            let s: f64 = row
                .iter()
                .map(|p| (-((p.1 as f64 - rho).max(0.0)) / sigma).exp())
                .sum();
            if (s - target).abs() < 1e-5 {
                break;
            }
            if s > target {
                hi = sigma;
                sigma = 0.5 * (lo + hi);
            } else {
                lo = sigma;
                sigma = if hi.is_infinite() {
                    sigma * 2.0
                } else {
                    0.5 * (lo + hi)
                };
            }
        }
        for &(j, dist) in row {
            directed.insert(
                (i, j),
                (-((dist as f64 - rho).max(0.0)) / sigma.max(1e-12)).exp(),
            );
        }
    }
    let mut edges = vec![];
    for (&(i, j), &w) in &directed {
        let back = directed.get(&(j, i)).copied().unwrap_or(0.0);
        if i < j || back == 0.0 {
            let (a, b) = if i < j { (i, j) } else { (j, i) };
            edges.push((a, b, w + back - w * back));
        }
    }
    edges.sort_by_key(|p| (p.0, p.1));
    edges.dedup_by(|p, q| p.0 == q.0 && p.1 == q.1);
    edges
}

/// Embed `n` points of dimension `d` (row-major) in 2-D.
pub fn umap_2d(x: &[f32], n: usize, d: usize, cfg: &UmapConfig) -> Vec<f32> {
    let mut rng = Rng::new(cfg.seed);
    let mut y: Vec<f64> = (0..2 * n).map(|_| 20.0 * rng.unit() - 10.0).collect();
    if n < 2 {
        return y.into_iter().map(|v| v as f32).collect();
    }
    let edges = fuzzy_graph(&knn(x, n, d, cfg.n_neighbors));
    let epochs = cfg.epochs.unwrap_or(if n > 10_000 { 200 } else { 500 });
    let wmax = edges.iter().fold(0f64, |m, e| m.max(e.2)).max(1e-12);
    let (a, b) = (cfg.a, cfg.b);
    let clip = |v: f64| v.clamp(-4.0, 4.0);
    for epoch in 0..epochs {
        let lr = 1.0 - epoch as f64 / epochs as f64;
        for &(i, j, w) in &edges {
            // Each edge is sampled in proportion to its weight.
            if rng.unit() > w / wmax {
                continue;
            }
            let (dx, dy) = (y[2 * i] - y[2 * j], y[2 * i + 1] - y[2 * j + 1]);
            let d2 = dx * dx + dy * dy;
            if d2 > 0.0 {
                let coef = -2.0 * a * b * d2.powf(b - 1.0) / (1.0 + a * d2.powf(b));
                let (gx, gy) = (clip(coef * dx), clip(coef * dy));
                y[2 * i] += lr * gx;
                y[2 * i + 1] += lr * gy;
                y[2 * j] -= lr * gx;
                y[2 * j + 1] -= lr * gy;
            }
            for _ in 0..cfg.negative_rate {
                let k = rng.below(n);
                if k == i {
                    continue;
                }
                let (dx, dy) = (y[2 * i] - y[2 * k], y[2 * i + 1] - y[2 * k + 1]);
                let d2 = dx * dx + dy * dy;
                let coef = 2.0 * b / ((0.001 + d2) * (1.0 + a * d2.powf(b)));
                let (gx, gy) = if d2 > 0.0 {
                    (clip(coef * dx), clip(coef * dy))
                } else {
                    (4.0, 4.0)
                };
                y[2 * i] += lr * gx;
                y[2 * i + 1] += lr * gy;
            }
        }
    }
    y.into_iter().map(|v| v as f32).collect()
}
