//! Direct int8 convolution (W8A8): uint8 activations × int8 weights with
//! int32 accumulation, the dequantisation, bias, residual and ReLU fused into
//! the write-out. Same scheme as `direct_conv` (outputs on the padded-width
//! grid, every tap one contiguous load), with two differences:
//!
//! * Four input channels are interleaved per 32-bit word, the unit that
//!   `vpdpbusd` (AVX-512 VNNI) and `vpmaddubsw` (AVX2) multiply-add.
//! * Strided convolutions are split into stride×stride phase planes, so a tap
//!   of a stride-2 conv is still one contiguous run of its phase plane.
//!
//! Activations are symmetric int8 (`q = clamp(round(x/s), −127, 127)`) stored
//! as `q + 128` in a u8, because the instructions want unsigned × signed.
//! `Σ w·(q+128) − 128·Σ w` recovers `Σ w·q` exactly; the per-channel
//! `128·Σ w` is precomputed (`Int8Weights::comp`). Padding is `128` (int 0).
//!
//! Kernels, chosen at run time: VNNI (AVX-512), AVX2 (`vpmaddubsw` then
//! `vpmaddwd`; the i16 pair sum saturates unless |w| ≤ 64, so it needs 7-bit
//! "reduce range" weights), AVX2 pairs for full 8-bit weights (activations
//! and weights widened to 16 bits, `vpmaddwd` only: exact, about half the
//! rate) and a portable one every SIMD kernel is tested against.
//! On AVX2-only CPUs, 3×3 stride-1 layers run `winograd::int16` instead:
//! ResNet-20 at batch 1 took 0.38 ms there, against 0.69 ms (8-bit weights)
//! and 0.51 ms (7-bit) on these kernels alone.

/// Output channels per packed block and per register tile.
pub const OB: usize = 8;
/// Positions per register tile (two 16-lane vectors).
const PT: usize = 32;

