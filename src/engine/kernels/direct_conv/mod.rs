//! Direct convolution, no im2col: outputs are computed on the
//! padded-width grid (`p = oy·Wp + ox`, `Wp = W + 2·pad`), where the input
//! under tap (ky, kx) is the contiguous run `xpad[c][p + ky·Wp + kx]`. A
//! register tile of 8 output channels × 32 positions accumulates
//! `broadcast(w) · load(x)` over (c, ky, kx); junk columns (ox ≥ Wo) are
//! dropped when the tile is written out. Strided convolutions read
//! stride×stride phase planes of the padded input, so each tap is still one
//! contiguous run. AVX-512, or AVX2 + FMA (padded-width tiles only);
//! elsewhere callers use the im2col + GEMM path, which the tests compare
//! this kernel against.
//!
//! Where the output width allows (a multiple of 16, or 8 or 4 with rows to
//! pair), a second tiling computes exact positions instead: 16 output
//! channels (one vector, `load(w)`) × 16 positions (`broadcast(x)`), then a
//! 16×16 in-register transpose and the epilogue straight into the output.
//! No junk columns and no tile buffer: the padded-width grid wasted 6-25 %
//! of the multiply-adds on ResNet-20's 32/16/8-wide maps.
//!
//! Weights come as f32 (packed once per model) or as 4-bit codes that are
//! decoded block by block (16 output channels) right before use, so a
//! weight-only model's weights stay 4-bit in memory.

mod tiles;
use tiles::*;

/// Output-channel block of the packed weights (`[blocks][taps][16]`).
pub const OB: usize = 16;
/// Channels per register tile of the padded-width tiling (half a block).
const HB: usize = 8;
const LANES: usize = 16;
/// Positions per register tile (two vectors).
const PT: usize = 2 * LANES;

/// Weights `[O, C, kh, kw]` → `[ceil(O/16)][C·kh·kw][16]`, zero-padded.
pub fn pack_weights(w: &[f32], o: usize, d: usize) -> Vec<f32> {
    let blocks = o.div_ceil(OB);
    let mut p = vec![0f32; blocks * d * OB];
    for r in 0..o {
        let (b, j) = (r / OB, r % OB);
        for t in 0..d {
            p[(b * d + t) * OB + j] = w[r * d + t];
        }
    }
    p
}

pub fn available() -> bool {
    isa().is_some()
}

/// Which instruction set the kernel runs with on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    /// AVX2 + FMA: the padded-width tiling only, 4 channels × 16 positions.
    Avx2,
}

/// The best ISA available (detected at run time), or None: use im2col + GEMM.
pub fn isa() -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        if FORCE_AVX2.load(std::sync::atomic::Ordering::Relaxed) {
            return avx2_ok().then_some(Isa::Avx2);
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some(Isa::Avx512);
        }
        if avx2_ok() {
            return Some(Isa::Avx2);
        }
    }
    None
}

#[cfg(target_arch = "x86_64")]
fn avx2_ok() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

