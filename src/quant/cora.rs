//! CoRa (ALGORITHMS.md §9): low-rank adapters that reclaim the quantization
//! residual `ΔW = W − Q(W)`. The SVD of the residual's mode-1 unfolding
//! (`N × C_in·k²`) gives the adapter pair of Theorem 1 — a k×k conv
//! `C_in → r` (`S_r^{½}V_rᵀ`) and a 1×1 conv `r → N` (`U_r S_r^{½}`) — whose
//! output equals `conv(x, U_r S_r V_rᵀ)`. Because the branch is linear, the
//! engine runs it merged into the quantized weight (`Q + U_r S_r V_rᵀ`),
//! which is exact; the adapter's parameters are counted separately.
use faer::Mat;

/// Thin SVD of one layer's residual, `U` `N × R`, `σ` descending, `V` `d × R`.
#[derive(Clone, Debug)]
pub struct ResidualSvd {
    pub n: usize,
    pub d: usize,
    pub u: Vec<f64>,
    pub s: Vec<f64>,
    pub v: Vec<f64>,
    /// `V` transposed (`R × d`), so [`Self::reconstruct`]'s inner loop reads
    /// it contiguously (the rank search calls it every step for every layer).
    vt: Vec<f64>,
}

impl ResidualSvd {
    pub fn rank_max(&self) -> usize {
        self.s.len()
    }

    /// Parameters of a rank-`r` adapter: `r·(N + C_in·k²)`.
    pub fn adapter_params(&self, r: usize) -> usize {
        r * (self.n + self.d)
    }

    /// `Σ_i c_i σ_i u_i v_iᵀ` (`N × d`), e.g. `c = 1` for the first r.
    pub fn reconstruct(&self, c: &[f64]) -> Vec<f32> {
        let r = self.s.len();
        let mut out = vec![0f64; self.n * self.d];
        for i in 0..r {
            let k = c.get(i).copied().unwrap_or(0.0) * self.s[i];
            if k == 0.0 {
                continue;
            }
            let vi = &self.vt[i * self.d..(i + 1) * self.d];
            for a in 0..self.n {
                let ua = self.u[a * r + i] * k;
                let row = &mut out[a * self.d..(a + 1) * self.d];
                for (o, &v) in row.iter_mut().zip(vi) {
                    *o += ua * v;
                }
            }
        }
        out.into_iter().map(|v| v as f32).collect()
    }

    /// `p_i = u_iᵀ G v_i` for a gradient `G` (`N × d`): how the loss moves
    /// with component i's weight.
    pub fn project(&self, g: &[f32]) -> Vec<f64> {
        let r = self.s.len();
        let mut gv = vec![0f64; self.n * r];
        for a in 0..self.n {
            let row = &g[a * self.d..(a + 1) * self.d];
            for (b, &gab) in row.iter().enumerate() {
                if gab == 0.0 {
                    continue;
                }
                let vb = &self.v[b * r..(b + 1) * r];
                let dst = &mut gv[a * r..(a + 1) * r];
                for (o, &vv) in dst.iter_mut().zip(vb) {
                    *o += gab as f64 * vv;
                }
            }
        }
        (0..r)
            .map(|i| (0..self.n).map(|a| self.u[a * r + i] * gv[a * r + i]).sum())
            .collect()
    }
}

/// SVD of `w − q` (`N × d`, row-major) with faer, in f64.
pub fn residual_svd(w: &[f32], q: &[f32], n: usize, d: usize) -> ResidualSvd {
    let m = Mat::<f64>::from_fn(n, d, |a, b| (w[a * d + b] - q[a * d + b]) as f64);
    let svd = m.thin_svd();
    let r = n.min(d);
    let (u, s, v) = (svd.u(), svd.s_diagonal(), svd.v());
    ResidualSvd {
        n,
        d,
        u: (0..n * r).map(|k| u.read(k / r, k % r)).collect(),
        s: (0..r).map(|i| s.read(i)).collect(),
        v: (0..d * r).map(|k| v.read(k / r, k % r)).collect(),
        vt: (0..r * d).map(|k| v.read(k % d, k / d)).collect(),
    }
}

/// The normalised Butterworth kernel `T_i = 1/√(1 + ((i/R)/r̃)^{2n})` and
/// `d(T_i²)/dr̃`. `T_0 = 1`, and `T² = ½` at `i = r̃R` (the −3 dB point).
pub fn butterworth(r_max: usize, rt: f64, order: u32) -> (Vec<f64>, Vec<f64>) {
    let rt = rt.max(1e-6);
    let two_n = 2 * order as i32;
    (0..r_max)
        .map(|i| {
            let z = ((i as f64 / r_max as f64) / rt).min(1e6);
            let zp = z.powi(two_n);
            let t2 = 1.0 / (1.0 + zp);
            // d(T²)/dr̃ = 2n·z^{2n}/(1+z^{2n})² / r̃
            let dt2 = two_n as f64 * zp / ((1.0 + zp) * (1.0 + zp)) / rt;
            (t2, dt2)
        })
        .unzip()
}