/// Which instruction sequence runs the inner product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Vnni512,
    Avx2,
    /// AVX2 `vpmaddwd` on 16-bit pairs: any 8-bit weights, exactly.
    Avx2Pairs,
    Portable,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Vnni512 => "avx512-vnni",
            Kernel::Avx2 => "avx2-maddubs",
            Kernel::Avx2Pairs => "avx2-madd16",
            Kernel::Portable => "portable",
        }
    }

    /// i32 words of packed weights per packed 4-channel word: the pairs
    /// kernel reads them split into two 16-bit pairs (`pair_words`).
    pub fn words_per_group(self) -> usize {
        if self == Kernel::Avx2Pairs {
            2
        } else {
            1
        }
    }

    /// Best kernel this CPU runs for weights of magnitude ≤ `max_abs_w`.
    pub fn detect(max_abs_w: i32) -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && !super::direct_conv::avx2_forced()
            {
                return Kernel::Vnni512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return if max_abs_w <= AVX2_MAX_W {
                    Kernel::Avx2
                } else {
                    Kernel::Avx2Pairs
                };
            }
        }
        let _ = max_abs_w;
        Kernel::Portable
    }

    /// Whether this CPU can run `self` (tests ask before comparing kernels).
    pub fn supported(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Vnni512 => {
                std::arch::is_x86_feature_detected!("avx512vnni")
                    && std::arch::is_x86_feature_detected!("avx512bw")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Avx2Pairs => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// Largest |w| for which `vpmaddubsw`'s i16 pair sum `255·w + 255·w` cannot
/// saturate: 2·255·64 = 32640 ≤ 32767.
pub const AVX2_MAX_W: i32 = 64;

pub use super::conv_geometry::Geometry;

/// Buffer sizes of the int8 kernel.
impl Geometry {
    /// Channel groups of four.
    pub fn groups(&self) -> usize {
        self.c.div_ceil(4)
    }
    /// Output positions computed (padded-width grid, rounded up to whole tiles).
    fn tile_positions(&self) -> usize {
        let (ho, _) = self.out();
        (ho * self.phase().1).div_ceil(PT) * PT
    }
    /// Words of the quantized input buffer, with slack for the junk tail of
    /// the last tile.
    pub fn input_words(&self) -> usize {
        let (_, wq) = self.phase();
        self.groups() * self.unit_len() + self.tile_positions() + self.kh * wq + self.kw + PT
    }
    /// i32 values of the tile output buffer for one block of `OB` channels.
    pub fn tile_len(&self) -> usize {
        OB * self.tile_positions()
    }
}

/// Word offset of every tap (channel group, ky, kx) in the quantized input.
pub fn tap_offsets(g: &Geometry) -> std::sync::Arc<[usize]> {
    super::conv_geometry::tap_offsets(g, g.groups())
}

/// `codes` `[O, C, kh, kw]` (int8) → `[ceil(O/8)][C/4 · kh · kw][8]` words,
/// each word the four channels `4g..4g+4` of one tap, zero-padded.
pub fn pack_weights(codes: &[i8], o: usize, c: usize, kh: usize, kw: usize) -> Vec<i32> {
    let groups = c.div_ceil(4);
    let taps = kh * kw;
    let d = groups * taps;
    let mut packed = vec![0i32; o.div_ceil(OB) * d * OB];
    for r in 0..o {
        let (b, j) = (r / OB, r % OB);
        for g in 0..groups {
            for t in 0..taps {
                let mut bytes = [0u8; 4];
                for (k, byte) in bytes.iter_mut().enumerate() {
                    let ch = 4 * g + k;
                    if ch < c {
                        *byte = codes[(r * c + ch) * taps + t] as u8;
                    }
                }
                packed[(b * d + g * taps + t) * OB + j] = i32::from_le_bytes(bytes);
            }
        }
    }
    packed
}

/// `pack_weights` words split for the `Avx2Pairs` kernel: word `2k` holds
/// bytes 0 and 2 of packed word `k` as sign-extended i16s, word `2k + 1`
/// bytes 1 and 3 — the channel pairs that masking an activation word with
/// `0x00FF00FF` (after shifting it by 0 or 8 bits) lines up with.
pub fn pair_words(packed: &[i32]) -> Vec<i32> {
    let pair = |lo: u8, hi: u8| {
        let (lo, hi) = (lo as i8 as i16 as u16 as u32, hi as i8 as i16 as u16 as u32);
        (lo | hi << 16) as i32
    };
    packed
        .iter()
        .flat_map(|&w| {
            let b = w.to_le_bytes();
            [pair(b[0], b[2]), pair(b[1], b[3])]
        })
        .collect()
}

/// `128·Σ w` per output channel: what the +128 activation offset adds.
pub fn offset_compensation(codes: &[i8], o: usize) -> Vec<i32> {
    let d = codes.len() / o.max(1);
    codes
        .chunks(d.max(1))
        .map(|row| 128 * row.iter().map(|&w| w as i32).sum::<i32>())
        .collect()
}

/// Four channels of int 0 (u8 128): padding and missing channels.
const PAD_WORD: u32 = 0x8080_8080;

/// Write one image `[C, H, W]` into the quantized, padded, channel-interleaved,
/// phase-split layout (`buf` has `input_words()·4` bytes). Rows of four
/// channels are quantized into words in one vectorized pass, then placed.
pub fn quantize_image(g: &Geometry, img: &[f32], scale: f32, buf: &mut [u32]) {
    let (units, tail) = buf.split_at_mut(g.groups() * g.unit_len());
    tail.fill(PAD_WORD);
    quantize_units(g, img, scale, 0, units);
}

/// Words past the last group's unit (the junk tail of the last tile):
/// `quantize_image` fills them; a caller quantizing group by group
/// ([`quantize_group`]) fills them itself.
pub fn fill_tail(g: &Geometry, buf: &mut [u32]) {
    buf[g.groups() * g.unit_len()..].fill(PAD_WORD);
}

/// Channel group `cg` (channels `4·cg ..`) of `quantize_image` into its
/// unit `unit` (`buf[cg·unit_len ..][..unit_len]`), padding included:
/// groups can be quantized by different threads.
pub fn quantize_group(g: &Geometry, img: &[f32], scale: f32, cg: usize, unit: &mut [u32]) {
    assert!(
        unit.len() == g.unit_len() && cg < g.groups(),
        "int8 conv: input unit size"
    );
    quantize_units(g, img, scale, cg, unit);
}

/// Groups `first ..` into `units` (whole units, one per group), with this
/// thread's row buffers and one feature check for all of them.
fn quantize_units(g: &Geometry, img: &[f32], scale: f32, first: usize, units: &mut [u32]) {
    ROW_SCRATCH.with(|cell| {
        let (zeros, words) = &mut *cell.borrow_mut();
        if zeros.len() < g.w {
            zeros.resize(g.w, 0.0);
            words.resize(g.w, 0);
        }
        let mut s = Scratch {
            zeros: &zeros[..g.w],
            words: &mut words[..g.w],
        };
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected just above.
            return unsafe { quantize_units_avx512(g, img, scale, first, units, s) };
        }
        for (k, unit) in units.chunks_exact_mut(g.unit_len()).enumerate() {
            quantize_group_body::<false>(g, img, scale, first + k, unit, s.reborrow());
        }
    })
}

/// `quantize_units` compiled for AVX-512: the padding fill, row
/// quantization and stride-2 column split inline and vectorize (as
/// separate calls with a scalar split they took 6 % of an int8 pass).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_units_avx512(
    g: &Geometry,
    img: &[f32],
    scale: f32,
    first: usize,
    units: &mut [u32],
    mut s: Scratch,
) {
    for (k, unit) in units.chunks_exact_mut(g.unit_len()).enumerate() {
        quantize_group_body::<true>(g, img, scale, first + k, unit, s.reborrow());
    }
}

