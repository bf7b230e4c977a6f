//! GPTQ (ALGORITHMS.md §4, IST-DASLab/gptq `fasterquant`): quantize columns in
//! order, spreading each column's error over the not-yet-quantized columns
//! through the upper Cholesky factor of the damped inverse Hessian, with lazy
//! block updates. Grid parameters come from the original W.
use crate::engine::kernels::dgemm_acc;
use crate::quant::grid::RowGrid;
use crate::{Error, Result};
use faer::{Mat, Side};
use rayon::prelude::*;

/// Rows per lazy-update GEMM: fixed, so results do not depend on the
/// number of threads.
const ROWS: usize = 32;

#[derive(Clone, Copy, Debug)]
pub struct GptqOptions {
    /// λ = damping · mean(diag H).
    pub damping: f64,
    pub block: usize,
    pub act_order: bool,
}

impl Default for GptqOptions {
    fn default() -> Self {
        GptqOptions {
            damping: 0.01,
            block: 128,
            act_order: false,
        }
    }
}

pub struct GptqResult {
    pub q: Vec<f32>,
    /// Σ (w−q)²/(2·U_ii²), the OBS loss GPTQ minimises.
    pub loss: f64,
    /// Damping actually used (raised when Cholesky failed).
    pub damping: f64,
}

/// Upper factor `U` with `Uᵀ U = (H + λI)⁻¹`, row-major `d × d`.
///
/// With `J` the order-reversing permutation and `J (H + λI) J = L Lᵀ`,
/// `U = J L⁻¹ J`: upper triangular, and `Uᵀ U = J L⁻ᵀ L⁻¹ J = (H + λI)⁻¹`.
/// One Cholesky and one triangular inverse, where factoring `H`, inverting
/// it whole and factoring the inverse did about 2.5× the work. With the
/// lazy update as GEMMs, a 4608-input layer's solve (`benches/quant.rs`
/// `gptq_solve`) went from 5.9 to 2.1 s on 2 threads.
fn inverse_cholesky_upper(h: &[f64], d: usize, lambda: f64) -> Option<Vec<f64>> {
    let rev = |i: usize| d - 1 - i;
    let hm = Mat::<f64>::from_fn(d, d, |i, j| {
        h[rev(i) * d + rev(j)] + if i == j { lambda } else { 0.0 }
    });
    // Each d×d step freed as soon as the next exists: on a 25 088-input
    // layer every copy is 5 GB (`calib_memory::check_gram` counts them).
    let l = hm.cholesky(Side::Lower).ok()?.compute_l();
    drop(hm);
    let mut inv = Mat::<f64>::zeros(d, d);
    faer::linalg::triangular_inverse::invert_lower_triangular(
        inv.as_mut(),
        l.as_ref(),
        faer::get_global_parallelism(),
    );
    drop(l);
    let mut u = vec![0f64; d * d];
    for i in 0..d {
        for j in i..d {
            u[i * d + j] = inv.read(rev(i), rev(j));
        }
    }
    u.iter().all(|v| v.is_finite()).then_some(u)
}