/// CoRa-H [V `get_lora_rank_hard`]: `r = max(1, min(⌊C_in·β⌋, ⌊N·β⌋))` with one
/// fraction β for every layer, the largest that keeps the adapters within
/// `budget` parameters (bisection on β).
pub fn heuristic_ranks(layers: &[(usize, usize, &ResidualSvd)], budget: usize) -> Vec<usize> {
    let ranks = |beta: f64| -> Vec<usize> {
        layers
            .iter()
            .map(|&(cin, n, svd)| {
                (((cin as f64 * beta).floor() as usize).min((n as f64 * beta).floor() as usize))
                    .max(1)
                    .min(svd.rank_max())
            })
            .collect()
    };
    let cost = |r: &[usize]| -> usize {
        layers
            .iter()
            .zip(r)
            .map(|(l, &k)| l.2.adapter_params(k))
            .sum()
    };
    ranks(largest_fitting(|f| cost(&ranks(f)) <= budget))
}

/// The largest factor in [0, 1] for which `fits` holds (bisection; `fits`
/// must be monotone: true up to some point, false after).
pub fn largest_fitting(fits: impl Fn(f64) -> bool) -> f64 {
    if fits(1.0) {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..50 {
        let mid = 0.5 * (lo + hi);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The plain baseline: every layer gets an equal share of the budget and
/// keeps as many leading singular components as fit in it.
pub fn uniform_ranks(layers: &[&ResidualSvd], budget: usize) -> Vec<usize> {
    let share = budget / layers.len().max(1);
    layers
        .iter()
        .map(|s| (share / (s.n + s.d)).min(s.rank_max()))
        .collect()
}

/// CoRa-H as qscope defines it: greedily keep the singular component with the
/// most residual energy per adapter parameter, `σ_i² / (N + C_in·k²)`, until
/// the budget is spent. Because each layer's gains `σ_i²` fall with i, this
/// greedy choice minimises `Σ_l ‖ΔW_l − ΔW_l,r‖_F²` (Eckart–Young per layer)
/// under the parameter budget exactly.
pub fn energy_ranks(layers: &[&ResidualSvd], budget: usize) -> Vec<usize> {
    let gains: Vec<Vec<f64>> = layers
        .iter()
        .map(|s| s.s.iter().map(|v| v * v).collect())
        .collect();
    greedy_ranks(layers, &gains, budget)
}

/// Keep, one at a time, the next component of the layer whose next gain per
/// adapter parameter is largest, until nothing more fits in `budget`.
/// `gains[l][i]` is what component i of layer l buys.
pub fn greedy_ranks(layers: &[&ResidualSvd], gains: &[Vec<f64>], budget: usize) -> Vec<usize> {
    let mut ranks = vec![0usize; layers.len()];
    let mut spent = 0usize;
    loop {
        let best = layers
            .iter()
            .enumerate()
            .filter(|(k, s)| ranks[*k] < s.rank_max() && spent + s.n + s.d <= budget)
            .map(|(k, s)| (k, gains[k][ranks[k]] / (s.n + s.d) as f64))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((k, _)) => {
                ranks[k] += 1;
                spent += layers[k].n + layers[k].d;
            }
            None => return ranks,
        }
    }
}

/// How much output error each component removes: with the layer input's
/// second moment `H = E[x xᵀ]` (`d × d`) and the per-output-channel scale `s`
/// applied after the conv (BatchNorm), component i contributes
/// `σ_i² · (v_iᵀ H v_i) · Σ_a s_a² u_ai²` to `E‖diag(s) ΔW x‖²`. (Exact
/// without `s`, where the `u_i` are orthonormal and cross terms vanish.)
pub fn output_gains(svd: &ResidualSvd, h: &[f64], scale: Option<&[f32]>) -> Vec<f64> {
    let (r, d) = (svd.rank_max(), svd.d);
    (0..r)
        .map(|i| {
            let vi: Vec<f64> = (0..d).map(|b| svd.v[b * r + i]).collect();
            let vhv: f64 = (0..d)
                .map(|a| {
                    vi[a]
                        * h[a * d..(a + 1) * d]
                            .iter()
                            .zip(&vi)
                            .map(|(x, y)| x * y)
                            .sum::<f64>()
                })
                .sum();
            let us: f64 = (0..svd.n)
                .map(|a| {
                    let sa = scale.map_or(1.0, |s| s[a] as f64);
                    let u = svd.u[a * r + i];
                    sa * sa * u * u
                })
                .sum();
            svd.s[i] * svd.s[i] * vhv * us
        })
        .collect()
}
