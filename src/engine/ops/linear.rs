//! Fully-connected layer on `[N, in, 1, 1]` (or any `[N, C, H, W]` with
//! C·H·W = in, read in flatten order).
use crate::engine::kernels::{sgemm, MatRef};
use crate::engine::tensor::{contiguous, Tensor};

pub fn linear(
    x: &Tensor,
    weight: &[f32],
    out_features: usize,
    bias: Option<&[f32]>,
) -> Result<Tensor, String> {
    let (n, c, h, w) = x.dim();
    let inf = c * h * w;
    if weight.len() != out_features * inf {
        return Err(format!(
            "input has {inf} features but weight has {} values for {out_features} outputs",
            weight.len()
        ));
    }
    let xs = contiguous(x);
    let mut out = Tensor::zeros((n, out_features, 1, 1));
    let o = out.as_slice_mut().ok_or("fresh tensor is contiguous")?;
    sgemm(
        MatRef::row_major(&xs, n, inf),
        MatRef::transposed(weight, inf, out_features),
        o,
        false,
        // Splitting a small product across threads costs more than it saves.
        if n * inf * out_features > 4_000_000 {
            crate::engine::threads()
        } else {
            1
        },
    );
    if let Some(b) = bias {
        if b.len() != out_features {
            return Err(format!(
                "bias has {} values, expected {out_features}",
                b.len()
            ));
        }
        for row in o.chunks_mut(out_features) {
            row.iter_mut().zip(b).for_each(|(v, bb)| *v += bb);
        }
    }
    Ok(out)
}
