//! Integer convolution (W8A8): quantize each image's input once into the
//! kernel's u8 layout, run the int8 kernel, dequantize in the epilogue.
//! Parallel across images, and across output-channel blocks when there are
//! fewer images than threads (batch-1 latency), like the f32 direct path.
//! On AVX2-only CPUs, 3×3 stride-1 layers run the integer Winograd kernel
//! instead (`winograd::int16`), with the same results.
use crate::engine::kernels::int8_conv::{self, Geometry, Kernel, OB};
use crate::engine::kernels::winograd;
use crate::engine::ops::ConvGeom;
use crate::engine::tensor::{contiguous, Tensor};
use rayon::prelude::*;
use std::cell::RefCell;

/// A conv's weights as int8 codes, packed for the kernel.
#[derive(Clone, Debug)]
pub struct Int8Weights {
    /// `[O, C, kh, kw]`.
    pub shape: [usize; 4],
    /// Per-output-channel scale: `w ≈ scale[o]·code`.
    pub scale: Vec<f32>,
    pub packed: Vec<i32>,
    pub comp: Vec<i32>,
    /// Largest |code| (decides whether the AVX2 kernel is exact).
    pub max_abs: i32,
    pub kernel: Kernel,
    /// `packed` split into 16-bit pairs, made on first use by the
    /// `Avx2Pairs` kernel (8-bit weights on AVX2-only CPUs).
    pairs: std::sync::OnceLock<Vec<i32>>,
    /// A 3×3 layer's integer Winograd weights (`winograd::int16`), made on
    /// first use on AVX2-only CPUs.
    winograd: std::sync::OnceLock<Vec<i32>>,
}

impl Int8Weights {
    /// Bytes held: codes, per-channel scales and sums, and the AVX2 pairs
    /// once made.
    pub fn bytes(&self) -> usize {
        4 * (self.scale.len() + self.packed.len() + self.comp.len())
            + self.pairs.get().map_or(0, |p| 4 * p.len())
            + self.winograd.get().map_or(0, |u| 4 * u.len())
    }
    /// `codes` `[O, C, kh, kw]` with per-row `scale`.
    pub fn new(codes: &[i8], scale: Vec<f32>, shape: [usize; 4]) -> Self {
        let [o, c, kh, kw] = shape;
        let max_abs = codes.iter().map(|&v| (v as i32).abs()).max().unwrap_or(0);
        Int8Weights {
            shape,
            scale,
            packed: int8_conv::pack_weights(codes, o, c, kh, kw),
            comp: int8_conv::offset_compensation(codes, o),
            max_abs,
            kernel: Kernel::detect(max_abs),
            pairs: std::sync::OnceLock::new(),
            winograd: std::sync::OnceLock::new(),
        }
    }

    /// Code of output channel `o`, input channel `c`, tap `k`, read back
    /// from the packed words (`int8_conv::pack_weights`).
    fn code(&self, o: usize, c: usize, k: usize) -> i32 {
        let [_, ci, kh, kw] = self.shape;
        let taps = kh * kw;
        let d = ci.div_ceil(4) * taps;
        let word = self.packed[((o / OB) * d + (c / 4) * taps + k) * OB + o % OB];
        word.to_le_bytes()[c % 4] as i8 as i32
    }

    /// Whether a conv with these weights runs on the integer Winograd kernel
    /// (`winograd::int16`): a 3×3 stride-1 layer whose direct kernel would
    /// be one of the AVX2 ones, on a CPU with AVX2. (On AVX-512 VNNI the
    /// direct kernel's `vpdpbusd` does 64 multiply-adds per instruction,
    /// more than Winograd saves.)
    pub fn runs_winograd(&self, geom: ConvGeom) -> bool {
        let [_, c, kh, kw] = self.shape;
        matches!(self.kernel, Kernel::Avx2 | Kernel::Avx2Pairs)
            && (kh, kw, geom.stride.max(1), geom.groups.max(1)) == (3, 3, 1, 1)
            && geom.pad <= 2
            && c <= winograd::int16::MAX_C
            && winograd::int16::is_available()
            && crate::engine::ops::conv::winograd_enabled()
    }

    /// The integer Winograd weights, made on first use.
    fn winograd_weights(&self) -> &[i32] {
        self.winograd.get_or_init(|| {
            let [o, c, _, _] = self.shape;
            winograd::int16::transform_weights(o, c, |o, c, k| self.code(o, c, k))
        })
    }

    /// The packed words `kernel` reads.
    pub fn words_for(&self, kernel: Kernel) -> &[i32] {
        if kernel == Kernel::Avx2Pairs {
            self.pairs
                .get_or_init(|| int8_conv::pair_words(&self.packed))
        } else {
            &self.packed
        }
    }

    /// Bytes a deployment stores: one byte per weight plus an f32 scale per row.
    pub fn stored_bytes(&self) -> usize {
        self.shape.iter().product::<usize>() + 4 * self.scale.len()
    }
}

