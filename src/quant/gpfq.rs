//! GPFQ, greedy path following (ALGORITHMS.md §3), in the Gram form:
//! `c_t = (W[:,≤t]·G[≤t,t] − Q[:,<t]·H̃[<t,t]) / H̃[t,t]` with `G = X X̃ᵀ`,
//! `H̃ = X̃ X̃ᵀ`, then `q_t = sign(c)·δ·min(|floor(c/δ + ½)|, K)`. Exact in exact
//! arithmetic to the direct recursion over samples, and O(N d²) instead of
//! O(N m d), so calibration size costs only in building G and H̃.

/// GPFQ's alphabet `{−K..K}·δ` with `K = 2^{b−1}`, `δ = C·mean_i max|W_i|/K`.
pub fn alphabet_step(w: &[f32], n: usize, bits: u8, c: f64) -> (f64, i32) {
    let d = w.len() / n.max(1);
    let k = 1i32 << (bits - 1);
    let rad = w
        .chunks(d.max(1))
        .map(|r| r.iter().fold(0f32, |a, &v| a.max(v.abs())) as f64)
        .sum::<f64>()
        / n.max(1) as f64;
    (c * rad / k as f64, k)
}

#[inline]
pub fn round_to_alphabet(c: f64, delta: f64, k: i32) -> f64 {
    if delta <= 0.0 {
        return 0.0;
    }
    c.signum() * delta * ((c / delta + 0.5).floor().abs()).min(k as f64)
}

/// `w`: `N × d`; `g`, `ht`: `d × d` row-major (f64). Returns Q (`N × d`).
pub fn gpfq_gram(
    w: &[f32],
    n: usize,
    d: usize,
    g: &[f64],
    ht: &[f64],
    delta: f64,
    k: i32,
) -> Vec<f32> {
    let mut q = vec![0f64; n * d];
    // acc[r] = Σ_{s≤t} W[r,s]·G[s,t] − Σ_{s<t} Q[r,s]·H̃[s,t], built column by column.
    for t in 0..d {
        let htt = ht[t * d + t];
        for r in 0..n {
            let wr = &w[r * d..(r + 1) * d];
            let qr = &q[r * d..r * d + t];
            let mut acc = 0f64;
            for s in 0..=t {
                acc += wr[s] as f64 * g[s * d + t];
            }
            for (s, &qs) in qr.iter().enumerate() {
                acc -= qs * ht[s * d + t];
            }
            let c = if htt > 0.0 { acc / htt } else { 0.0 };
            q[r * d + t] = round_to_alphabet(c, delta, k);
        }
    }
    q.into_iter().map(|v| v as f32).collect()
}

/// The direct recursion over samples (reference for tests): `x`, `xt` are `d × m`.
pub fn gpfq_direct(
    w: &[f32],
    n: usize,
    d: usize,
    x: &[f64],
    xt: &[f64],
    m: usize,
    delta: f64,
    k: i32,
) -> Vec<f32> {
    let mut u = vec![0f64; n * m];
    let mut q = vec![0f32; n * d];
    for t in 0..d {
        let xr = &x[t * m..(t + 1) * m];
        let xtr = &xt[t * m..(t + 1) * m];
        let nn: f64 = xtr.iter().map(|v| v * v).sum();
        for r in 0..n {
            let ur = &mut u[r * m..(r + 1) * m];
            for (uv, xv) in ur.iter_mut().zip(xr) {
                *uv += w[r * d + t] as f64 * xv;
            }
            let c = if nn > 0.0 {
                ur.iter().zip(xtr).map(|(a, b)| a * b).sum::<f64>() / nn
            } else {
                0.0
            };
            let qv = round_to_alphabet(c, delta, k);
            q[r * d + t] = qv as f32;
            for (uv, xv) in ur.iter_mut().zip(xtr) {
                *uv -= qv * xv;
            }
        }
    }
    q
}