static FORCE_AVX2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Run the AVX2 variants even where AVX-512 exists (tests compare the two;
/// benchmarks show what an AVX2-only CPU gets). The int8 kernel choice
/// follows too (`int8_conv::Kernel::detect`), for weights lowered after this.
pub fn force_avx2(on: bool) {
    FORCE_AVX2.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub fn avx2_forced() -> bool {
    FORCE_AVX2.load(std::sync::atomic::Ordering::Relaxed)
}

pub use super::conv_geometry::Geometry;

/// Buffer sizes of the f32 kernel.
impl Geometry {
    fn positions(&self) -> usize {
        // Whole vectors; a last half tile runs one vector wide (on 8×8 maps
        // rounding up to whole 32-position tiles computed 20 % junk).
        (self.out().0 * self.phase().1).div_ceil(LANES) * LANES
    }
    /// Padded input + slack for the junk tail of the last tile.
    fn input_len(&self) -> usize {
        self.c * self.unit_len() + self.positions() + self.kh * self.phase().1 + self.kw + PT
    }
    /// Floats of scratch space `conv_image` needs: input, tile output, and
    /// one decoded block of weights.
    pub fn scratch_len(&self) -> usize {
        self.input_len() + OB * self.positions() + OB * self.c * self.kh * self.kw
    }
}

/// Offsets of every tap (c, ky, kx) in the phase-split padded input.
pub fn tap_offsets(g: &Geometry) -> std::sync::Arc<[usize]> {
    super::conv_geometry::tap_offsets(g, g.c)
}

/// The weights a call reads, in `pack_weights` order.
#[derive(Clone, Copy)]
pub enum Weights<'a> {
    F32(&'a [f32]),
    /// 4-bit codes, two per byte (low nibble first); the value of code `k`
    /// in output channel `o` is `lo[o] + step[o]·k`.
    Nibbles {
        nibbles: &'a [u8],
        step: &'a [f32],
        lo: &'a [f32],
    },
    /// A 1×1 stride-1 layer's 4-bit codes row by row (`⌈d/2⌉` bytes per
    /// output channel), for the GEMM path (`decode_rows_into`): the direct
    /// kernel does not read them.
    Rows {
        codes: &'a [u8],
        step: &'a [f32],
        lo: &'a [f32],
    },
}

impl<'a> Weights<'a> {
    /// The weights from output channel `o0` on (`o0` a multiple of `OB`);
    /// `d` weights per channel.
    pub fn from_channel(self, o0: usize, d: usize) -> Weights<'a> {
        match self {
            Weights::F32(p) => Weights::F32(&p[o0 * d..]),
            Weights::Nibbles { nibbles, step, lo } => Weights::Nibbles {
                nibbles: &nibbles[o0 * d / 2..],
                step: &step[o0..],
                lo: &lo[o0..],
            },
            Weights::Rows { codes, step, lo } => Weights::Rows {
                codes: &codes[o0 * d.div_ceil(2)..],
                step: &step[o0..],
                lo: &lo[o0..],
            },
        }
    }
}

/// Portable twin of `decode_block_avx512` (tap `t` at `dst[t·stride..]`),
/// used by the AVX2 body (inlined there, so it is built for AVX2); tests
/// run 4-bit weights through both.
#[inline(always)]
pub fn decode_block(
    nibbles: &[u8],
    step: &[f32],
    lo: &[f32],
    ob: usize,
    d: usize,
    dst: &mut [f32],
    stride: usize,
) {
    let n = d * OB;
    let bytes = &nibbles[ob * n / 2..(ob + 1) * n / 2];
    let (st, l) = (&step[ob * OB..][..OB], &lo[ob * OB..][..OB]);
    // OB is even, so a byte never straddles two taps: byte k holds channels
    // 2k mod OB and 2k+1 mod OB of tap 2k div OB.
    for (t, taps) in bytes.chunks_exact(OB / 2).enumerate() {
        let out = &mut dst[t * stride..][..OB];
        for (k, (&b, pair)) in taps.iter().zip(out.chunks_exact_mut(2)).enumerate() {
            let j = 2 * k;
            pair[0] = l[j] + st[j] * (b & 15) as f32;
            pair[1] = l[j + 1] + st[j + 1] * (b >> 4) as f32;
        }
    }
}

/// Every block of 4-bit weights decoded to f32 in `pack_weights` order
/// (`d` weights per channel, `o` channels). Batched calls decode a layer
/// once and share it over their images; a single image decodes block by
/// block inside the kernel instead.
pub fn decode_all(weights: Weights, o: usize, d: usize) -> Vec<f32> {
    let mut out = vec![];
    decode_all_into(weights, o, d, &mut out);
    out
}

/// `decode_all` into a reused buffer (fresh large vectors cost page faults
/// on every call).
pub fn decode_all_into(weights: Weights, o: usize, d: usize, out: &mut Vec<f32>) {
    let blocks = o.div_ceil(OB);
    // Every element is written below: no zeroing pass.
    out.resize(blocks * d * OB, 0.0);
    if let Weights::Nibbles { nibbles, step, lo } = weights {
        assert!(
            nibbles.len() >= blocks * d * OB / 2
                && step.len() >= blocks * OB
                && lo.len() >= blocks * OB,
            "direct conv: 4-bit weights do not match the geometry"
        );
        for (ob, dst) in out.chunks_exact_mut(d * OB).enumerate() {
            #[cfg(target_arch = "x86_64")]
            if isa() == Some(Isa::Avx512) {
                // SAFETY: AVX-512 checked; block `ob` is inside the buffers (asserted).
                unsafe { decode_block_avx512(nibbles, step, lo, ob, d, dst, OB) };
                continue;
            }
            decode_block(nibbles, step, lo, ob, d, dst, OB);
        }
    }
}

/// A 1×1 layer's row-order 4-bit codes (`Weights::Rows`) decoded to a
/// row-major `rows × d` f32 matrix for the GEMM, which reads row-major
/// weights fastest (decoded column-major from the direct kernel's order,
/// ResNet-50's 1×1 layers ran 25–35 % slower than on f32 weights).
pub fn decode_rows_into(
    codes: &[u8],
    step: &[f32],
    lo: &[f32],
    rows: usize,
    d: usize,
    out: &mut Vec<f32>,
) {
    let rb = d.div_ceil(2);
    assert!(
        codes.len() >= rows * rb && step.len() >= rows && lo.len() >= rows,
        "1×1 conv: 4-bit codes do not match the layer"
    );
    // Every element is written below; a reused buffer only ever grows (a
    // smaller last chunk must not cost zeroing the next chunk's tail).
    if out.len() < rows * d {
        out.resize(rows * d, 0.0);
    }
    let isa = isa();
    for (r, dst) in out[..rows * d].chunks_exact_mut(d).enumerate() {
        let row = &codes[r * rb..(r + 1) * rb];
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512 checked; `row` holds ⌈d/2⌉ bytes, `dst` d floats.
            Some(Isa::Avx512) => unsafe { decode_row_avx512(row, step[r], lo[r], dst) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX2 + FMA checked (`isa`).
            Some(Isa::Avx2) => unsafe { decode_row_avx2(row, step[r], lo[r], dst) },
            _ => decode_row(row, step[r], lo[r], dst),
        }
    }
}

/// One row of `decode_rows_into`: `dst[k] = lo + step·code k`.
#[inline(always)]
fn decode_row(row: &[u8], step: f32, lo: f32, dst: &mut [f32]) {
    for (pair, &b) in dst.chunks_mut(2).zip(row) {
        pair[0] = lo + step * (b & 15) as f32;
        if let Some(v) = pair.get_mut(1) {
            *v = lo + step * (b >> 4) as f32;
        }
    }
}

/// `decode_row` built for AVX2 + FMA (the compiler vectorises it there).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn decode_row_avx2(row: &[u8], step: f32, lo: f32, dst: &mut [f32]) {
    decode_row(row, step, lo, dst)
}

