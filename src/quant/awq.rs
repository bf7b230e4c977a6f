//! AWQ for conv and linear layers (ALGORITHMS.md §5): scale input channel c by
//! `s_c = s_X[c]^α` (normalised), quantize `W·diag(s)`, undo the scale, and keep
//! the α with the lowest layer-output error. The error of a candidate is
//! computed exactly from the input Gram matrix, `‖(W_eff − W)X‖² =
//! tr(E·H·Eᵀ)`, instead of re-running the convolution 20 times.
//! The study's variant additionally multiplies the top 1 % input channels (by
//! `s_X`) by `s_sal` and uses the symmetric `max|w|/2^{b−1}` grid (\[D\]).
use crate::engine::kernels::dgemm_acc;
use crate::quant::grid::RowGrid;
use rayon::prelude::*;

#[derive(Clone, Debug)]
pub struct AwqOptions {
    pub alphas: Vec<f64>,
    /// Extra factors for the salient channels (`[1.0]` = plain AWQ).
    pub salient_scales: Vec<f64>,
    pub salient_fraction: f64,
}

impl AwqOptions {
    pub fn plain() -> Self {
        AwqOptions {
            alphas: (0..20).map(|g| g as f64 / 20.0).collect(),
            salient_scales: vec![1.0],
            salient_fraction: 0.0,
        }
    }
    pub fn salient() -> Self {
        AwqOptions {
            salient_scales: vec![1.0, 1.25, 1.5, 2.0],
            salient_fraction: 0.01,
            ..Self::plain()
        }
    }
}

pub struct AwqResult {
    /// The effective weight `Q(W·s)/s`.
    pub q: Vec<f32>,
    /// `Q(W·s)`, on the row grids.
    pub q_scaled: Vec<f32>,
    pub grids: Vec<RowGrid>,
    /// Per input channel.
    pub col_scale: Vec<f32>,
    pub alpha: f64,
    pub salient_scale: f64,
    pub loss: f64,
    /// The α = 0 (RTN) loss, for reference.
    pub rtn_loss: f64,
}

/// `tr(E H Eᵀ)` for `E = a − b` (`N × d`): `E H` as f64 GEMMs over fixed
/// blocks of rows (in parallel; summed in order, so the result does not
/// depend on the thread count). Row by row in scalar loops it was a
/// quarter of an AWQ run: the α search evaluates it 20 times a layer.
pub fn output_error(a: &[f32], b: &[f32], n: usize, d: usize, h: &[f64]) -> f64 {
    const ROWS: usize = 16;
    let e: Vec<f64> = a[..n * d]
        .iter()
        .zip(&b[..n * d])
        .map(|(x, y)| (x - y) as f64)
        .collect();
    let parts: Vec<f64> = e
        .par_chunks(ROWS * d.max(1))
        .map(|rows| {
            let m = rows.len() / d.max(1);
            let mut eh = vec![0f64; m * d];
            dgemm_acc((m, d, d), rows, d, h, d, &mut eh, d, 1.0);
            eh.iter().zip(rows).map(|(x, y)| x * y).sum::<f64>()
        })
        .collect();
    parts.iter().sum()
}

