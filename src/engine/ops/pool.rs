//! Pooling. Max pooling pads with −∞; average pooling counts padding (PyTorch's
//! `count_include_pad=True` default).
use crate::engine::ops::conv::conv_output_size;
use crate::engine::tensor::Tensor;

/// Input values × window rows a rayon task gets at least (in whole
/// planes): small maps are not worth a task each.
const MIN_PLANE_WORK: usize = 1 << 14;

fn pool(x: &Tensor, k: usize, s: usize, p: usize, is_max: bool) -> Result<Tensor, String> {
    use rayon::prelude::*;
    let (n, c, h, w) = x.dim();
    if s == 0 || k == 0 {
        return Err(format!(
            "pool window {k}, stride {s}: both must be at least 1"
        ));
    }
    let (ho, wo) = match (conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(format!("pool window {k} larger than padded input {h}x{w}")),
    };
    let x = x.as_standard_layout();
    let xs = x.as_slice().ok_or("standard layout is contiguous")?;
    // Every output is written below: a recycled buffer, not fresh zeroed
    // pages (VGG-11's first pool output is 25 MB per 8 images; zeroing its
    // pages was 6 % of a batch-8 pass).
    let mut out = crate::engine::tensor::uninit((n, c, ho, wo));
    if out.is_empty() {
        return Ok(out);
    }
    let os = out.as_slice_mut().ok_or("fresh tensor is contiguous")?;
    let (plane_in, plane_out) = (h * w, ho * wo);
    let per_task = MIN_PLANE_WORK.div_ceil((plane_in * k).max(1)).max(1);
    os.par_chunks_mut(plane_out)
        .with_min_len(per_task)
        .enumerate()
        .for_each_init(
            || vec![0f32; w],
            |rows, (i, dst)| {
                let src = &xs[i * plane_in..(i + 1) * plane_in];
                pool_plane(src, (h, w), dst, (ho, wo), (k, s, p), is_max, rows);
            },
        );
    Ok(out)
}

/// One plane, separably: the window's rows combined column by column into
/// `rows` (contiguous, so it vectorises), then each output from `k`
/// neighbours of that. Max ignores padding (−∞); the average counts it as
/// zero and divides by `k²`. The same maximum as the window in any order;
/// the average's sum differs from a row-major sum by rounding only.
fn pool_plane(
    src: &[f32],
    (h, w): (usize, usize),
    dst: &mut [f32],
    (ho, wo): (usize, usize),
    (k, s, p): (usize, usize, usize),
    is_max: bool,
    rows: &mut [f32],
) {
    let empty = if is_max { f32::NEG_INFINITY } else { 0.0 };
    let area = (k * k) as f32;
    for oy in 0..ho {
        let y0 = (oy * s).saturating_sub(p);
        let y1 = (oy * s + k).saturating_sub(p).min(h);
        rows.fill(empty);
        for y in y0..y1 {
            let r = &src[y * w..(y + 1) * w];
            if is_max {
                rows.iter_mut().zip(r).for_each(|(a, &v)| *a = a.max(v));
            } else {
                rows.iter_mut().zip(r).for_each(|(a, &v)| *a += v);
            }
        }
        let out = &mut dst[oy * wo..(oy + 1) * wo];
        for (ox, o) in out.iter_mut().enumerate() {
            let x0 = (ox * s).saturating_sub(p);
            let x1 = (ox * s + k).saturating_sub(p).min(w);
            let win = &rows[x0..x1.max(x0)];
            *o = if is_max {
                win.iter().fold(empty, |a, &v| a.max(v))
            } else {
                win.iter().sum::<f32>() / area
            };
        }
    }
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
    if h * w == 0 {
        return Tensor::zeros((n, c, 1, 1));
    }
    // Each plane summed as ndarray sums a contiguous slice (the same
    // eightfold unrolled order as before), without building an ndarray
    // slice per plane: that took 3 µs of ResNet-20's batch-1 pass.
    let sums = crate::engine::tensor::contiguous(x)
        .chunks_exact(h * w)
        .map(|plane| ndarray::ArrayView1::from(plane).sum() / area)
        .collect();
    Tensor::from_shape_vec((n, c, 1, 1), sums).expect("one value per plane")
}
