//! Second-moment statistics of a layer's GEMM input `X ∈ R^{d×m}` (im2col of
//! the captured activations): `X Xᵀ` for GPTQ, and `X X̃ᵀ`, `X̃ X̃ᵀ` on sampled
//! patches for GPFQ. Groups of 8 images summed in f32 — conv Hessians on the
//! Gram kernel (`engine::kernels::gram`) where the CPU has AVX2 or AVX-512,
//! else one GEMM per image — and the groups in order in f64 (ALGORITHMS.md
//! §0: accumulate Gram matrices in f64).
use crate::engine::kernels::gram as gram_kernel;
use crate::engine::kernels::{sgemm, MatRef};
use crate::engine::ops::conv::im2col_pitched;
use crate::engine::ops::{conv_output_size, im2col, ConvGeom};
use crate::engine::Tensor;
use crate::ordered::ordered_sum;
use crate::util::Rng;

/// How a layer reads its input: conv geometry, or a linear layer.
#[derive(Clone, Copy, Debug)]
pub enum LayerGeom {
    Conv { shape: [usize; 4], geom: ConvGeom },
    Linear { in_features: usize },
}

impl LayerGeom {
    pub fn d(&self) -> usize {
        match self {
            LayerGeom::Conv { shape, .. } => shape[1] * shape[2] * shape[3],
            LayerGeom::Linear { in_features } => *in_features,
        }
    }
}

/// Output rows and columns of a `shape` conv on an `h × w` input.
fn out_hw(h: usize, w: usize, shape: [usize; 4], stride: usize, pad: usize) -> (usize, usize) {
    (
        conv_output_size(h, shape[2], stride, pad).unwrap_or(0),
        conv_output_size(w, shape[3], stride, pad).unwrap_or(0),
    )
}

/// Columns of image `b` (`d × P`, row-major) with the given stride override.
fn columns(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    shape: [usize; 4],
    stride: usize,
    pad: usize,
) -> (Vec<f32>, usize) {
    let (kh, kw) = (shape[2], shape[3]);
    let (ho, wo) = out_hw(h, w, shape, stride, pad);
    let p = ho * wo;
    let mut col = vec![0f32; shape[1] * kh * kw * p];
    im2col(
        x,
        (h, w),
        (0, c.min(shape[1])),
        (kh, kw),
        stride,
        pad,
        (0, ho, wo),
        &mut col,
    );
    (col, p)
}

/// At most this many bytes of columns per Gram kernel call.
const COLUMNS_BYTES: usize = 16 << 20;

