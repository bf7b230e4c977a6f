//! Per-element and per-channel ops.
use crate::engine::tensor::Tensor;
use ndarray::{s, Axis};

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
    let (n, c, _, _) = x.dim();
    let sub = x.slice(s![.., .., ..;stride as isize, ..;stride as isize]);
    let (_, _, ho, wo) = sub.dim();
    let mut out = Tensor::zeros((n, c + pad_before + pad_after, ho, wo));
    out.slice_mut(s![.., pad_before..pad_before + c, .., ..])
        .assign(&sub);
    out
}
