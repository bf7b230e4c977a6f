//! Quantization grids (ALGORITHMS.md §1). `gptq_asym`: `lo = min(min w, 0)`,
//! `hi = max(max w, 0)`, `Δ = (hi−lo)/(2^b−1)`, `z = round(−lo/Δ)`;
//! `gptq_sym`: `Δ = 2·max|w|/(2^b−1)`, `z = 2^{b−1}`. Rounding is half-to-even
//! as in PyTorch (`f32::round` would round half away from zero).
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GridKind {
    #[default]
    Asym,
    Sym,
}

/// One row's grid: `q = clamp(round(w/Δ) + z, 0, maxq)`, `ŵ = Δ·(q − z)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowGrid {
    pub scale: f32,
    pub zero: f32,
    pub maxq: f32,
}

impl RowGrid {
    pub fn fit(w: &[f32], bits: u8, kind: GridKind) -> Self {
        let maxq = ((1u32 << bits) - 1) as f32;
        match kind {
            GridKind::Asym => {
                let lo = w.iter().fold(0f32, |a, &v| a.min(v));
                let hi = w.iter().fold(0f32, |a, &v| a.max(v));
                let (lo, hi) = if lo == 0.0 && hi == 0.0 {
                    (-1.0, 1.0)
                } else {
                    (lo, hi)
                };
                let scale = (hi - lo) / maxq;
                RowGrid {
                    scale,
                    zero: (-lo / scale).round_ties_even(),
                    maxq,
                }
            }
            GridKind::Sym => {
                let a = w.iter().fold(0f32, |a, &v| a.max(v.abs()));
                let a = if a == 0.0 { 1.0 } else { a };
                RowGrid {
                    scale: 2.0 * a / maxq,
                    zero: ((maxq + 1.0) / 2.0).round_ties_even(),
                    maxq,
                }
            }
        }
    }

    /// Shrink the range by `p` (for the MSE clipping search).
    pub fn fit_clipped(w: &[f32], bits: u8, kind: GridKind, p: f32) -> Self {
        let scaled: Vec<f32> = w.iter().map(|v| v * p).collect();
        let mut g = Self::fit(&scaled, bits, kind);
        // Keep the zero point of the shrunk range; only the scale is searched.
        if kind == GridKind::Asym {
            g.zero = g.zero.clamp(0.0, g.maxq);
        }
        g
    }

    #[inline]
    pub fn code(&self, w: f32) -> f32 {
        ((w / self.scale).round_ties_even() + self.zero).clamp(0.0, self.maxq)
    }
    #[inline]
    pub fn dequant(&self, q: f32) -> f32 {
        self.scale * (q - self.zero)
    }
    #[inline]
    pub fn quantize(&self, w: f32) -> f32 {
        self.dequant(self.code(w))
    }
    /// Every representable value, ascending.
    pub fn levels(&self) -> Vec<f32> {
        (0..=self.maxq as u32)
            .map(|q| self.dequant(q as f32))
            .collect()
    }
}

/// Fit one grid per row (`per_channel`) or one for the whole matrix, with an
/// optional MSE search over clipping ratios `p = 1 − i/100, i < 80` (norm 2.4,
/// as the OBC vision reference).
pub fn fit_rows(
    w: &[f32],
    rows: usize,
    bits: u8,
    kind: GridKind,
    per_channel: bool,
    mse_search: bool,
) -> Vec<RowGrid> {
    let d = w.len() / rows.max(1);
    let fit_one = |row: &[f32]| -> RowGrid {
        if !mse_search {
            return RowGrid::fit(row, bits, kind);
        }
        let mut best = (f64::INFINITY, RowGrid::fit(row, bits, kind));
        for i in 0..80 {
            let g = RowGrid::fit_clipped(row, bits, kind, 1.0 - i as f32 / 100.0);
            let err: f64 = row
                .iter()
                .map(|&v| ((g.quantize(v) - v).abs() as f64).powf(2.4))
                .sum();
            if err < best.0 {
                best = (err, g);
            }
        }
        best.1
    };
    if per_channel {
        w.chunks(d.max(1)).map(fit_one).collect()
    } else {
        vec![fit_one(w); rows]
    }
}
