//! Per-class 2-D Gaussians and the symmetrised closed-form KL divergence
//! `ICD(i,j) = ¼[tr(Σj⁻¹Σi) + tr(Σi⁻¹Σj) − 2d + Δμᵀ(Σi⁻¹ + Σj⁻¹)Δμ]` (d = 2).

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gaussian2 {
    pub mean: [f64; 2],
    /// Unbiased covariance `[[a, b], [b, c]]`, with a ridge when near-singular.
    pub cov: [f64; 3],
}

impl Gaussian2 {
    fn inv(&self) -> [f64; 3] {
        let [a, b, c] = self.cov;
        let det = a * c - b * b;
        [c / det, -b / det, a / det]
    }
}

fn tr_prod(p: [f64; 3], q: [f64; 3]) -> f64 {
    p[0] * q[0] + 2.0 * p[1] * q[1] + p[2] * q[2]
}

fn quad(p: [f64; 3], v: [f64; 2]) -> f64 {
    p[0] * v[0] * v[0] + 2.0 * p[1] * v[0] * v[1] + p[2] * v[1] * v[1]
}

pub fn icd(gi: &Gaussian2, gj: &Gaussian2) -> f64 {
    let (ii, ij) = (gi.inv(), gj.inv());
    let dm = [gi.mean[0] - gj.mean[0], gi.mean[1] - gj.mean[1]];
    let sum = [ii[0] + ij[0], ii[1] + ij[1], ii[2] + ij[2]];
    0.25 * (tr_prod(ij, gi.cov) + tr_prod(ii, gj.cov) - 4.0 + quad(sum, dm))
}

/// A Gaussian per class from 2-D points (`xy`, row-major) and labels.
pub fn class_gaussians(xy: &[f32], labels: &[u32], classes: usize) -> Vec<Gaussian2> {
    (0..classes)
        .map(|c| {
            let pts: Vec<[f64; 2]> = labels
                .iter()
                .enumerate()
                .filter(|(_, &l)| l as usize == c)
                .map(|(i, _)| [xy[2 * i] as f64, xy[2 * i + 1] as f64])
                .collect();
            let n = pts.len().max(2) as f64;
            let m = pts
                .iter()
                .fold([0.0, 0.0], |a, p| [a[0] + p[0], a[1] + p[1]]);
            let mean = [m[0] / n, m[1] / n];
            let mut cov = [0.0; 3];
            for p in &pts {
                let (dx, dy) = (p[0] - mean[0], p[1] - mean[1]);
                cov[0] += dx * dx;
                cov[1] += dx * dy;
                cov[2] += dy * dy;
            }
            cov.iter_mut().for_each(|v| *v /= n - 1.0);
            // [D] ridge 1e-9·tr(Σ) when the determinant is ~0.
            let tr = cov[0] + cov[2];
            if cov[0] * cov[2] - cov[1] * cov[1] <= 1e-12 * tr * tr {
                cov[0] += 1e-9 * tr.max(1e-12);
                cov[2] += 1e-9 * tr.max(1e-12);
            }
            Gaussian2 { mean, cov }
        })
        .collect()
}

/// The symmetric `classes × classes` ICD matrix (zero diagonal).
pub fn icd_matrix(g: &[Gaussian2]) -> Vec<f64> {
    let k = g.len();
    let mut m = vec![0.0; k * k];
    for i in 0..k {
        for j in i + 1..k {
            let v = icd(&g[i], &g[j]);
            m[i * k + j] = v;
            m[j * k + i] = v;
        }
    }
    m
}