/// `w`: `N × d` row-major; `h`: `d × d` (any positive scale), `grids`: per row.
pub fn gptq(
    w: &[f32],
    n: usize,
    d: usize,
    h: &[f64],
    grids: &[RowGrid],
    opt: GptqOptions,
    layer: &str,
) -> Result<GptqResult> {
    if w.len() != n * d || h.len() != d * d || grids.len() != n {
        return Err(Error::Shape {
            layer: layer.into(),
            problem: format!(
                "gptq: W {}x{d}, H {} values, {} grids",
                n,
                h.len(),
                grids.len()
            ),
        });
    }
    let mut h = h.to_vec();
    // Symmetrise; dead inputs (never active) get H_ii = 1 and W[:, i] = 0.
    for i in 0..d {
        for j in 0..i {
            let m = 0.5 * (h[i * d + j] + h[j * d + i]);
            h[i * d + j] = m;
            h[j * d + i] = m;
        }
    }
    let mut wd: Vec<f64> = w.iter().map(|&v| v as f64).collect();
    for i in 0..d {
        if h[i * d + i] == 0.0 {
            h[i * d + i] = 1.0;
            for r in 0..n {
                wd[r * d + i] = 0.0;
            }
        }
    }
    let perm: Vec<usize> = if opt.act_order {
        let mut p: Vec<usize> = (0..d).collect();
        p.sort_by(|&a, &b| h[b * d + b].total_cmp(&h[a * d + a]));
        p
    } else {
        (0..d).collect()
    };
    let hp: Vec<f64> = (0..d * d)
        .map(|k| h[perm[k / d] * d + perm[k % d]])
        .collect();
    drop(h);
    let mut wp: Vec<f64> = (0..n * d).map(|k| wd[(k / d) * d + perm[k % d]]).collect();
    let mean_diag = (0..d).map(|i| hp[i * d + i]).sum::<f64>() / d as f64;
    let mut damping = opt.damping;
    let mut u = None;
    for _ in 0..5 {
        u = inverse_cholesky_upper(&hp, d, damping * mean_diag);
        if u.is_some() {
            break;
        }
        damping *= 10.0;
    }
    let u = u.ok_or_else(|| Error::Numerical {
        layer: layer.into(),
        problem: "Hessian not positive definite even with damping ×10⁴".into(),
    })?;
    let mut q = vec![0f64; n * d];
    let mut loss = 0.0;
    let block = opt.block.max(1);
    let mut i1 = 0;
    while i1 < d {
        let i2 = (i1 + block).min(d);
        let bw = i2 - i1;
        let mut err = vec![0f64; n * bw];
        for i in i1..i2 {
            let uii = u[i * d + i];
            for r in 0..n {
                let wv = wp[r * d + i];
                let qv = grids[r].quantize(wv as f32) as f64;
                q[r * d + i] = qv;
                let e = (wv - qv) / uii;
                loss += (wv - qv) * (wv - qv) / (2.0 * uii * uii);
                err[r * bw + (i - i1)] = e;
                let row = &mut wp[r * d..(r + 1) * d];
                for j in i + 1..i2 {
                    row[j] -= e * u[i * d + j];
                }
            }
        }
        // Lazy update of the columns after the block: W[:, i2:] −= E · U[i1:i2, i2:],
        // a GEMM per fixed block of rows, the blocks in parallel. (As a
        // scalar loop on one thread, `gptq` was 13 % of the CPU time of a
        // GPTQ run on ResNet-18 at 224.)
        if i2 < d {
            let ub = &u[i1 * d + i2..];
            wp.par_chunks_mut(ROWS * d)
                .zip(err.par_chunks(ROWS * bw))
                .for_each(|(rows, e)| {
                    let m = rows.len() / d;
                    dgemm_acc((m, d - i2, bw), e, bw, ub, d, &mut rows[i2..], d, -1.0);
                });
        }
        i1 = i2;
    }
    let mut out = vec![0f32; n * d];
    for r in 0..n {
        for (k, &p) in perm.iter().enumerate() {
            out[r * d + p] = q[r * d + k] as f32;
        }
    }
    Ok(GptqResult {
        q: out,
        loss,
        damping,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `U` is upper triangular with a positive diagonal and
    /// `Uᵀ U (H + λI) = I` to 1e-9, on a random SPD `H` (37 inputs).
    #[test]
    fn inverse_cholesky_upper_inverts_the_damped_hessian() {
        let d = 37;
        let mut rng = crate::util::Rng::new(3);
        let x: Vec<f64> = (0..d * 50).map(|_| rng.normal()).collect();
        let h: Vec<f64> = (0..d * d)
            .map(|k| (0..50).map(|t| x[k / d * 50 + t] * x[k % d * 50 + t]).sum())
            .collect();
        let lambda = 0.3;
        let u = inverse_cholesky_upper(&h, d, lambda).expect("SPD");
        for i in 0..d {
            assert!(u[i * d + i] > 0.0);
            assert!(
                (0..i).all(|j| u[i * d + j] == 0.0),
                "row {i} below the diagonal"
            );
        }
        for i in 0..d {
            for j in 0..d {
                // (Uᵀ U (H + λI))[i][j]
                let v: f64 = (0..d)
                    .map(|k| {
                        let utu: f64 = (0..d).map(|r| u[r * d + i] * u[r * d + k]).sum();
                        utu * (h[k * d + j] + if k == j { lambda } else { 0.0 })
                    })
                    .sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-9, "({i}, {j}): {v}");
            }
        }
    }
}
