//! Fully-connected layer on `[N, in, 1, 1]` (or any `[N, C, H, W]` with
//! C·H·W = in, read in flatten order).
use crate::engine::kernels::lowbit_linear;
use crate::engine::kernels::{sgemm, sgemm_wide, MatRef};
use crate::engine::tensor::{contiguous, Tensor};

/// Low-bit weights of a linear layer: codes row by row (nibbles or 3-bit
/// packed) and per row `W[o, i] = lo[o] + step[o]·code`.
pub struct Codes4<'a> {
    pub codes: lowbit_linear::RowCodes<'a>,
    pub step: &'a [f32],
    pub lo: &'a [f32],
    pub out_features: usize,
    pub in_features: usize,
}

/// `linear` on weights kept as 4-bit codes.
pub fn linear_w4(x: &Tensor, w: Codes4, bias: Option<&[f32]>) -> Result<Tensor, String> {
    let (n, c, h, wd) = x.dim();
    let (out_features, inf) = (w.out_features, w.in_features);
    if w.codes.bytes().len() < out_features * w.codes.row_stride(inf)
        || w.step.len() < out_features
        || w.lo.len() < out_features
    {
        return Err("4-bit codes do not match the layer".into());
    }
    if c * h * wd != inf {
        return Err(format!(
            "input has {} features but the layer reads {inf}",
            c * h * wd
        ));
    }
    if bias.is_some_and(|b| b.len() != out_features) {
        return Err(format!("bias does not have {out_features} values"));
    }
    let xs = contiguous(x);
    let mut out = Tensor::zeros((n, out_features, 1, 1));
    let o = out.as_slice_mut().ok_or("fresh tensor is contiguous")?;
    lowbit_linear::linear_w4(
        &xs,
        n,
        inf,
        w.codes,
        w.step,
        w.lo,
        out_features,
        bias,
        o,
        crate::engine::threads(),
    );
    Ok(out)
}

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
    // Fewer images than outputs (VGG's classifier below batch 4096): the
    // product the other way round, 1.4–4.6× faster (`sgemm_wide`).
    let product = if n < out_features { sgemm_wide } else { sgemm };
    product(
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
