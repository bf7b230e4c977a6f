//! Direct stride-1 convolution, no im2col: outputs are computed on the
//! padded-width grid (`p = oy·Wp + ox`, `Wp = W + 2·pad`), where the input
//! under tap (ky, kx) is the contiguous run `xpad[c][p + ky·Wp + kx]`. A
//! register tile of 8 output channels × 32 positions accumulates
//! `broadcast(w) · load(x)` over (c, ky, kx); junk columns (ox ≥ Wo) are
//! dropped when the tile is written out. Strided convolutions read
//! stride×stride phase planes of the padded input, so each tap is still one
//! contiguous run. AVX-512 only; elsewhere callers use the im2col + GEMM
//! path, which the tests compare this kernel against.
//!
//! Weights come as f32 (packed once per model) or as 4-bit codes that are
//! decoded block by block (8 output channels) right before use, so a
//! weight-only model's weights stay 4-bit in memory.

/// Output-channel block of the packed weights and of the register tile.
pub const OB: usize = 8;
const LANES: usize = 16;
/// Positions per register tile (two vectors).
const PT: usize = 2 * LANES;

/// Weights `[O, C, kh, kw]` → `[ceil(O/8)][C·kh·kw][8]`, zero-padded.
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
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Geometry of one stride-1 convolution.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub pad: usize,
    pub stride: usize,
}

impl Geometry {
    /// One phase plane: the padded input subsampled by the stride.
    fn phase(&self) -> (usize, usize) {
        let s = self.stride.max(1);
        (
            (self.h + 2 * self.pad).div_ceil(s),
            (self.w + 2 * self.pad).div_ceil(s),
        )
    }
    /// Floats per input channel: `stride²` phase planes.
    fn channel_len(&self) -> usize {
        let (hq, wq) = self.phase();
        self.stride.max(1).pow(2) * hq * wq
    }
    pub fn out(&self) -> (usize, usize) {
        let s = self.stride.max(1);
        (
            (self.h + 2 * self.pad - self.kh) / s + 1,
            (self.w + 2 * self.pad - self.kw) / s + 1,
        )
    }
    fn positions(&self) -> usize {
        // Whole vectors; a last half tile runs one vector wide (on 8×8 maps
        // rounding up to whole 32-position tiles computed 20 % junk).
        (self.out().0 * self.phase().1).div_ceil(LANES) * LANES
    }
    /// Padded input + slack for the junk tail of the last tile.
    fn input_len(&self) -> usize {
        self.c * self.channel_len() + self.positions() + self.kh * self.phase().1 + self.kw + PT
    }
    /// Floats of scratch space `conv_image` needs: input, tile output, and
    /// one decoded block of weights.
    pub fn scratch_len(&self) -> usize {
        self.input_len() + OB * self.positions() + OB * self.c * self.kh * self.kw
    }
}

/// Offsets of every tap (c, ky, kx) in the phase-split padded input,
/// computed once per call.
pub fn tap_offsets(g: &Geometry) -> Vec<usize> {
    let s = g.stride.max(1);
    let (hq, wq) = g.phase();
    let cl = g.channel_len();
    let mut v = Vec::with_capacity(g.c * g.kh * g.kw);
    for ch in 0..g.c {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let phase = (ky % s) * s + kx % s;
                v.push(ch * cl + phase * hq * wq + (ky / s) * wq + kx / s);
            }
        }
    }
    v
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
        }
    }
}

/// Decode output-channel block `ob` of 4-bit weights into `dst` (`d·OB`
/// floats), 32 values per step: 16 bytes widened to 32-bit lanes, low and
/// high nibbles interleaved back into order, then `lo + step·code` with the
/// block's 8 channel scales repeated twice across the vector.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn decode_block_avx512(
    nibbles: &[u8],
    step: &[f32],
    lo: &[f32],
    ob: usize,
    d: usize,
    dst: &mut [f32],
) {
    use std::arch::x86_64::*;
    let n = d * OB;
    let bytes = &nibbles[ob * n / 2..(ob + 1) * n / 2];
    let dst = &mut dst[..n];
    let (st, l) = (&step[ob * OB..][..OB], &lo[ob * OB..][..OB]);
    let twice = |v: &[f32]| {
        let h = _mm256_loadu_ps(v.as_ptr());
        _mm512_insertf32x8::<1>(_mm512_castps256_ps512(h), h)
    };
    let (vs, vl) = (twice(st), twice(l));
    let mask = _mm512_set1_epi32(15);
    // Lane i of `first` takes element i/2 of lo (even i) or of hi (odd i).
    let first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let second = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let full = bytes.len() / 16 * 16;
    for k in (0..full).step_by(16) {
        let b = _mm512_cvtepu8_epi32(_mm_loadu_si128(bytes.as_ptr().add(k) as *const _));
        let lo_n = _mm512_cvtepi32_ps(_mm512_and_si512(b, mask));
        let hi_n = _mm512_cvtepi32_ps(_mm512_srli_epi32::<4>(b));
        let v0 = _mm512_permutex2var_ps(lo_n, first, hi_n);
        let v1 = _mm512_permutex2var_ps(lo_n, second, hi_n);
        _mm512_storeu_ps(dst.as_mut_ptr().add(2 * k), _mm512_fmadd_ps(v0, vs, vl));
        _mm512_storeu_ps(
            dst.as_mut_ptr().add(2 * k + 16),
            _mm512_fmadd_ps(v1, vs, vl),
        );
    }
    for k in full..bytes.len() {
        let (j, b) = ((2 * k) % OB, bytes[k]);
        dst[2 * k] = l[j] + st[j] * (b & 15) as f32;
        dst[2 * k + 1] = l[j + 1] + st[j + 1] * (b >> 4) as f32;
    }
}