thread_local! {
    static ROW_SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<u32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Row buffers of [`quantize_units`], `g.w` long: a row's words before
/// a strided split, and zeros for channels past `c`. Kept per thread, so
/// quantizing group by group allocates nothing.
struct Scratch<'a> {
    zeros: &'a [f32],
    words: &'a mut [u32],
}

impl Scratch<'_> {
    fn reborrow(&mut self) -> Scratch<'_> {
        Scratch {
            zeros: self.zeros,
            words: &mut *self.words,
        }
    }
}

#[inline(always)]
fn quantize_group_body<const AVX512: bool>(
    g: &Geometry,
    img: &[f32],
    scale: f32,
    cg: usize,
    unit: &mut [u32],
    Scratch { zeros, words }: Scratch,
) {
    let s = g.stride.max(1);
    if s == 1 {
        // Only what the rows leave: pad rows, pad columns.
        let (hq, wq) = g.phase();
        unit[..g.pad * wq].fill(PAD_WORD);
        unit[(g.pad + g.h) * wq..hq * wq].fill(PAD_WORD);
        for py in g.pad..g.pad + g.h {
            let row = &mut unit[py * wq..(py + 1) * wq];
            // Paired stores, not two memset calls per row (5 % of a pass).
            for i in 0..g.pad {
                row[i] = PAD_WORD;
                row[g.pad + g.w + i] = PAD_WORD;
            }
        }
    } else {
        unit.fill(PAD_WORD);
    }
    let inv = 1.0 / scale;
    for y in 0..g.h {
        let rows: [&[f32]; 4] = std::array::from_fn(|k| {
            let ch = 4 * cg + k;
            if ch < g.c {
                &img[(ch * g.h + y) * g.w..][..g.w]
            } else {
                zeros
            }
        });
        let py = y + g.pad;
        let base = g.row_base(py);
        let quantize = |rows, out: &mut [u32]| {
            #[cfg(target_arch = "x86_64")]
            if AVX512 {
                // SAFETY: AVX512 is only set by `quantize_units_avx512`.
                return unsafe { quantize_words_avx512(rows, inv, out) };
            }
            quantize_words(rows, inv, out)
        };
        if s == 1 {
            quantize(rows, &mut unit[base + g.pad..][..g.w]);
            continue;
        }
        quantize(rows, words);
        #[cfg(target_arch = "x86_64")]
        if AVX512 && s == 2 {
            let phase_of = |x: usize| base + g.col_offset(x + g.pad);
            let (e, o) = (phase_of(0), phase_of(1));
            let (ne, no) = (g.w.div_ceil(2), g.w / 2);
            assert!(e + ne <= unit.len() && o + no <= unit.len() && e.abs_diff(o) >= ne.max(no));
            // SAFETY: AVX-512 (see above); both runs inside `unit`, disjoint (asserted).
            unsafe {
                let p = unit.as_mut_ptr();
                super::conv_geometry::deinterleave2_avx512(words, p.add(e), p.add(o));
            }
            continue;
        }
        for (x, &w) in words.iter().enumerate() {
            let px = x + g.pad;
            unit[base + g.col_offset(px)] = w;
        }
    }
}