thread_local! {
    /// [`group_columns`]' matrix, reused: a few MB per group of images,
    /// which would otherwise come back as fresh pages every layer.
    static GROUP_COLUMNS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The columns of images `group` side by side in `buf`: a row-major
/// `d × m` matrix (`m` = images × positions), as [`columns`] per image.
fn group_columns(
    xs: &[f32],
    (c, h, w): (usize, usize, usize),
    group: std::ops::Range<usize>,
    shape: [usize; 4],
    geom: ConvGeom,
    buf: &mut Vec<f32>,
) -> usize {
    let (kh, kw, stride) = (shape[2], shape[3], geom.stride.max(1));
    let (ho, wo) = out_hw(h, w, shape, stride, geom.pad);
    let (p, d, per) = (ho * wo, shape[1] * kh * kw, c * h * w);
    let m = group.len() * p;
    if buf.len() < d * m {
        buf.resize(d * m, 0.0);
    }
    for (slot, b) in group.enumerate() {
        im2col_pitched(
            &xs[b * per..(b + 1) * per],
            (h, w),
            (0, c.min(shape[1])),
            (kh, kw),
            stride,
            geom.pad,
            (0, ho, wo),
            &mut buf[slot * p..],
            m,
        );
    }
    m
}

/// `X Xᵀ` over every position the layer computes (its own stride and padding).
pub fn gram(x: &Tensor, lg: LayerGeom) -> Vec<f64> {
    gram_on(x, lg, gram_kernel::available())
}

/// [`gram`] on the Gram kernel, or (`kernel` false) on the GEMM crate, as
/// CPUs without AVX2 run it (public so a test can compare the two).
pub fn gram_on(x: &Tensor, lg: LayerGeom, kernel: bool) -> Vec<f64> {
    let d = lg.d();
    let (n, c, h, w) = x.dim();
    let xs = crate::engine::tensor::contiguous(x);
    match lg {
        LayerGeom::Linear { .. } => {
            let mut acc = vec![0f32; d * d];
            sgemm(
                MatRef::transposed(&xs, d, n),
                MatRef::row_major(&xs, n, d),
                &mut acc,
                false,
                crate::engine::threads(),
            );
            acc.into_iter().map(f64::from).collect()
        }
        LayerGeom::Conv { shape, geom } => {
            let per = c * h * w;
            // Groups of 8 images summed in f32, the groups in order in f64.
            ordered_sum(n.div_ceil(8), d * d, |k| {
                let mut acc = vec![0f32; d * d];
                let group = 8 * k..(8 * k + 8).min(n);
                if kernel && gram_kernel::available() {
                    // The group's columns side by side, one product; on
                    // large maps a few images at a time, so the matrix stays
                    // under COLUMNS_BYTES (ResNet-18's 56×56 layers: 7 MB an image).
                    let (ho, wo) = out_hw(h, w, shape, geom.stride.max(1), geom.pad);
                    let positions = (ho * wo).max(1);
                    let per_call = (COLUMNS_BYTES / (4 * d * positions)).clamp(1, 8);
                    GROUP_COLUMNS.with(|buf| {
                        let mut buf = buf.borrow_mut();
                        for first in group.clone().step_by(per_call) {
                            let part = first..(first + per_call).min(group.end);
                            let m = group_columns(&xs, (c, h, w), part, shape, geom, &mut buf);
                            gram_kernel::gram_lower_acc(&buf, d, m, &mut acc);
                        }
                    });
                    gram_kernel::mirror_lower(&mut acc, d);
                    return acc;
                }
                for b in group {
                    let (col, p) = columns(
                        &xs[b * per..(b + 1) * per],
                        (c, h, w),
                        shape,
                        geom.stride.max(1),
                        geom.pad,
                    );
                    sgemm(
                        MatRef::row_major(&col, d, p),
                        MatRef::transposed(&col, p, d),
                        &mut acc,
                        true,
                        1,
                    );
                }
                acc
            })
        }
    }
}

/// GPFQ's statistics `(G = X X̃ᵀ, H̃ = X̃ X̃ᵀ)`. Convs use non-overlapping patches
/// (stride = kernel) and draw `int(rate·L + 1)` patch indices per image with
/// replacement, the same indices for X and X̃ (reference behaviour, §3).
pub fn gram_pair_sampled(
    x: &Tensor,
    xt: &Tensor,
    lg: LayerGeom,
    rate: f64,
    seed: u64,
) -> (Vec<f64>, Vec<f64>) {
    let d = lg.d();
    let (n, c, h, w) = x.dim();
    let xs = crate::engine::tensor::contiguous(x);
    let xts = crate::engine::tensor::contiguous(xt);
    match lg {
        LayerGeom::Linear { .. } => {
            let mut g = vec![0f32; d * d];
            let mut ht = vec![0f32; d * d];
            let t = crate::engine::threads();
            sgemm(
                MatRef::transposed(&xs, d, n),
                MatRef::row_major(&xts, n, d),
                &mut g,
                false,
                t,
            );
            sgemm(
                MatRef::transposed(&xts, d, n),
                MatRef::row_major(&xts, n, d),
                &mut ht,
                false,
                t,
            );
            (
                g.into_iter().map(f64::from).collect(),
                ht.into_iter().map(f64::from).collect(),
            )
        }
        LayerGeom::Conv { shape, geom } => {
            let per = c * h * w;
            let sum = ordered_sum(n.div_ceil(8), 2 * d * d, |k| {
                let mut g = vec![0f32; d * d];
                let mut ht = vec![0f32; d * d];
                for b in 8 * k..(8 * k + 8).min(n) {
                    let k = shape[2];
                    let (cx, p) =
                        columns(&xs[b * per..(b + 1) * per], (c, h, w), shape, k, geom.pad);
                    let (ct, _) =
                        columns(&xts[b * per..(b + 1) * per], (c, h, w), shape, k, geom.pad);
                    let mut rng = Rng::new(seed ^ (b as u64).wrapping_mul(0x9E37_79B9));
                    let m = (rate * p as f64 + 1.0) as usize;
                    let pick: Vec<usize> = (0..m).map(|_| rng.below(p.max(1))).collect();
                    let gather = |col: &[f32]| -> Vec<f32> {
                        (0..d)
                            .flat_map(|r| pick.iter().map(move |&j| col[r * p + j]))
                            .collect()
                    };
                    let (sx, st) = (gather(&cx), gather(&ct));
                    sgemm(
                        MatRef::row_major(&sx, d, m),
                        MatRef::transposed(&st, m, d),
                        &mut g,
                        true,
                        1,
                    );
                    sgemm(
                        MatRef::row_major(&st, d, m),
                        MatRef::transposed(&st, m, d),
                        &mut ht,
                        true,
                        1,
                    );
                }
                let mut out = g;
                out.extend(ht);
                out
            });
            (sum[..d * d].to_vec(), sum[d * d..].to_vec())
        }
    }
}
