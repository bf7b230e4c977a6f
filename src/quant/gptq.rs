//! GPTQ (ALGORITHMS.md §4, IST-DASLab/gptq `fasterquant`): quantize columns in
//! order, spreading each column's error over the not-yet-quantized columns
//! through the upper Cholesky factor of the damped inverse Hessian, with lazy
//! block updates. Grid parameters come from the original W.
use crate::quant::grid::RowGrid;
use crate::{Error, Result};
use faer::linalg::solvers::SolverCore;
use faer::{Mat, Side};

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
fn inverse_cholesky_upper(h: &[f64], d: usize, lambda: f64) -> Option<Vec<f64>> {
    let hm = Mat::<f64>::from_fn(d, d, |i, j| {
        h[i * d + j] + if i == j { lambda } else { 0.0 }
    });
    // Each d×d step freed as soon as the next exists: on a 25 088-input
    // layer every copy is 5 GB (`calib_memory::check_gram` counts them).
    let factor = hm.cholesky(Side::Lower).ok()?;
    drop(hm);
    let inv = factor.inverse();
    drop(factor);
    let l = inv.cholesky(Side::Lower).ok()?.compute_l();
    drop(inv);
    let mut u = vec![0f64; d * d];
    for i in 0..d {
        for j in i..d {
            u[i * d + j] = l.read(j, i);
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
        // Lazy update of the columns after the block: W[:, i2:] −= E · U[i1:i2, i2:].
        if i2 < d {
            for r in 0..n {
                let e = &err[r * bw..(r + 1) * bw];
                let row = &mut wp[r * d..(r + 1) * d];
                for (k, &ek) in e.iter().enumerate() {
                    if ek == 0.0 {
                        continue;
                    }
                    let urow = &u[(i1 + k) * d..(i1 + k + 1) * d];
                    for j in i2..d {
                        row[j] -= ek * urow[j];
                    }
                }
            }
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