/// `out[i]` = the four channels' codes at position `i`, offset to u8, one per byte.
#[inline(always)]
fn quantize_words_generic(rows: [&[f32]; 4], inv: f32, out: &mut [u32]) {
    let n = out.len();
    let (r0, r1, r2, r3) = (&rows[0][..n], &rows[1][..n], &rows[2][..n], &rows[3][..n]);
    for i in 0..n {
        let q = |v: f32| ((v * inv).round_ties_even().clamp(-127.0, 127.0) as i32 + 128) as u32;
        out[i] = q(r0[i]) | q(r1[i]) << 8 | q(r2[i]) << 16 | q(r3[i]) << 24;
    }
}

fn quantize_words(rows: [&[f32]; 4], inv: f32, out: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected just above.
            return unsafe { quantize_words_avx512(rows, inv, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { quantize_words_avx2(rows, inv, out) };
        }
    }
    quantize_words_generic(rows, inv, out)
}

/// Sixteen positions per step: scale, clamp in float (so huge values cannot
/// wrap), convert with round-to-nearest-even, offset, pack four channels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn quantize_words_avx512(rows: [&[f32]; 4], inv: f32, out: &mut [u32]) {
    use std::arch::x86_64::*;
    let n = out.len();
    assert!(rows.iter().all(|r| r.len() >= n));
    let (vinv, lo, hi) = (
        _mm512_set1_ps(inv),
        _mm512_set1_ps(-127.0),
        _mm512_set1_ps(127.0),
    );
    let off = _mm512_set1_epi32(128);
    // A macro, not a closure: closures do not inherit `target_feature` and
    // were not inlined (a call per vector, 10 % of an int8 pass).
    macro_rules! q {
        ($r:expr, $i:expr, $m:expr) => {{
            let v = _mm512_mul_ps(_mm512_maskz_loadu_ps($m, $r.as_ptr().add($i)), vinv);
            let v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
            _mm512_add_epi32(_mm512_cvtps_epi32(v), off)
        }};
    }
    // Whole vectors, then one masked vector for the rest (8-wide rows are common).
    for i in (0..n).step_by(16) {
        let m: __mmask16 = if n - i >= 16 {
            0xffff
        } else {
            (1u16 << (n - i)) - 1
        };
        let w = _mm512_or_si512(
            _mm512_or_si512(q!(rows[0], i, m), _mm512_slli_epi32::<8>(q!(rows[1], i, m))),
            _mm512_or_si512(
                _mm512_slli_epi32::<16>(q!(rows[2], i, m)),
                _mm512_slli_epi32::<24>(q!(rows[3], i, m)),
            ),
        );
        _mm512_mask_storeu_epi32(out.as_mut_ptr().add(i) as *mut _, m, w);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_words_avx2(rows: [&[f32]; 4], inv: f32, out: &mut [u32]) {
    quantize_words_generic(rows, inv, out)
}

/// Per-output-channel work after the integer dot product:
/// `y = (acc − comp[o])·mult[o] + bias[o] (+ residual)`, then ReLU.
#[derive(Clone, Copy)]
pub struct Epilogue<'a> {
    pub comp: &'a [i32],
    /// `act_scale · weight_scale[o]`.
    pub mult: &'a [f32],
    pub bias: Option<&'a [f32]>,
    /// `[O, Ho, Wo]` of this image.
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

/// One image: quantized input `xq` (from `quantize_image`) → `out`
/// `[O, Ho, Wo]` f32. `packed` from `pack_weights` (this block of channels
/// onward), `tile` at least `g.tile_len()` values.
#[allow(clippy::too_many_arguments)]
pub fn conv_image(
    g: &Geometry,
    xq: &[u32],
    packed: &[i32],
    offsets: &[usize],
    out: &mut [f32],
    tile: &mut [i32],
    epi: Epilogue,
    kernel: Kernel,
) {
    let (ho, wo) = g.out();
    let d = g.groups() * g.kh * g.kw;
    let positions = g.tile_positions();
    assert!(
        xq.len() >= g.input_words()
            && out.len() >= g.o * ho * wo
            && packed.len() >= g.o.div_ceil(OB) * d * OB * kernel.words_per_group()
            && tile.len() >= g.tile_len()
            && offsets.len() == d
            && epi.comp.len() >= g.o
            && epi.mult.len() >= g.o,
        "int8 conv: buffers do not match the geometry"
    );
    assert!(kernel.supported(), "int8 conv: kernel not supported here");
    let input_words = g.input_words();
    assert!(
        offsets.iter().all(|&off| off + positions <= input_words),
        "int8 conv: tap offsets outside the input"
    );
    #[cfg(target_arch = "x86_64")]
    if kernel == Kernel::Vnni512 {
        // SAFETY: `supported()` for VNNI implies AVX-512F (asserted above).
        unsafe { blocks_avx512(g, xq, packed, offsets, out, tile, epi, kernel) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(kernel, Kernel::Avx2 | Kernel::Avx2Pairs) {
        // SAFETY: `supported()` for both AVX2 kernels means AVX2 (asserted above).
        unsafe { blocks_avx2(g, xq, packed, offsets, out, tile, epi, kernel) };
        return;
    }
    blocks(g, xq, packed, offsets, out, tile, epi, kernel);
}

/// `blocks` compiled for AVX2, so the epilogue runs 8 wide instead of SSE.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn blocks_avx2(
    g: &Geometry,
    xq: &[u32],
    packed: &[i32],
    offsets: &[usize],
    out: &mut [f32],
    tile: &mut [i32],
    epi: Epilogue,
    kernel: Kernel,
) {
    blocks(g, xq, packed, offsets, out, tile, epi, kernel)
}

/// `blocks` compiled for AVX-512, so the epilogue's int→float, scale, bias,
/// residual and ReLU run 16 wide (it was 16 % of an int8 pass in SSE).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn blocks_avx512(
    g: &Geometry,
    xq: &[u32],
    packed: &[i32],
    offsets: &[usize],
    out: &mut [f32],
    tile: &mut [i32],
    epi: Epilogue,
    kernel: Kernel,
) {
    blocks(g, xq, packed, offsets, out, tile, epi, kernel)
}

/// Every block of 8 output channels: integer tiles, then the epilogue.
/// Callers have checked the buffers (`conv_image`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn blocks(
    g: &Geometry,
    xq: &[u32],
    packed: &[i32],
    offsets: &[usize],
    out: &mut [f32],
    tile: &mut [i32],
    epi: Epilogue,
    kernel: Kernel,
) {
    let (ho, wo) = g.out();
    let (_, wq) = g.phase();
    let d = g.groups() * g.kh * g.kw;
    let positions = g.tile_positions();
    let block_words = d * OB * kernel.words_per_group();
    for ob in 0..g.o.div_ceil(OB) {
        let wblock = &packed[ob * block_words..(ob + 1) * block_words];
        #[cfg(target_arch = "x86_64")]
        if kernel == Kernel::Vnni512 && exact_groups(ho, wo) {
            let o0 = ob * OB;
            let valid = OB.min(g.o - o0);
            let plane = ho * wo;
            let t = ExactTile {
                wq,
                wide: wo.is_multiple_of(16),
                wo,
                plane,
                valid,
                comp: &epi.comp[o0..o0 + valid],
                mult: &epi.mult[o0..o0 + valid],
                bias: epi.bias.map(|b| &b[o0..o0 + valid]),
                relu: epi.relu,
            };
            let out_block = &mut out[o0 * plane..(o0 + valid) * plane];
            let res_block = epi.residual.map(|r| &r[o0 * plane..(o0 + valid) * plane]);
            let groups = plane / 16;
            for g0 in (0..groups).step_by(2) {
                // SAFETY: `supported()` (VNNI implies AVX-512F/BW) and the
                // offsets' bound were asserted in `conv_image`; a group's
                // loads read words `off + oy·wq + ox ..` of output rows
                // oy < ho, columns < wo, so below `off + tile_positions()`;
                // stores and residual loads touch positions < plane of
                // channels < valid, inside the block slices.
                unsafe {
                    if g0 + 2 <= groups {
                        tile_vnni_exact::<2>(xq, offsets, wblock, &t, g0, out_block, res_block);
                    } else {
                        tile_vnni_exact::<1>(xq, offsets, wblock, &t, g0, out_block, res_block);
                    }
                }
            }
            continue;
        }
        let dst = &mut tile[..OB * positions];
        for p0 in (0..positions).step_by(PT) {
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `supported()` and the offsets' bound were asserted
                // in `conv_image`: loads read words `off + p0 ..][..32]` with
                // off + positions ≤ input_words() and p0 + 32 ≤ positions.
                // Stores write `dst[j·positions + p0 ..][..32]`, inside `tile_len()`.
                Kernel::Vnni512 => unsafe { tile_vnni(xq, offsets, wblock, p0, dst, positions) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as for VNNI.
                Kernel::Avx2 => unsafe {
                    tile_avx2::<false>(xq, offsets, wblock, p0, dst, positions)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as for VNNI; `wblock` holds two words per packed word.
                Kernel::Avx2Pairs => unsafe {
                    tile_avx2::<true>(xq, offsets, wblock, p0, dst, positions)
                },
                _ => tile_portable(xq, offsets, wblock, p0, dst, positions),
            }
        }
        for j in 0..OB.min(g.o - ob * OB) {
            let o = ob * OB + j;
            let row = &dst[j * positions..];
            let (comp, mult) = (epi.comp[o], epi.mult[o]);
            let bias = epi.bias.map_or(0.0, |b| b[o]);
            for oy in 0..ho {
                let src = &row[oy * wq..oy * wq + wo];
                let at = (o * ho + oy) * wo;
                let dst_row = &mut out[at..at + wo];
                match epi.residual {
                    Some(r) => {
                        for ((d, &a), rv) in dst_row.iter_mut().zip(src).zip(&r[at..at + wo]) {
                            let v = (a - comp) as f32 * mult + bias + rv;
                            *d = if epi.relu { v.max(0.0) } else { v };
                        }
                    }
                    None => {
                        for (d, &a) in dst_row.iter_mut().zip(src) {
                            let v = (a - comp) as f32 * mult + bias;
                            *d = if epi.relu { v.max(0.0) } else { v };
                        }
                    }
                }
            }
        }
    }
}

/// Whether the output grid splits into exact 16-position groups that each
/// read one contiguous run (rows of 16k) or two (pairs of 8-wide rows).
fn exact_groups(ho: usize, wo: usize) -> bool {
    wo.is_multiple_of(16) || (wo == 8 && ho.is_multiple_of(2))
}

/// What an exact tile needs besides its position: input pitch, output shape
/// and this block's epilogue (channels `0..valid` of the block).
struct ExactTile<'a> {
    wq: usize,
    /// Groups lie within one row (wo a multiple of 16); else two 8-wide rows.
    wide: bool,
    wo: usize,
    plane: usize,
    valid: usize,
    comp: &'a [i32],
    mult: &'a [f32],
    bias: Option<&'a [f32]>,
    relu: bool,
}