/// `w`: `N × d` with `d = c_in·k2`; `h = X Xᵀ`; `s_x[c] = mean|x_c|`;
/// `fit(row)` gives a row's grid.
pub fn awq(
    w: &[f32],
    n: usize,
    k2: usize,
    h: &[f64],
    s_x: &[f64],
    fit: &dyn Fn(&[f32]) -> RowGrid,
    opt: &AwqOptions,
) -> AwqResult {
    let d = w.len() / n.max(1);
    let cin = s_x.len();
    let mut order: Vec<usize> = (0..cin).collect();
    order.sort_by(|&a, &b| s_x[b].total_cmp(&s_x[a]));
    let n_sal = ((opt.salient_fraction * cin as f64).ceil() as usize).min(cin);
    let salient = &order[..n_sal];
    let mut best: Option<AwqResult> = None;
    let mut rtn_loss = f64::NAN;
    for &alpha in &opt.alphas {
        let mut s: Vec<f64> = s_x.iter().map(|&v| v.powf(alpha).max(1e-4)).collect();
        let (mx, mn) = s
            .iter()
            .fold((f64::MIN, f64::MAX), |(a, b), &v| (a.max(v), b.min(v)));
        let norm = (mx * mn).sqrt();
        s.iter_mut().for_each(|v| *v /= norm);
        for &sal in &opt.salient_scales {
            if sal != 1.0 && n_sal == 0 {
                continue;
            }
            let mut sc = s.clone();
            for &c in salient {
                sc[c] *= sal;
            }
            let scaled: Vec<f32> = w
                .iter()
                .enumerate()
                .map(|(k, &v)| v * sc[(k % d) / k2] as f32)
                .collect();
            let grids: Vec<RowGrid> = scaled.chunks(d).map(fit).collect();
            let q_scaled: Vec<f32> = scaled
                .chunks(d)
                .zip(&grids)
                .flat_map(|(row, g)| row.iter().map(move |&v| g.quantize(v)))
                .collect();
            let q: Vec<f32> = q_scaled
                .iter()
                .enumerate()
                .map(|(k, &v)| v / sc[(k % d) / k2] as f32)
                .collect();
            let loss = output_error(w, &q, n, d, h);
            if alpha == 0.0 && sal == 1.0 {
                rtn_loss = loss;
            }
            if best.as_ref().is_none_or(|b| loss < b.loss) {
                best = Some(AwqResult {
                    q,
                    q_scaled,
                    grids,
                    col_scale: sc.iter().map(|&v| v as f32).collect(),
                    alpha,
                    salient_scale: sal,
                    loss,
                    rtn_loss: f64::NAN,
                });
            }
        }
    }
    let mut r = best.unwrap_or_else(|| AwqResult {
        q: w.to_vec(),
        q_scaled: w.to_vec(),
        grids: vec![],
        col_scale: vec![1.0; cin],
        alpha: 0.0,
        salient_scale: 1.0,
        loss: 0.0,
        rtn_loss: 0.0,
    });
    r.rtn_loss = rtn_loss;
    r
}

/// The Duke study's grid (\[D\] clamped, per channel): `Δ = max|w|/2^{b−1}`,
/// codes in `[−2^{b−1}, 2^{b−1}−1]`.
pub fn seed_grid(row: &[f32], bits: u8) -> RowGrid {
    let half = (1u32 << (bits - 1)) as f32;
    let a = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    RowGrid {
        scale: if a > 0.0 { a / half } else { 1.0 },
        zero: half,
        maxq: 2.0 * half - 1.0,
    }
}

#[cfg(test)]
mod output_error_tests {
    use super::*;

    /// `tr(E H Eᵀ)` with `H = X Xᵀ` equals `‖E X‖²` computed directly, to
    /// 1e-10 relative, on 37 rows (partial row blocks) of 29 inputs.
    #[test]
    fn output_error_is_the_output_energy_of_the_difference() {
        let (n, d, m) = (37usize, 29usize, 41usize);
        let mut rng = crate::util::Rng::new(4);
        let a: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
        let b: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
        let x: Vec<f64> = (0..d * m).map(|_| rng.normal()).collect();
        let h: Vec<f64> = (0..d * d)
            .map(|k| (0..m).map(|t| x[k / d * m + t] * x[k % d * m + t]).sum())
            .collect();
        let direct: f64 = (0..n)
            .map(|r| {
                (0..m)
                    .map(|t| {
                        let y: f64 = (0..d)
                            .map(|i| (a[r * d + i] - b[r * d + i]) as f64 * x[i * m + t])
                            .sum();
                        y * y
                    })
                    .sum::<f64>()
            })
            .sum();
        let got = output_error(&a, &b, n, d, &h);
        assert!((got - direct).abs() <= 1e-10 * direct, "{got} vs {direct}");
    }
}
