//! Per-element and per-channel ops.
use crate::engine::tensor::Tensor;
use ndarray::Axis;

pub fn relu(mut x: Tensor) -> Tensor {
    x.mapv_inplace(|v| v.max(0.0));
    x
}

pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor, String> {
    if a.dim() != b.dim() {
        return Err(format!("cannot add {:?} and {:?}", a.dim(), b.dim()));
    }
    Ok(a + b)
}

/// Eval-mode batch norm as a per-channel affine map `y = x·scale[c] + shift[c]`.
pub fn batchnorm(mut x: Tensor, scale: &[f32], shift: &[f32]) -> Result<Tensor, String> {
    let c = x.dim().1;
    if scale.len() != c || shift.len() != c {
        return Err(format!(
            "batch norm has {} channels, input has {c}",
            scale.len()
        ));
    }
    for mut img in x.outer_iter_mut() {
        for (ch, mut plane) in img.axis_iter_mut(Axis(0)).enumerate() {
            let (a, b) = (scale[ch], shift[ch]);
            plane.mapv_inplace(|v| v * a + b);
        }
    }
    Ok(x)
}

/// The parameter-free "option A" ResNet shortcut: keep every `stride`-th pixel
/// and zero-pad channels, `pad_before` in front and `pad_after` behind.
pub fn shortcut_pad(x: &Tensor, stride: usize, pad_before: usize, pad_after: usize) -> Tensor {
    let (n, c, h, w) = x.dim();
    let s = stride.max(1);
    let (ho, wo) = (h.div_ceil(s), w.div_ceil(s));
    let co = c + pad_before + pad_after;
    // Row by row from the contiguous input into a recycled buffer: the
    // ndarray strided slice and assign took 2.2 µs for ResNet-20's 16×32×32
    // shortcut at batch 1.
    let xs = crate::engine::tensor::contiguous(x);
    if n * co * ho * wo == 0 {
        return Tensor::zeros((n, co, ho, wo));
    }
    let mut out = crate::engine::tensor::uninit((n, co, ho, wo));
    let dst = out.as_slice_mut().expect("fresh tensor is contiguous");
    for (b, img) in dst.chunks_exact_mut(co * ho * wo).enumerate() {
        let (front, rest) = img.split_at_mut(pad_before * ho * wo);
        let (kept, back) = rest.split_at_mut(c * ho * wo);
        front.fill(0.0);
        back.fill(0.0);
        for (ch, plane) in kept.chunks_exact_mut(ho * wo).enumerate() {
            let src = &xs[(b * c + ch) * h * w..][..h * w];
            for (oy, row) in plane.chunks_exact_mut(wo).enumerate() {
                let line = &src[oy * s * w..][..w];
                for (d, v) in row.iter_mut().zip(line.iter().step_by(s)) {
                    *d = *v;
                }
            }
        }
    }
    out
}