/// 8 channels × `V` groups of 16 output positions in raster order, so each
/// accumulator vector is 16 consecutive outputs of one channel: the
/// epilogue (the same float operations as `blocks`') stores straight into
/// the output. No tile buffer, no junk columns: the separate pass over the
/// padded-width grid took 20 % of an int8 ResNet pass.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni_exact<const V: usize>(
    xq: &[u32],
    offsets: &[usize],
    wblock: &[i32],
    t: &ExactTile,
    g0: usize,
    out: &mut [f32],
    residual: Option<&[f32]>,
) {
    use std::arch::x86_64::*;
    // Input offset of each group's first position (and of its second row).
    let start: [usize; V] = std::array::from_fn(|v| {
        let q = (g0 + v) * 16;
        (q / t.wo) * t.wq + q % t.wo
    });
    let mut acc = [[_mm512_setzero_si512(); V]; OB];
    let x = xq.as_ptr();
    let wp = wblock.as_ptr();
    for (k, &off) in offsets.iter().enumerate() {
        let xv: [__m512i; V] = std::array::from_fn(|v| {
            let p = x.add(off + start[v]);
            if t.wide {
                _mm512_loadu_si512(p as *const _)
            } else {
                let lo = _mm256_loadu_si256(p as *const _);
                let hi = _mm256_loadu_si256(p.add(t.wq) as *const _);
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
            }
        });
        let wt = wp.add(k * OB);
        for (j, a) in acc.iter_mut().enumerate() {
            let wv = _mm512_set1_epi32(*wt.add(j));
            for v in 0..V {
                a[v] = _mm512_dpbusd_epi32(a[v], xv[v], wv);
            }
        }
    }
    let zero = _mm512_setzero_ps();
    for (j, a) in acc.iter().enumerate().take(t.valid) {
        let comp = _mm512_set1_epi32(t.comp[j]);
        let mult = _mm512_set1_ps(t.mult[j]);
        let bias = _mm512_set1_ps(t.bias.map_or(0.0, |b| b[j]));
        for (v, &av) in a.iter().enumerate() {
            let at = j * t.plane + (g0 + v) * 16;
            let f = _mm512_cvtepi32_ps(_mm512_sub_epi32(av, comp));
            let mut y = _mm512_add_ps(_mm512_mul_ps(f, mult), bias);
            if let Some(r) = residual {
                y = _mm512_add_ps(y, _mm512_loadu_ps(r.as_ptr().add(at)));
            }
            if t.relu {
                y = _mm512_max_ps(y, zero);
            }
            _mm512_storeu_ps(out.as_mut_ptr().add(at), y);
        }
    }
}

