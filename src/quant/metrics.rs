//! Per-layer error figures and histograms.
use serde::{Deserialize, Serialize};

pub fn mse(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum::<f64>()
        / a.len().max(1) as f64
}

/// ‖a − b‖ / ‖a‖.
pub fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Signal-to-quantization-noise ratio of `test` against `reference`, in dB.
pub fn sqnr_db(reference: &[f32], test: &[f32]) -> f64 {
    let sig: f64 = reference.iter().map(|x| (*x as f64).powi(2)).sum();
    let noise: f64 = reference
        .iter()
        .zip(test)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum();
    if noise == 0.0 {
        return 99.0;
    }
    10.0 * (sig / noise).log10()
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Histogram {
    pub lo: f32,
    pub hi: f32,
    pub counts: Vec<u32>,
}

impl Histogram {
    pub fn new(values: &[f32], lo: f32, hi: f32, bins: usize) -> Self {
        let mut counts = vec![0u32; bins];
        let width = (hi - lo).max(1e-12);
        for &v in values {
            let b = (((v - lo) / width) * bins as f32).floor();
            let b = (b.max(0.0) as usize).min(bins - 1);
            counts[b] += 1;
        }
        Histogram { lo, hi, counts }
    }
}

/// FP and quantized histograms over one shared range.
pub fn histogram_pair(fp: &[f32], q: &[f32], bins: usize) -> (Histogram, Histogram) {
    let lo = fp.iter().chain(q).fold(f32::INFINITY, |a, &v| a.min(v));
    let hi = fp.iter().chain(q).fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (-1.0, 1.0)
    };
    (
        Histogram::new(fp, lo, hi, bins),
        Histogram::new(q, lo, hi, bins),
    )
}