thread_local! {
    static INPUT: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static TILE: RefCell<Vec<i32>> = const { RefCell::new(Vec::new()) };
}

/// `x: [N, C, H, W]` → `[N, O, Ho, Wo]`: `relu?((Σ w·q(x))·s_x·s_w + bias (+ residual))`,
/// where `q(x) = clamp(round(x·(1/s_x)), −127, 127)`, ties to even, as in
/// the simulation (`exec::fake_quant`). `kernel` overrides the
/// weights' own choice and always runs that direct kernel (tests compare
/// kernels); `None` may run the integer Winograd kernel instead
/// ([`Int8Weights::runs_winograd`]).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_int8(
    x: &Tensor,
    w: &Int8Weights,
    geom: ConvGeom,
    act_scale: f32,
    bias: Option<&[f32]>,
    residual: Option<&Tensor>,
    relu: bool,
    kernel: Option<Kernel>,
) -> Result<Tensor, String> {
    let (n, c, h, wd) = x.dim();
    let [o, cw, kh, kw] = w.shape;
    if geom.groups > 1 {
        return Err("int8 conv: grouped convolution is not supported".into());
    }
    if c != cw {
        return Err(format!("input has {c} channels, int8 weights expect {cw}"));
    }
    if h + 2 * geom.pad < kh || wd + 2 * geom.pad < kw {
        return Err(format!(
            "kernel {kh}x{kw} larger than padded input {h}x{wd}"
        ));
    }
    if act_scale.is_nan() || act_scale <= 0.0 {
        return Err(format!(
            "int8 conv: activation scale {act_scale} is not positive"
        ));
    }
    let g = Geometry {
        c,
        h,
        w: wd,
        o,
        kh,
        kw,
        pad: geom.pad,
        stride: geom.stride.max(1),
    };
    let (ho, wo) = g.out();
    if bias.is_some_and(|b| b.len() != o) {
        return Err(format!(
            "bias has {} values, expected {o}",
            bias.map_or(0, <[f32]>::len)
        ));
    }
    if let Some(r) = residual {
        if r.dim() != (n, o, ho, wo) {
            return Err(format!(
                "residual {:?} does not match output {:?}",
                r.dim(),
                (n, o, ho, wo)
            ));
        }
    }
    let explicit = kernel;
    let kernel = kernel.unwrap_or(w.kernel);
    if !kernel.supported() || (kernel == Kernel::Avx2 && w.max_abs > int8_conv::AVX2_MAX_W) {
        return Err(format!(
            "int8 conv: kernel {} cannot run these weights here",
            kernel.name()
        ));
    }
    let mult: Vec<f32> = w.scale.iter().map(|s| s * act_scale).collect();
    let words = w.words_for(kernel);
    let per_group = kernel.words_per_group();
    let xs = contiguous(x);
    let res = residual.map(contiguous);
    // Every element is written below (direct tiles, GEMM with β = 0).
    let mut out = crate::engine::tensor::uninit((n, o, ho, wo));
    let out_slice = out.as_slice_mut().ok_or("fresh tensor is contiguous")?;
    let plane = ho * wo;
    let per_in = c * h * wd;
    let per_out = o * plane;
    let threads = crate::engine::threads();
    let wg = winograd::WinoGeom {
        c,
        h,
        w: wd,
        o,
        pad: geom.pad,
    };
    // An explicit `kernel` runs the direct kernel (tests compare the two).
    if explicit.is_none() && w.runs_winograd(geom) && winograd::int16::fits(&wg) {
        let u = w.winograd_weights();
        // One image is shared by the team from 1 M multiply-adds, as below.
        let team = if n == 1 && o * plane * c * 9 >= 1_000_000 {
            threads
        } else {
            1
        };
        let image = |b: usize, dst: &mut [f32]| {
            let epi = int8_conv::Epilogue {
                comp: &w.comp,
                mult: &mult,
                bias,
                residual: res.as_ref().map(|r| &r[b * per_out..(b + 1) * per_out]),
                relu,
            };
            let img = &xs[b * per_in..(b + 1) * per_in];
            winograd::int16::conv_image(&wg, img, act_scale, u, dst, epi, team);
        };
        if n > 1 {
            out_slice
                .par_chunks_mut(per_out)
                .enumerate()
                .for_each(|(b, dst)| image(b, dst));
        } else {
            image(0, out_slice);
        }
        return Ok(out);
    }
    let offsets = int8_conv::tap_offsets(&g);
    let d = g.groups() * kh * kw;
    // As in the f32 path: small layers at batch 1 stay on one thread.
    let small = o * plane * c * kh * kw < 8_000_000;
    // Batch 1 splits from 1 M MACs (every 3×3 layer of the CIFAR ResNets),
    // with the input quantized by all parts (`split_image`). Quantizing on
    // the caller first, the split saved little, and from 4 M only it never
    // ran: W8A8 ResNet-20 on 2 threads took 0.25 ms, as on 1 (AMD Zen 4);
    // now 0.18 ms.
    let split = if n == 1 && threads > 1 && o * plane * c * kh * kw >= 1_000_000 {
        threads.min(o.div_ceil(OB))
    } else if n >= threads || small {
        1
    } else {
        threads.div_ceil(n)
    };
    let per_part = o.div_ceil(OB).div_ceil(split).max(1) * OB;
    // Output channels `k·per_part ..` of image `b` into `dst`.
    let run = |b: usize, k: usize, dst: &mut [f32], xq: &[u32]| {
        let o0 = k * per_part;
        let sub = Geometry {
            o: dst.len() / plane,
            ..g
        };
        let epi = int8_conv::Epilogue {
            comp: &w.comp[o0..],
            mult: &mult[o0..],
            bias: bias.map(|b| &b[o0..]),
            residual: res.as_ref().map(|r| &r[b * per_out + o0 * plane..]),
            relu,
        };
        TILE.with(|t| {
            let mut t = t.borrow_mut();
            if t.len() < sub.tile_len() {
                t.resize(sub.tile_len(), 0);
            }
            int8_conv::conv_image(
                &sub,
                xq,
                &words[o0 / OB * d * OB * per_group..],
                &offsets,
                dst,
                &mut t,
                epi,
                kernel,
            );
        });
    };
    if split > 1 && n == 1 {
        INPUT.with(|cell| {
            split_image(
                &g,
                &xs,
                act_scale,
                &mut cell.borrow_mut(),
                out_slice,
                per_part * plane,
                threads,
                &|k, dst, xq| run(0, k, dst, xq),
            )
        });
        return Ok(out);
    }
    let image = |b: usize, img_out: &mut [f32], xq: &mut Vec<u32>| {
        xq.resize(g.input_words(), 0);
        int8_conv::quantize_image(&g, &xs[b * per_in..(b + 1) * per_in], act_scale, xq);
        let xq = &xq[..];
        if split > 1 {
            img_out
                .par_chunks_mut(per_part * plane)
                .enumerate()
                .for_each(|(k, dst)| run(b, k, dst, xq));
        } else {
            run(b, 0, img_out, xq);
        }
    };
    if split > 1 {
        // Nested parallelism: a thread waiting on its channel blocks may
        // steal another image, so the input buffer cannot be thread-local.
        out_slice
            .par_chunks_mut(per_out)
            .enumerate()
            .for_each(|(b, dst)| image(b, dst, &mut Vec::new()));
    } else {
        out_slice
            .par_chunks_mut(per_out)
            .enumerate()
            .for_each(|(b, dst)| INPUT.with(|cell| image(b, dst, &mut cell.borrow_mut())));
    }
    Ok(out)
}