/// The reference every SIMD kernel is tested against.
fn tile_portable(
    xq: &[u32],
    offsets: &[usize],
    wblock: &[i32],
    p0: usize,
    dst: &mut [i32],
    positions: usize,
) {
    let mut acc = [[0i32; PT]; OB];
    for (t, &off) in offsets.iter().enumerate() {
        let ws = &wblock[t * OB..(t + 1) * OB];
        for p in 0..PT {
            let x = xq[off + p0 + p].to_le_bytes();
            for (j, &wword) in ws.iter().enumerate() {
                let w = wword.to_le_bytes();
                acc[j][p] += (0..4).map(|k| x[k] as i32 * w[k] as i8 as i32).sum::<i32>();
            }
        }
    }
    for (j, a) in acc.iter().enumerate() {
        dst[j * positions + p0..][..PT].copy_from_slice(a);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni(
    xq: &[u32],
    offsets: &[usize],
    wblock: &[i32],
    p0: usize,
    dst: &mut [i32],
    positions: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_si512(); 2]; OB];
    let x = xq.as_ptr();
    let wp = wblock.as_ptr();
    for (t, &off) in offsets.iter().enumerate() {
        let x0 = _mm512_loadu_si512(x.add(off + p0) as *const _);
        let x1 = _mm512_loadu_si512(x.add(off + p0 + 16) as *const _);
        let wt = wp.add(t * OB);
        for (j, a) in acc.iter_mut().enumerate() {
            let wv = _mm512_set1_epi32(*wt.add(j));
            a[0] = _mm512_dpbusd_epi32(a[0], x0, wv);
            a[1] = _mm512_dpbusd_epi32(a[1], x1, wv);
        }
    }
    let d = dst.as_mut_ptr();
    for (j, a) in acc.iter().enumerate() {
        _mm512_storeu_si512(d.add(j * positions + p0) as *mut _, a[0]);
        _mm512_storeu_si512(d.add(j * positions + p0 + 16) as *mut _, a[1]);
    }
}