/// What happens to each output as it leaves the tile: `+ bias[o]`, `+ residual`, ReLU.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    /// `[O, Ho, Wo]` of this image.
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

/// Copy one image into the zero-padded, phase-split layout. Inlined into
/// the ISA-specific bodies: as a separate baseline-ISA function it took 14 %
/// of a ResNet-20 pass.
#[inline(always)]
fn fill_input<const AVX512: bool>(
    g: &Geometry,
    img: &[f32],
    xpad: &mut [f32],
    rows: std::ops::Range<usize>,
) {
    let s = g.stride.max(1);
    let (hq, wq) = g.phase();
    let cl = g.unit_len();
    if s == 1 && rows.end > rows.start {
        // Only the padded rows these output rows read (a split image's part
        // pads its own band, not the whole image).
        let (py0, py1) = (rows.start, (rows.end - 1 + g.kh).min(hq));
        let (in0, in1) = (py0.max(g.pad), py1.min(g.pad + g.h).max(py0.max(g.pad)));
        for ch in 0..g.c {
            let plane = &mut xpad[ch * cl..(ch + 1) * cl];
            // Zero only what the copy leaves: pad rows and pad columns.
            plane[py0 * wq..in0 * wq].fill(0.0);
            plane[in1 * wq..py1 * wq].fill(0.0);
            for py in in0..in1 {
                let y = py - g.pad;
                let row = &mut plane[py * wq..(py + 1) * wq];
                if g.pad == 1 {
                    // Two stores, not two libc memset calls (4 % of a pass).
                    row[0] = 0.0;
                    row[g.w + 1] = 0.0;
                } else {
                    row[..g.pad].fill(0.0);
                    row[g.pad + g.w..].fill(0.0);
                }
                copy_row::<AVX512>(
                    &img[(ch * g.h + y) * g.w..][..g.w],
                    &mut row[g.pad..g.pad + g.w],
                );
            }
        }
        // The junk tail of the last tile reads past the planes: keep it finite.
        xpad[g.c * cl..].fill(0.0);
        return;
    }
    xpad.fill(0.0);
    for ch in 0..g.c {
        for y in 0..g.h {
            let py = y + g.pad;
            let src = &img[(ch * g.h + y) * g.w..][..g.w];
            let base = ch * cl + g.row_base(py);
            if s == 1 {
                copy_row::<AVX512>(src, &mut xpad[base + g.pad..][..g.w]);
            } else if s == 2 && AVX512 {
                // Even and odd input columns go to the two column phases.
                let phase_of = |x: usize| base + g.col_offset(x + g.pad);
                let (e, o) = (phase_of(0), phase_of(1));
                let (ne, no) = (g.w.div_ceil(2), g.w / 2);
                assert!(
                    e + ne <= xpad.len() && o + no <= xpad.len() && e.abs_diff(o) >= ne.max(no)
                );
                // SAFETY: AVX-512 is the caller's ISA (the AVX512 body);
                // the two destination runs are inside `xpad` and disjoint (asserted).
                unsafe {
                    let p = xpad.as_mut_ptr();
                    super::conv_geometry::deinterleave2_avx512(src, p.add(e), p.add(o));
                }
            } else {
                // Column phase `ph` takes every s-th input column.
                for ph in 0..s {
                    let x0 = (ph + s - g.pad % s) % s;
                    let dst = &mut xpad[base + g.col_offset(x0 + g.pad)..];
                    for (d, &v) in dst.iter_mut().zip(src.iter().skip(x0).step_by(s)) {
                        *d = v;
                    }
                }
            }
        }
    }
}

