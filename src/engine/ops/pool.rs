//! Pooling. Max pooling pads with −∞; average pooling counts padding (PyTorch's
//! `count_include_pad=True` default).
use crate::engine::ops::conv::conv_output_size;
use crate::engine::tensor::Tensor;

fn pool(x: &Tensor, k: usize, s: usize, p: usize, is_max: bool) -> Result<Tensor, String> {
    let (n, c, h, w) = x.dim();
    let (ho, wo) = match (conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(format!("pool window {k} larger than padded input {h}x{w}")),
    };
    let mut out = Tensor::zeros((n, c, ho, wo));
    out.outer_iter_mut()
        .zip(x.outer_iter())
        .for_each(|(mut ob, xb)| {
            for ch in 0..c {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = if is_max { f32::NEG_INFINITY } else { 0.0 };
                        for ky in 0..k {
                            let iy = (oy * s + ky) as isize - p as isize;
                            for kx in 0..k {
                                let ix = (ox * s + kx) as isize - p as isize;
                                let inside =
                                    iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w;
                                let v = if inside {
                                    xb[[ch, iy as usize, ix as usize]]
                                } else if is_max {
                                    f32::NEG_INFINITY
                                } else {
                                    0.0
                                };
                                acc = if is_max { acc.max(v) } else { acc + v };
                            }
                        }
                        ob[[ch, oy, ox]] = if is_max { acc } else { acc / (k * k) as f32 };
                    }
                }
            }
        });
    Ok(out)
}

pub fn max_pool(x: &Tensor, k: usize, s: usize, p: usize) -> Result<Tensor, String> {
    pool(x, k, s, p, true)
}

pub fn avg_pool(x: &Tensor, k: usize, s: usize, p: usize) -> Result<Tensor, String> {
    pool(x, k, s, p, false)
}

/// `[N, C, H, W]` → `[N, C, 1, 1]`, the mean over each plane.
pub fn global_avg_pool(x: &Tensor) -> Tensor {
    let (n, c, h, w) = x.dim();
    let area = (h * w).max(1) as f32;
    let mut out = Tensor::zeros((n, c, 1, 1));
    for b in 0..n {
        for ch in 0..c {
            out[[b, ch, 0, 0]] = x.slice(ndarray::s![b, ch, .., ..]).sum() / area;
        }
    }
    out
}