/// AVX2 tiles, 8 channels × 8 positions at a time (8 accumulators and the
/// operands fit the 16 ymm registers). `PAIRS = false`: `vpmaddubsw` then
/// `vpmaddwd` by ones, exact only for |w| ≤ 64 (`AVX2_MAX_W`). `PAIRS =
/// true`, for any 8-bit weights: each activation word splits into channels
/// (0, 2) and (1, 3) as zero-extended 16-bit pairs, each multiplied with the
/// matching sign-extended weight pair (`pair_words`) by `vpmaddwd`
/// (|sum| ≤ 2·255·128, exact in i32) — twice the multiplies' instructions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2<const PAIRS: bool>(
    xq: &[u32],
    offsets: &[usize],
    wblock: &[i32],
    p0: usize,
    dst: &mut [i32],
    positions: usize,
) {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mask = _mm256_set1_epi32(0x00FF_00FF);
    let x = xq.as_ptr();
    let wp = wblock.as_ptr();
    let d = dst.as_mut_ptr();
    let words = if PAIRS { 2 } else { 1 };
    for q in (0..PT).step_by(8) {
        let mut acc = [_mm256_setzero_si256(); OB];
        for (t, &off) in offsets.iter().enumerate() {
            let xv = _mm256_loadu_si256(x.add(off + p0 + q) as *const _);
            let even = _mm256_and_si256(xv, mask);
            let odd = _mm256_and_si256(_mm256_srli_epi32::<8>(xv), mask);
            let wt = wp.add(t * OB * words);
            for (j, a) in acc.iter_mut().enumerate() {
                let s = if PAIRS {
                    let we = _mm256_set1_epi32(*wt.add(2 * j));
                    let wo = _mm256_set1_epi32(*wt.add(2 * j + 1));
                    _mm256_add_epi32(_mm256_madd_epi16(even, we), _mm256_madd_epi16(odd, wo))
                } else {
                    let wv = _mm256_set1_epi32(*wt.add(j));
                    _mm256_madd_epi16(_mm256_maddubs_epi16(xv, wv), ones)
                };
                *a = _mm256_add_epi32(*a, s);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            _mm256_storeu_si256(d.add(j * positions + p0 + q) as *mut _, *a);
        }
    }
}
