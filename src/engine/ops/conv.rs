//! 2-D convolution as one GEMM per image and group: `out[N_g, HoWo] = W_g · col`,
//! with bias, residual add and ReLU fused into a single pass over the output.
//! One GEMM per image, parallel across images, measured faster than one large
//! batched GEMM on ResNet-20's shapes (the column buffer stays in L2).
use crate::engine::kernels::{direct_conv, sgemm, winograd, MatRef};
use crate::engine::tensor::{contiguous, Tensor};
use rayon::prelude::*;
use std::cell::RefCell;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConvGeom {
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
}

impl ConvGeom {
    pub fn new(stride: usize, pad: usize) -> Self {
        ConvGeom {
            stride,
            pad,
            groups: 1,
        }
    }
}

/// What happens to each output value after the GEMM, in this order:
/// `+ bias[c]`, `+ residual`, `max(0, ·)`.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a Tensor>,
    pub relu: bool,
}

pub fn conv_output_size(size: usize, kernel: usize, stride: usize, pad: usize) -> Option<usize> {
    (size + 2 * pad).checked_sub(kernel).map(|v| v / stride + 1)
}

thread_local! {
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A 4-bit layer's Winograd transform, reused per call.
    static W4_BUFFERS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

static DIRECT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Allow (default) or forbid the direct-convolution kernel, e.g. to compare
/// it with the im2col + GEMM path in tests and benchmarks.
pub fn set_direct_conv(enabled: bool) {
    DIRECT.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

fn direct_enabled() -> bool {
    DIRECT.load(std::sync::atomic::Ordering::Relaxed)
}

static WINOGRAD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Allow (default) or forbid the Winograd kernel for 3×3 stride-1 convs
/// (tests compare it with the direct kernel; `qscope bench --no-winograd`).
pub fn set_winograd(enabled: bool) {
    WINOGRAD.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

pub fn winograd_enabled() -> bool {
    WINOGRAD.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether 3×3 stride-1 f32 convs run the Winograd kernel here: enabled,
/// and AVX-512 or AVX2 + FMA present.
pub fn winograd_available() -> bool {
    winograd_enabled() && direct_enabled() && winograd::is_available()
}

/// Unfold one image's channels `[c0, c0+cg)` and output rows `[oy0, oy1)` into
/// `col[(c*kh+ky)*kw+kx, (oy-oy0)*wo+ox]` (PyTorch's `flatten(1)` column
/// order), zeros where the window leaves the image. Interior runs are plain
/// slice copies (stride 1) so this stays at memory speed.
#[allow(clippy::too_many_arguments)]
pub fn im2col(
    img: &[f32],
    hw: (usize, usize),
    channels: (usize, usize),
    kernel: (usize, usize),
    stride: usize,
    pad: usize,
    (oy0, oy1, wo): (usize, usize, usize),
    col: &mut [f32],
) {
    let ncols = (oy1 - oy0) * wo;
    im2col_pitched(
        img,
        hw,
        channels,
        kernel,
        stride,
        pad,
        (oy0, oy1, wo),
        col,
        ncols,
    );
}

/// [`im2col`] with rows `pitch` floats apart (≥ the row length), so several
/// images' columns can sit side by side in one matrix.
#[allow(clippy::too_many_arguments)]
pub fn im2col_pitched(
    img: &[f32],
    (h, w): (usize, usize),
    (c0, cg): (usize, usize),
    (kh, kw): (usize, usize),
    stride: usize,
    pad: usize,
    (oy0, oy1, wo): (usize, usize, usize),
    col: &mut [f32],
    pitch: usize,
) {
    let ncols = (oy1 - oy0) * wo;
    assert!(pitch >= ncols, "im2col: pitch below the row length");
    for c in 0..cg {
        let src = &img[(c0 + c) * h * w..(c0 + c + 1) * h * w];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &mut col[((c * kh + ky) * kw + kx) * pitch..][..ncols];
                // Output columns ox whose input column ox*stride + kx - pad is inside.
                let off = kx as isize - pad as isize;
                let ox_lo = if off >= 0 {
                    0
                } else {
                    ((-off) as usize).div_ceil(stride)
                };
                let ox_hi = if (w as isize) - off <= 0 {
                    0
                } else {
                    (((w as isize - off) as usize).div_ceil(stride)).min(wo)
                };
                for oy in oy0..oy1 {
                    let dst = &mut row[(oy - oy0) * wo..(oy - oy0 + 1) * wo];
                    let iy = (oy * stride + ky) as isize - pad as isize;
                    if iy < 0 || iy >= h as isize || ox_lo >= ox_hi {
                        dst.fill(0.0);
                        continue;
                    }
                    let src_row = &src[iy as usize * w..(iy as usize + 1) * w];
                    dst[..ox_lo].fill(0.0);
                    dst[ox_hi..].fill(0.0);
                    let first = (ox_lo * stride) as isize + off;
                    if stride == 1 {
                        dst[ox_lo..ox_hi].copy_from_slice(
                            &src_row[first as usize..first as usize + (ox_hi - ox_lo)],
                        );
                    } else {
                        for (k, d) in dst[ox_lo..ox_hi].iter_mut().enumerate() {
                            *d = src_row[first as usize + k * stride];
                        }
                    }
                }
            }
        }
    }
}

/// `x: [N, C, H, W]`, `weight: [O, C/groups, kh, kw]` (row-major) → `[N, O, Ho, Wo]`.
pub fn conv2d(
    x: &Tensor,
    weight: &[f32],
    wshape: [usize; 4],
    geom: ConvGeom,
    epi: Epilogue,
) -> Result<Tensor, String> {
    conv2d_prepacked(x, weight, None, wshape, geom, epi)
}

/// `image(b, out_b)` for every image's output, in parallel when there are
/// several (a single image's call may split itself over the team).
fn for_each_image(out: &mut [f32], per_img: usize, image: impl Fn(usize, &mut [f32]) + Sync) {
    if out.len() > per_img {
        out.par_chunks_mut(per_img)
            .enumerate()
            .for_each(|(b, dst)| image(b, dst));
    } else {
        image(0, out);
    }
}

/// As `conv2d`, with the weights already in the direct kernel's layout
/// (`direct_conv::pack_weights`), as cached by `Graph::fused`.
pub fn conv2d_prepacked(
    x: &Tensor,
    weight: &[f32],
    prepacked: Option<&[f32]>,
    wshape: [usize; 4],
    geom: ConvGeom,
    epi: Epilogue,
) -> Result<Tensor, String> {
    conv2d_with(
        x,
        weight,
        prepacked.map(direct_conv::Weights::F32),
        None,
        wshape,
        geom,
        epi,
    )
}

/// What the Winograd kernel reads, when the caller holds it.
#[derive(Clone, Copy)]
pub enum WinoWeights<'a> {
    /// `winograd::transform_weights` (f32 models: once per model).
    Transformed(&'a [f32]),
    /// 4-bit codes (`winograd::pack_nibbles`), transformed per call.
    Nibbles(winograd::Nibbles<'a>),
}

/// As `conv2d`, with the direct kernel reading `direct` (packed f32 or 4-bit
/// codes) and the Winograd kernel `winograd` (transformed here from
/// `weight` when None) when they run; `weight` (f32, row-major) serves the
/// other paths.
pub fn conv2d_with(
    x: &Tensor,
    weight: &[f32],
    direct: Option<direct_conv::Weights>,
    winograd: Option<WinoWeights>,
    wshape: [usize; 4],
    geom: ConvGeom,
    epi: Epilogue,
) -> Result<Tensor, String> {
    let (n, c, h, w) = x.dim();
    let [o, cg, kh, kw] = wshape;
    let g = geom.groups.max(1);
    if c != cg * g || o % g != 0 {
        return Err(format!(
            "input has {c} channels but weight {wshape:?} with {g} group(s) expects {}",
            cg * g
        ));
    }
    // An inference graph's 4-bit layers may hold their codes only
    // (`Graph::release_f32_weights`): then `weight` is empty, and a kernel
    // that would need it is an error, not a guess.
    let codes_only = weight.is_empty()
        && (matches!(
            direct,
            Some(direct_conv::Weights::Nibbles { .. } | direct_conv::Weights::Rows { .. })
        ) || matches!(winograd, Some(WinoWeights::Nibbles(_))));
    if weight.len() != o * cg * kh * kw && !codes_only {
        return Err(format!(
            "weight has {} values, shape {wshape:?} needs {}",
            weight.len(),
            o * cg * kh * kw
        ));
    }
    let no_f32 = || {
        Err(format!(
            "this layer keeps only 4-bit codes, in a layout no kernel for shape {wshape:?} \
             reads on this CPU"
        ))
    };
    let stride = geom.stride.max(1);
    let (ho, wo) = match (
        conv_output_size(h, kh, stride, geom.pad),
        conv_output_size(w, kw, stride, geom.pad),
    ) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(format!("kernel {kh}x{kw} larger than padded input {h}x{w}")),
    };
    if let Some(b) = epi.bias {
        if b.len() != o {
            return Err(format!("bias has {} values, expected {o}", b.len()));
        }
    }
    if let Some(r) = epi.residual {
        if r.dim() != (n, o, ho, wo) {
            return Err(format!(
                "residual {:?} does not match output {:?}",
                r.dim(),
                (n, o, ho, wo)
            ));
        }
    }
    let xs = contiguous(x);
    let residual = epi.residual.map(contiguous);
    // Every element is written below (direct tiles, GEMM with β = 0).
    let mut out = crate::engine::tensor::uninit((n, o, ho, wo));
    let plane = ho * wo;
    let per_img_out = o * plane;
    let shape = BlockShape {
        c,
        h,
        w,
        o,
        g,
        cg,
        kh,
        kw,
        stride,
        pad: geom.pad,
        ho,
        wo,
    };
    let out_slice = out.as_slice_mut().ok_or("fresh tensor is contiguous")?;
    let threads = crate::engine::threads();
    // 1×1 stride-1 convs read the input planes as they are in one GEMM;
    // everything else goes direct when the CPU has AVX-512.
    let pointwise = kh == 1 && kw == 1 && stride == 1;
    let wg = winograd::WinoGeom {
        c,
        h,
        w,
        o,
        pad: geom.pad,
    };
    // 4-bit weights are decoded and transformed per call (the codes are what
    // stays in memory): a batch shares that cost, and a single image split
    // over the team has each part transform only the channel blocks it
    // computes. (Transformed up front by the caller, the split image was
    // slower than the direct kernel: 0.66 vs 0.48 ms, ResNet-20, 2 threads.)
    if g == 1 && (kh, kw, stride) == (3, 3, 1) && wg.supported() && winograd_available() {
        // As for the direct kernel: one image is shared by the team from
        // ~1 M multiply-adds (direct-conv count).
        let team = n == 1 && threads > 1 && o * ho * wo * c * 9 >= 1_000_000;
        // 4-bit codes of the expected size (anything else goes through `weight`).
        let w4 = match winograd {
            Some(WinoWeights::Nibbles(n)) if n.fits(o, c) => Some(n),
            _ => None,
        };
        let cached = match winograd {
            Some(WinoWeights::Transformed(u))
                if u.len() == 16 * wg.out_blocks() * c * winograd::OR =>
            {
                Some(u)
            }
            _ => None,
        };
        // One image: its parts decode and transform their own 4-bit blocks
        // in chunks (`conv_image_4bit`); a batch transforms the layer once.
        let one_4bit = w4.is_some() && n == 1;
        let per_call_4bit = w4.is_some() && n > 1;
        let mut owned: Vec<f32> = if per_call_4bit {
            W4_BUFFERS.with(|cell| std::mem::take(&mut *cell.borrow_mut()))
        } else {
            vec![]
        };
        {
            let u: &[f32] = match (cached, w4) {
                (Some(u), _) => u,
                _ if one_4bit => &[],
                (None, Some(nib)) => winograd::transform_nibbles_into(nib, o, c, &mut owned),
                _ if codes_only => return no_f32(),
                _ => {
                    owned = winograd::transform_dense(weight, o, c);
                    &owned
                }
            };
            let per_img_in = c * h * w;
            let image = |b: usize, dst: &mut [f32]| {
                let e = direct_conv::Epilogue {
                    bias: epi.bias,
                    residual: residual
                        .as_ref()
                        .map(|r| &r[b * per_img_out..(b + 1) * per_img_out]),
                    relu: epi.relu,
                };
                let img = &xs[b * per_img_in..(b + 1) * per_img_in];
                if let (true, Some(nib)) = (one_4bit, w4) {
                    let threads = if team { threads } else { 1 };
                    winograd::conv_image_4bit(&wg, img, nib, dst, e, threads);
                } else if team {
                    winograd::conv_image_split(&wg, img, u, dst, e, threads);
                } else {
                    winograd::conv_image(&wg, img, u, dst, e);
                }
            };
            for_each_image(out_slice, per_img_out, image);
        }
        // Hand a per-call transform's buffer back for the next call.
        if per_call_4bit {
            W4_BUFFERS.with(|cell| *cell.borrow_mut() = owned);
        }
        return Ok(out);
    }
    if g == 1 && !pointwise && direct_conv::available() && direct_enabled() {
        let dg = direct_conv::Geometry {
            c,
            h,
            w,
            o,
            kh,
            kw,
            pad: geom.pad,
            stride,
        };
        let dcol = c * kh * kw;
        let padded_len = o.div_ceil(direct_conv::OB) * direct_conv::OB * dcol;
        let owned;
        let packed = match direct {
            Some(direct_conv::Weights::F32(p)) if p.len() == padded_len => {
                direct_conv::Weights::F32(p)
            }
            // Decoded once for the whole batch (per image it cost ~5 %);
            // the packed 4-bit form is what stays in memory.
            Some(nib @ direct_conv::Weights::Nibbles { nibbles, .. })
                if nibbles.len() == padded_len / 2 && n > 1 =>
            {
                owned = direct_conv::decode_all(nib, o, dcol);
                direct_conv::Weights::F32(&owned)
            }
            Some(nib @ direct_conv::Weights::Nibbles { nibbles, .. })
                if nibbles.len() == padded_len / 2 =>
            {
                nib
            }
            _ if codes_only => return no_f32(),
            _ => {
                owned = direct_conv::pack_weights(weight, o, dcol);
                direct_conv::Weights::F32(&owned)
            }
        };
        let offsets = direct_conv::tap_offsets(&dg);
        let per_img_in = c * h * w;
        // A single image is split over the spinning team (`engine::team`)
        // from ~1 M multiply-adds; with rayon, whose workers sleep, splitting
        // below ~8 M cost more than it saved (ResNet-20's layers are 2.4 M).
        let small = o * ho * wo * dcol < 8_000_000;
        let team = n == 1 && threads > 1 && o * ho * wo * dcol >= 1_000_000;
        let split = if team || n >= threads || small {
            1
        } else {
            threads.div_ceil(n)
        };
        let per_part = o.div_ceil(direct_conv::OB).div_ceil(split).max(1) * direct_conv::OB;
        let image = |b: usize, img_out: &mut [f32]| {
            let res = residual
                .as_ref()
                .map(|r| &r[b * per_img_out..(b + 1) * per_img_out]);
            let run = |(k, dst): (usize, &mut [f32])| {
                let o0 = k * per_part;
                let sub = direct_conv::Geometry {
                    o: dst.len() / plane,
                    ..dg
                };
                let epi = direct_conv::Epilogue {
                    bias: epi.bias.map(|b| &b[o0..]),
                    residual: res.map(|r| &r[o0 * plane..]),
                    relu: epi.relu,
                };
                SCRATCH.with(|cell| {
                    let mut s = cell.borrow_mut();
                    if s.len() < sub.scratch_len() {
                        s.resize(sub.scratch_len(), 0.0);
                    }
                    direct_conv::conv_image(
                        &sub,
                        &xs[b * per_img_in..(b + 1) * per_img_in],
                        packed.from_channel(o0, dcol),
                        &offsets,
                        dst,
                        &mut s,
                        epi,
                    );
                });
            };
            if team {
                // Output rows divided among the team (every layer has rows
                // to share; 16-channel layers have only one channel block).
                let epi = direct_conv::Epilogue {
                    bias: epi.bias,
                    residual: res,
                    relu: epi.relu,
                };
                direct_conv::conv_image_split(
                    &dg,
                    &xs[b * per_img_in..(b + 1) * per_img_in],
                    packed,
                    &offsets,
                    img_out,
                    epi,
                    threads,
                    threads,
                );
            } else if split > 1 {
                img_out
                    .par_chunks_mut(per_part * plane)
                    .enumerate()
                    .for_each(run);
            } else {
                run((0, img_out));
            }
        };
        for_each_image(out_slice, per_img_out, image);
        return Ok(out);
    }
    // A 1×1 layer's 4-bit codes are decoded per call for the GEMM (the
    // codes are what stays in memory): a batch decodes the layer once into
    // a reused buffer; a single image decodes it in L2-sized chunks of
    // channels, each run as soon as it is decoded (`codes_gemm`). The
    // direct kernel reading them in place was 15–25 % slower than the GEMM
    // on ResNet-50's 1×1 layers.
    let codes = match direct {
        Some(direct_conv::Weights::Rows { codes, step, lo })
            if pointwise
                && g == 1
                && codes.len() >= o * c.div_ceil(2)
                && step.len() >= o
                && lo.len() >= o =>
        {
            Some((codes, step, lo))
        }
        _ => None,
    };
    let mut decoded = vec![];
    let lhs = match codes {
        Some((codes, step, lo)) if n > 1 => {
            decoded = W4_BUFFERS.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
            direct_conv::decode_rows_into(codes, step, lo, o, c, &mut decoded);
            Lhs::F32(MatRef::row_major(&decoded[..o * c], o, c))
        }
        Some((codes, step, lo)) => Lhs::Codes { codes, step, lo },
        None if codes_only => return no_f32(),
        None => Lhs::F32(MatRef::row_major(weight, o, dcol_of(wshape))),
    };
    let result = gemm_paths(
        &xs,
        lhs,
        &shape,
        n,
        threads,
        out_slice,
        residual.as_deref(),
        epi,
    );
    if !decoded.is_empty() {
        W4_BUFFERS.with(|cell| *cell.borrow_mut() = decoded);
    }
    result.map(|()| out)
}

/// The `o × dcol` weight matrix of the GEMM paths.
#[derive(Clone, Copy)]
enum Lhs<'a> {
    F32(MatRef<'a>),
    /// A 1×1 layer's row-order 4-bit codes (`direct_conv::Weights::Rows`).
    Codes {
        codes: &'a [u8],
        step: &'a [f32],
        lo: &'a [f32],
    },
}

impl Lhs<'_> {
    /// `dst = W·rhs` for this `rows × d` weight matrix.
    fn gemm(self, rows: usize, d: usize, rhs: MatRef, dst: &mut [f32]) {
        match self {
            Lhs::F32(w) => sgemm(w, rhs, dst, false, 1),
            Lhs::Codes { codes, step, lo } => codes_gemm((codes, step, lo), rows, d, rhs, dst),
        }
    }
}

/// Decoded 4-bit channels per GEMM call of one image: at most this many
/// bytes of f32, so they are still in L2 when the GEMM reads them.
const CODES_CHUNK_BYTES: usize = 512 * 1024;

/// `dst = W·rhs` for a 1×1 layer's row-order 4-bit codes (`o` rows of
/// `d`), decoded chunk by chunk of output channels into a reused buffer.
fn codes_gemm(
    (codes, step, lo): (&[u8], &[f32], &[f32]),
    o: usize,
    d: usize,
    rhs: MatRef,
    dst: &mut [f32],
) {
    let chunk = (CODES_CHUNK_BYTES / (4 * d)).max(direct_conv::OB);
    let (cols, rb) = (rhs.cols, d.div_ceil(2));
    W4_BUFFERS.with(|cell| {
        let mut buf = cell.borrow_mut();
        for o0 in (0..o).step_by(chunk) {
            let rows = chunk.min(o - o0);
            direct_conv::decode_rows_into(
                &codes[o0 * rb..],
                &step[o0..],
                &lo[o0..],
                rows,
                d,
                &mut buf,
            );
            let lhs = MatRef::row_major(&buf[..rows * d], rows, d);
            sgemm(lhs, rhs, &mut dst[o0 * cols..(o0 + rows) * cols], false, 1);
        }
    });
}

/// im2col + GEMM (1×1 stride-1 convs: the GEMM alone), for every image.
#[allow(clippy::too_many_arguments)]
fn gemm_paths(
    xs: &[f32],
    lhs: Lhs,
    shape: &BlockShape,
    n: usize,
    threads: usize,
    out_slice: &mut [f32],
    residual: Option<&[f32]>,
    epi: Epilogue,
) -> Result<(), String> {
    let &BlockShape {
        c, h, w, o, ho, wo, ..
    } = shape;
    let plane = ho * wo;
    let per_img_out = o * plane;
    let small = n * o * plane * shape.cg * shape.kh * shape.kw < 8_000_000;
    if n >= threads || ho < 2 || small {
        // Epilogue fused into the same pass, while the image's output is in cache.
        out_slice
            .par_chunks_mut(per_img_out)
            .enumerate()
            .for_each(|(b, dst)| {
                compute_rows(
                    &xs[b * c * h * w..(b + 1) * c * h * w],
                    lhs,
                    shape,
                    (0, ho),
                    dst,
                );
                let res = residual
                    .as_ref()
                    .map(|r| &r[b * per_img_out..(b + 1) * per_img_out]);
                apply_epilogue(dst, res, epi.bias, epi.relu, plane);
            });
        return Ok(());
    } else {
        // Fewer images than cores (batch-1 latency): split each image's output
        // rows into blocks, compute blocks in parallel, then scatter.
        let per_img = threads.div_ceil(n).min(ho);
        let units: Vec<(usize, usize, usize)> = (0..n)
            .flat_map(|b| (0..per_img).map(move |k| (b, k * ho / per_img, (k + 1) * ho / per_img)))
            .filter(|(_, a, z)| z > a)
            .collect();
        let blocks: Vec<Vec<f32>> = units
            .par_iter()
            .map(|&(b, oy0, oy1)| {
                let mut tmp = vec![0f32; o * (oy1 - oy0) * wo];
                compute_rows(
                    &xs[b * c * h * w..(b + 1) * c * h * w],
                    lhs,
                    shape,
                    (oy0, oy1),
                    &mut tmp,
                );
                tmp
            })
            .collect();
        for (&(b, oy0, oy1), tmp) in units.iter().zip(&blocks) {
            let cols = (oy1 - oy0) * wo;
            for ch in 0..o {
                let dst = &mut out_slice[b * per_img_out + ch * plane + oy0 * wo..][..cols];
                dst.copy_from_slice(&tmp[ch * cols..(ch + 1) * cols]);
            }
        }
    }
    out_slice
        .par_chunks_mut(per_img_out)
        .enumerate()
        .for_each(|(b, dst)| {
            let res = residual
                .as_ref()
                .map(|r| &r[b * per_img_out..(b + 1) * per_img_out]);
            apply_epilogue(dst, res, epi.bias, epi.relu, plane);
        });
    Ok(())
}

fn dcol_of(wshape: [usize; 4]) -> usize {
    wshape[1] * wshape[2] * wshape[3]
}

struct BlockShape {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    g: usize,
    cg: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    ho: usize,
    wo: usize,
}

/// Output rows `[oy0, oy1)` of one image into `dst` (`o × (oy1-oy0)·wo`, row-major).
fn compute_rows(
    img: &[f32],
    lhs: Lhs,
    s: &BlockShape,
    (oy0, oy1): (usize, usize),
    dst: &mut [f32],
) {
    let cols = (oy1 - oy0) * s.wo;
    let og = s.o / s.g;
    let dcol = s.cg * s.kh * s.kw;
    let direct = s.kh == 1 && s.kw == 1 && s.stride == 1 && s.pad == 0;
    let _ = s.c;
    for gi in 0..s.g {
        // Group gi's rows of the `o × dcol` weight matrix (4-bit codes only
        // come for ungrouped 1×1 layers).
        let wg = match lhs {
            Lhs::F32(m) => Lhs::F32(MatRef {
                data: &m.data[gi * og * m.row_stride..],
                rows: og,
                ..m
            }),
            codes => codes,
        };
        let dst_g = &mut dst[gi * og * cols..(gi + 1) * og * cols];
        if direct {
            // A 1×1 stride-1 conv reads the input planes as they are.
            let src = &img[gi * s.cg * s.h * s.w + oy0 * s.w..];
            let rhs = MatRef {
                data: src,
                rows: dcol,
                cols,
                row_stride: s.h * s.w,
                col_stride: 1,
            };
            wg.gemm(og, dcol, rhs, dst_g);
        } else {
            COLUMNS.with(|cell| {
                let mut col = cell.borrow_mut();
                if col.len() < dcol * cols {
                    col.resize(dcol * cols, 0.0);
                }
                im2col(
                    img,
                    (s.h, s.w),
                    (gi * s.cg, s.cg),
                    (s.kh, s.kw),
                    s.stride,
                    s.pad,
                    (oy0, oy1, s.wo),
                    &mut col,
                );
                let rhs = MatRef::row_major(&col[..dcol * cols], dcol, cols);
                wg.gemm(og, dcol, rhs, dst_g);
            });
        }
    }
}

/// `+ bias[c]`, `+ residual`, ReLU, one pass over one image's output.
fn apply_epilogue(
    dst: &mut [f32],
    res: Option<&[f32]>,
    bias: Option<&[f32]>,
    relu: bool,
    plane: usize,
) {
    for (ch, row) in dst.chunks_mut(plane).enumerate() {
        let bias = bias.map_or(0.0, |bv| bv[ch]);
        match (res, relu) {
            (Some(r), relu) => {
                for (v, a) in row.iter_mut().zip(&r[ch * plane..(ch + 1) * plane]) {
                    let s = *v + bias + a;
                    *v = if relu { s.max(0.0) } else { s };
                }
            }
            (None, true) => row.iter_mut().for_each(|v| *v = (*v + bias).max(0.0)),
            (None, false) => {
                if bias != 0.0 {
                    row.iter_mut().for_each(|v| *v += bias)
                }
            }
        }
    }
}

/// The adjoint of `im2col`: scatter-add `col[(c*kh+ky)*kw+kx, oy*wo+ox]` back
/// into the image gradient `img[c0 + c, iy, ix]` (used by the conv backward pass).
#[allow(clippy::too_many_arguments)]
pub fn col2im(
    col: &[f32],
    (h, w): (usize, usize),
    (c0, cg): (usize, usize),
    (kh, kw): (usize, usize),
    stride: usize,
    pad: usize,
    (ho, wo): (usize, usize),
    img: &mut [f32],
) {
    let plane = ho * wo;
    for c in 0..cg {
        let dst = &mut img[(c0 + c) * h * w..(c0 + c + 1) * h * w];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &col[((c * kh + ky) * kw + kx) * plane..][..plane];
                for oy in 0..ho {
                    let iy = (oy * stride + ky) as isize - pad as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    let drow = &mut dst[iy as usize * w..(iy as usize + 1) * w];
                    for ox in 0..wo {
                        let ix = (ox * stride + kx) as isize - pad as isize;
                        if ix >= 0 && ix < w as isize {
                            drow[ix as usize] += row[oy * wo + ox];
                        }
                    }
                }
            }
        }
    }
}