/// Portable twin of `decode_block_avx512` (tests compare the two).
pub fn decode_block(
    nibbles: &[u8],
    step: &[f32],
    lo: &[f32],
    ob: usize,
    d: usize,
    dst: &mut [f32],
) {
    let n = d * OB;
    let bytes = &nibbles[ob * n / 2..(ob + 1) * n / 2];
    let (st, l) = (&step[ob * OB..][..OB], &lo[ob * OB..][..OB]);
    // OB is even, so a byte never straddles two taps: byte k holds channels
    // 2k mod 8 and 2k+1 mod 8 of tap 2k div 8.
    for (k, (&b, pair)) in bytes.iter().zip(dst.chunks_exact_mut(2)).enumerate() {
        let j = (2 * k) % OB;
        pair[0] = l[j] + st[j] * (b & 15) as f32;
        pair[1] = l[j + 1] + st[j + 1] * (b >> 4) as f32;
    }
}

/// What happens to each output as it leaves the tile: `+ bias[o]`, `+ residual`, ReLU.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    /// `[O, Ho, Wo]` of this image.
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

/// Copy one image into the zero-padded, phase-split layout.
fn fill_input(g: &Geometry, img: &[f32], xpad: &mut [f32]) {
    let s = g.stride.max(1);
    let (hq, wq) = g.phase();
    let cl = g.channel_len();
    xpad.fill(0.0);
    for ch in 0..g.c {
        for y in 0..g.h {
            let py = y + g.pad;
            let src = &img[(ch * g.h + y) * g.w..][..g.w];
            let base = ch * cl + (py % s) * s * hq * wq + (py / s) * wq;
            if s == 1 {
                xpad[base + g.pad..][..g.w].copy_from_slice(src);
            } else {
                // Column phase `ph` takes every s-th input column.
                for ph in 0..s {
                    let x0 = (ph + s - g.pad % s) % s;
                    let dst = &mut xpad[base + ph * hq * wq + (x0 + g.pad) / s..];
                    for (d, &v) in dst.iter_mut().zip(src.iter().skip(x0).step_by(s)) {
                        *d = v;
                    }
                }
            }
        }
    }
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
    };
    assert!(
        img.len() >= g.c * g.h * g.w
            && out.len() >= g.o * ho * wo
            && weights_ok
            && scratch.len() >= g.scratch_len()
            && offsets.len() == d,
        "direct conv: buffers do not match the geometry"
    );
    let positions = g.positions();
    assert!(available(), "direct conv: needs AVX-512");
    assert!(
        offsets.iter().all(|&off| off + positions <= g.input_len()),
        "direct conv: tap offsets outside the input"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512 was asserted above; the bounds the tiles rely on too.
    unsafe {
        blocks_avx512(g, img, weights, offsets, out, scratch, epi);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (img, weights, out, scratch, epi);
}

/// The body of `conv_image` compiled for AVX-512, so the input copy, the
/// 4-bit decode and the epilogue vectorize 16 wide too.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn blocks_avx512(
    g: &Geometry,
    img: &[f32],
    weights: Weights,
    offsets: &[usize],
    out: &mut [f32],
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
    fill_input(g, img, xpad);
    for ob in 0..blocks {
        let wblock: &[f32] = match weights {
            Weights::F32(p) => &p[ob * d * OB..(ob + 1) * d * OB],
            Weights::Nibbles { nibbles, step, lo } => {
                decode_block_avx512(nibbles, step, lo, ob, d, &mut decoded[..d * OB]);
                &decoded[..d * OB]
            }
        };
        let dst = &mut tile_out[..OB * positions];
        for p0 in (0..positions).step_by(PT) {
            if p0 + PT > positions {
                tile_avx512::<1>(xpad, offsets, wblock, p0, dst, positions);
                continue;
            }
            // SAFETY: `available()` and the offsets' bound were asserted
            // in `conv_image`: every load reads `xpad[off + p0 ..][..32]` with
            // off + positions ≤ xpad.len() and p0 + 32 ≤ positions; every
            // store writes `dst[j·positions + p0 ..][..32]` inside `OB·positions`.
            tile_avx512::<2>(xpad, offsets, wblock, p0, dst, positions);
        }
        for j in 0..OB.min(g.o - ob * OB) {
            let row = &dst[j * positions..];
            let o = ob * OB + j;
            let bias = epi.bias.map_or(0.0, |b| b[o]);
            for oy in 0..ho {
                let src = &row[oy * wp..oy * wp + wo];
                let at = (o * ho + oy) * wo;
                let dst_row = &mut out[at..at + wo];
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const V: usize>(
    xpad: &[f32],
    offsets: &[usize],
    wblock: &[f32],
    p0: usize,
    dst: &mut [f32],
    positions: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); V]; OB];
    let x = xpad.as_ptr();
    let wp = wblock.as_ptr();
    for (t, &off) in offsets.iter().enumerate() {
        // SAFETY: see the caller; `t·OB + j < d·OB = wblock.len()`.
        let xv: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(x.add(off + p0 + v * LANES)));
        let wt = wp.add(t * OB);
        for (j, a) in acc.iter_mut().enumerate() {
            let wv = _mm512_set1_ps(*wt.add(j));
            for v in 0..V {
                a[v] = _mm512_fmadd_ps(wv, xv[v], a[v]);
            }
        }
    }
    let d = dst.as_mut_ptr();
    for (j, a) in acc.iter().enumerate() {
        for (v, av) in a.iter().enumerate() {
            _mm512_storeu_ps(d.add(j * positions + p0 + v * LANES), *av);
        }
    }
}