/// A short row copy as explicit vector moves: `copy_from_slice` became a
/// libc `memmove` call per 32-float row (5.5 % of a ResNet-20 pass), and an
/// array-chunk loop compiled to checked scalar moves (8 %).
#[inline(always)]
fn copy_row<const AVX512: bool>(src: &[f32], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    #[cfg(target_arch = "x86_64")]
    // SAFETY: both runs hold `n` floats; the ISA is the calling body's
    // (AVX-512, or AVX2 for the other body).
    unsafe {
        if AVX512 {
            copy_avx512(src.as_ptr(), dst.as_mut_ptr(), n);
        } else {
            copy_avx(src.as_ptr(), dst.as_mut_ptr(), n);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst[..n].copy_from_slice(&src[..n]);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn copy_avx512(src: *const f32, dst: *mut f32, n: usize) {
    use std::arch::x86_64::*;
    let mut k = 0;
    while k + LANES <= n {
        _mm512_storeu_ps(dst.add(k), _mm512_loadu_ps(src.add(k)));
        k += LANES;
    }
    if k < n {
        let m: __mmask16 = (1u16 << (n - k)) - 1;
        _mm512_mask_storeu_ps(dst.add(k), m, _mm512_maskz_loadu_ps(m, src.add(k)));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn copy_avx(src: *const f32, dst: *mut f32, n: usize) {
    use std::arch::x86_64::*;
    let mut k = 0;
    while k + 8 <= n {
        _mm256_storeu_ps(dst.add(k), _mm256_loadu_ps(src.add(k)));
        k += 8;
    }
    while k < n {
        *dst.add(k) = *src.add(k);
        k += 1;
    }
}

/// The checks every entry point makes before the unsafe tiles run: buffer
/// sizes against the geometry, the CPU, and tap offsets inside the input.
fn check_call(
    g: &Geometry,
    img: &[f32],
    weights: Weights,
    offsets: &[usize],
    out: &[f32],
    epi: Epilogue,
) {
    let (ho, wo) = g.out();
    let d = g.c * g.kh * g.kw;
    let blocks = g.o.div_ceil(OB);
    let weights_ok = match weights {
        Weights::F32(p) => p.len() >= blocks * d * OB,
        Weights::Nibbles { nibbles, step, lo } => {
            nibbles.len() >= blocks * d * OB / 2
                && step.len() >= blocks * OB
                && lo.len() >= blocks * OB
        }
        Weights::Rows { .. } => false,
    };
    assert!(
        img.len() >= g.c * g.h * g.w
            && out.len() >= g.o * ho * wo
            && weights_ok
            && offsets.len() == d
            && epi.residual.is_none_or(|r| r.len() >= g.o * ho * wo),
        "direct conv: buffers do not match the geometry"
    );
    assert!(available(), "direct conv: needs AVX-512 or AVX2 + FMA");
    let (positions, input_len) = (g.positions(), g.input_len());
    assert!(
        offsets.iter().all(|&off| off + positions <= input_len),
        "direct conv: tap offsets outside the input"
    );
}

/// One image: `img` `[C, H, W]` → `out` `[O, Ho, Wo]` with the epilogue applied.
/// `weights` in `pack_weights` order, `offsets` from `tap_offsets`; `scratch`
/// at least `g.scratch_len()` floats.
pub fn conv_image(
    g: &Geometry,
    img: &[f32],
    weights: Weights,
    offsets: &[usize],
    out: &mut [f32],
    scratch: &mut [f32],
    epi: Epilogue,
) {
    check_call(g, img, weights, offsets, out, epi);
    assert!(
        scratch.len() >= g.scratch_len(),
        "direct conv: scratch smaller than the geometry needs"
    );
    let ho = g.out().0;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `check_call` asserted the ISA and every bound the tiles rely
    // on; `out` is borrowed exclusively for the call.
    unsafe {
        run_blocks(
            g,
            img,
            weights,
            offsets,
            out.as_mut_ptr(),
            0..ho,
            scratch,
            epi,
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (img, weights, out, scratch, epi);
}

/// The output pointer shared by the parts of a split image (each part writes
/// only its own rows).
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: parts write disjoint rows (see `conv_image_split`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

thread_local! {
    static SPLIT_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// As `conv_image`, with the output rows divided into `parts` ranges run
/// over the engine's spinning team (batch-1 latency). Each part pads the
/// input itself (cheap next to the convolution) and writes only its rows.
#[allow(clippy::too_many_arguments)]
pub fn conv_image_split(
    g: &Geometry,
    img: &[f32],
    weights: Weights,
    offsets: &[usize],
    out: &mut [f32],
    epi: Epilogue,
    parts: usize,
    threads: usize,
) {
    check_call(g, img, weights, offsets, out, epi);
    let (ho, wo) = g.out();
    // Row boundaries on multiples of the exact tile's height.
    let unit = exact_rows(ho, wo).unwrap_or(1);
    let parts = parts.max(1);
    let bounds: Vec<usize> = (0..=parts)
        .map(|k| {
            if k == parts {
                ho
            } else {
                (k * ho / parts) / unit * unit
            }
        })
        .collect();
    let shared = SharedOut(out.as_mut_ptr());
    let part = |k: usize| {
        let rows = bounds[k]..bounds[k + 1];
        if rows.is_empty() {
            return;
        }
        // Capture the whole wrapper (which is Sync), not its raw-pointer field.
        #[allow(clippy::redundant_locals)]
        let shared = shared;
        SPLIT_SCRATCH.with(|cell| {
            let mut s = cell.borrow_mut();
            if s.len() < g.scratch_len() {
                s.resize(g.scratch_len(), 0.0);
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `check_call` as in `conv_image`; `team::run` calls each part once,
            // the row ranges are disjoint, and `out` stays borrowed until
            // every part has finished (`run` returns after all are done).
            unsafe {
                run_blocks(g, img, weights, offsets, shared.0, rows, &mut s, epi);
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (rows, &mut s, shared);
        });
    };
    crate::engine::team::run(parts, threads, &part);
}

/// Run `blocks_impl` for this CPU's ISA. Callers asserted `available()`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_blocks(
    g: &Geometry,
    img: &[f32],
    weights: Weights,
    offsets: &[usize],
    out: *mut f32,
    rows: std::ops::Range<usize>,
    scratch: &mut [f32],
    epi: Epilogue,
) {
    match isa() {
        Some(Isa::Avx512) => blocks_avx512(g, img, weights, offsets, out, rows, scratch, epi),
        _ => blocks_avx2(g, img, weights, offsets, out, rows, scratch, epi),
    }
}

/// The body of `conv_image` compiled for AVX-512, so the input copy, the
/// 4-bit decode and the epilogue vectorize 16 wide too.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn blocks_avx512(
    g: &Geometry,
    img: &[f32],
    weights: Weights,
    offsets: &[usize],
    out: *mut f32,
    rows: std::ops::Range<usize>,
    scratch: &mut [f32],
    epi: Epilogue,
) {
    blocks_impl::<true>(g, img, weights, offsets, out, rows, scratch, epi)
}

/// The same body for AVX2 + FMA CPUs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn blocks_avx2(
    g: &Geometry,
    img: &[f32],
    weights: Weights,
    offsets: &[usize],
    out: *mut f32,
    rows: std::ops::Range<usize>,
    scratch: &mut [f32],
    epi: Epilogue,
) {
    blocks_impl::<false>(g, img, weights, offsets, out, rows, scratch, epi)
}

/// Every block of 16 output channels: exact tiles where the shape allows
/// (AVX-512), else padded-width tiles and a separate epilogue pass.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn blocks_impl<const AVX512: bool>(
    g: &Geometry,
    img: &[f32],
    weights: Weights,
    offsets: &[usize],
    out: *mut f32,
    rows: std::ops::Range<usize>,
    scratch: &mut [f32],
    epi: Epilogue,
) {
    let (_, wp) = g.phase();
    let (ho, wo) = g.out();
    let d = g.c * g.kh * g.kw;
    let blocks = g.o.div_ceil(OB);
    let positions = g.positions();
    let (xpad, rest) = scratch.split_at_mut(g.input_len());
    let (tile_out, decoded) = rest.split_at_mut(OB * positions);
    fill_input::<AVX512>(g, img, xpad, rows.clone());
    for ob in 0..blocks {
        let wblock: &[f32] = match weights {
            Weights::F32(p) => &p[ob * d * OB..(ob + 1) * d * OB],
            Weights::Nibbles { nibbles, step, lo } => {
                if AVX512 {
                    decode_block_avx512(nibbles, step, lo, ob, d, &mut decoded[..d * OB], OB);
                } else {
                    decode_block(nibbles, step, lo, ob, d, &mut decoded[..d * OB], OB);
                }
                &decoded[..d * OB]
            }
            Weights::Rows { .. } => unreachable!("row-order codes fail the size check above"),
        };
        let valid = OB.min(g.o - ob * OB);
        if let Some(tile_rows) = exact_rows(ho, wo).filter(|_| AVX512) {
            let o0 = ob * OB;
            let bias: [f32; OB] = std::array::from_fn(|j| {
                if j < valid {
                    epi.bias.map_or(0.0, |b| b[o0 + j])
                } else {
                    0.0
                }
            });
            let tile = ExactTile {
                wq: wp,
                plane: ho * wo,
                wo,
                valid,
                bias: &bias,
                relu: epi.relu,
            };
            let out_block = out.add(o0 * ho * wo);
            let res_block = epi
                .residual
                .map(|r| &r[o0 * ho * wo..(o0 + valid) * ho * wo]);
            let cols = OB / tile_rows;
            for oy in rows.clone().step_by(tile_rows) {
                for ox in (0..wo).step_by(cols) {
                    // SAFETY: AVX-512 and the offsets' bound were asserted by
                    // `check_call`; the tile reads `xpad[off + oy·wq + ox +
                    // r·wq + c]` with (oy + r, ox + c) an output position, so
                    // below `off + positions`; it writes and reads output
                    // (and residual) elements (j, oy + r, ox + c) with j < valid,
                    // inside the block slices.
                    match tile_rows {
                        1 => tile_exact::<1>(
                            xpad, offsets, wblock, &tile, oy, ox, out_block, res_block,
                        ),
                        2 => tile_exact::<2>(
                            xpad, offsets, wblock, &tile, oy, ox, out_block, res_block,
                        ),
                        _ => tile_exact::<4>(
                            xpad, offsets, wblock, &tile, oy, ox, out_block, res_block,
                        ),
                    }
                }
            }
            continue;
        }
        let dst = &mut tile_out[..OB * positions];
        // Positions of these rows, from a multiple of 16 (tiles stay aligned).
        let (p_start, p_end) = (
            rows.start * wp / LANES * LANES,
            (rows.end * wp).min(positions),
        );
        for half in 0..2 {
            let dst_half = &mut dst[half * HB * positions..];
            for p0 in (p_start..p_end).step_by(PT) {
                // SAFETY: `available()` and the offsets' bound were asserted
                // by `check_call`: every load reads `xpad[off + p0 ..][..32]`
                // with off + positions ≤ xpad.len() and p0 + 32 ≤ positions
                // (16 for the last half tile); weights `t·OB + half·8 + j`
                // < d·OB; stores write `dst_half[j·positions + p0 ..]`,
                // j < 8, inside `OB·positions`.
                if !AVX512 {
                    for q in (p0..(p0 + PT).min(positions)).step_by(LANES) {
                        for quarter in 0..2 {
                            tile_avx2(xpad, offsets, wblock, half, quarter, q, dst_half, positions);
                        }
                    }
                } else if p0 + PT > positions {
                    tile_avx512::<1>(xpad, offsets, wblock, half, p0, dst_half, positions);
                } else {
                    tile_avx512::<2>(xpad, offsets, wblock, half, p0, dst_half, positions);
                }
            }
        }
        for j in 0..valid {
            let row = &dst[j * positions..];
            let o = ob * OB + j;
            let bias = epi.bias.map_or(0.0, |b| b[o]);
            for oy in rows.clone() {
                let src = &row[oy * wp..oy * wp + wo];
                let at = (o * ho + oy) * wo;
                // SAFETY: row (o, oy) of the output, written by this part only.
                let dst_row = std::slice::from_raw_parts_mut(out.add(at), wo);
                match epi.residual {
                    Some(r) => {
                        for ((d, s), rv) in dst_row.iter_mut().zip(src).zip(&r[at..at + wo]) {
                            let v = s + bias + rv;
                            *d = if epi.relu { v.max(0.0) } else { v };
                        }
                    }
                    None => {
                        for (d, s) in dst_row.iter_mut().zip(src) {
                            let v = s + bias;
                            *d = if epi.relu { v.max(0.0) } else { v };
                        }
                    }
                }
            }
        }
    }
}

/// Rows per exact tile for this output shape: 16 positions as `rows` output
/// rows × `16/rows` columns. None: the padded-width tiling runs instead.
fn exact_rows(ho: usize, wo: usize) -> Option<usize> {
    [1, 2, 4]
        .into_iter()
        .find(|&r| wo.is_multiple_of(OB / r) && (r == 1 || wo == OB / r) && ho.is_multiple_of(r))
}