/// Computes part `k`'s output channels into its chunk from the quantized input.
type PartFn<'a> = &'a (dyn Fn(usize, &mut [f32], &[u32]) + Sync);

/// The quantized input, shared by the parts of one split image.
struct SharedWords(*mut u32, usize);
// SAFETY: parts write disjoint units (each claimed by one part), and read
// the whole only after every unit is written (see `split_image`).
unsafe impl Sync for SharedWords {}

/// One image split over the spinning team by output channels (`out` in
/// chunks of `chunk`), in one team call (`team::run_staged`): every part
/// first quantizes channel groups of the input, then, once all are written,
/// computes its channels with `run(part, out chunk, quantized input)`.
#[allow(clippy::too_many_arguments)]
fn split_image(
    g: &Geometry,
    img: &[f32],
    act_scale: f32,
    xq: &mut Vec<u32>,
    out: &mut [f32],
    chunk: usize,
    threads: usize,
    run: PartFn,
) {
    xq.resize(g.input_words(), 0);
    int8_conv::fill_tail(g, xq);
    let gw = g.unit_len();
    let shared = SharedWords(xq.as_mut_ptr(), xq.len());
    let parts: Vec<std::sync::Mutex<&mut [f32]>> =
        out.chunks_mut(chunk).map(std::sync::Mutex::new).collect();
    let quantize = |cg: usize| {
        #[allow(clippy::redundant_locals)]
        let shared = &shared;
        // SAFETY: `run_staged` runs each group once, so this is the unit's
        // only writer; units are disjoint and inside `xq` (`input_words()`),
        // and nobody reads them before every group is done.
        let unit = unsafe { std::slice::from_raw_parts_mut(shared.0.add(cg * gw), gw) };
        int8_conv::quantize_group(g, img, act_scale, cg, unit);
    };
    let compute = |k: usize| {
        #[allow(clippy::redundant_locals)]
        let shared = &shared;
        // SAFETY: every unit's writes happened before `run_staged` saw the
        // last group done; nothing writes `xq` any more in this call.
        let xq = unsafe { std::slice::from_raw_parts(shared.0, shared.1) };
        let mut dst = parts[k].lock().unwrap_or_else(|e| e.into_inner());
        run(k, &mut dst, xq);
    };
    crate::engine::team::run_staged(parts.len(), threads, g.groups(), &quantize, &compute);
}
