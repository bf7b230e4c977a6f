//! Direct stride-1 convolution, no im2col: outputs are computed on the
//! padded-width grid (`p = oy·Wp + ox`, `Wp = W + 2·pad`), where the input
//! under tap (ky, kx) is the contiguous run `xpad[c][p + ky·Wp + kx]`. A
//! register tile of 8 output channels × 32 positions accumulates
//! `broadcast(w) · load(x)` over (c, ky, kx); junk columns (ox ≥ Wo) are
//! dropped when the tile is written out. AVX-512 only; elsewhere callers use
//! the im2col + GEMM path, which the tests compare this kernel against.

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
}

impl Geometry {
    fn padded(&self) -> (usize, usize) {
        (self.h + 2 * self.pad, self.w + 2 * self.pad)
    }
    pub fn out(&self) -> (usize, usize) {
        (
            self.h + 2 * self.pad + 1 - self.kh,
            self.w + 2 * self.pad + 1 - self.kw,
        )
    }
    /// Floats of scratch space `conv_image` needs.
    pub fn scratch_len(&self) -> usize {
        let (hp, wp) = self.padded();
        let (ho, _) = self.out();
        let positions = (ho * wp).div_ceil(PT) * PT;
        // Padded input + slack for the junk tail of the last tile, then the tile output.
        self.c * hp * wp
            + positions
            + self.kh * wp
            + self.kw
            + PT
            + self.o.div_ceil(OB) * OB * positions
    }
}

/// Offsets of every tap (c, ky, kx) in the padded input, computed once per call.
pub fn tap_offsets(g: &Geometry) -> Vec<usize> {
    let (hp, wp) = g.padded();
    (0..g.c)
        .flat_map(|ch| {
            (0..g.kh).flat_map(move |ky| (0..g.kw).map(move |kx| ch * hp * wp + ky * wp + kx))
        })
        .collect()
}

/// What happens to each output as it leaves the tile: `+ bias[o]`, `+ residual`, ReLU.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    /// `[O, Ho, Wo]` of this image.
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

/// One image: `img` `[C, H, W]` → `out` `[O, Ho, Wo]` with the epilogue applied.
/// `packed` from `pack_weights`, `offsets` from `tap_offsets`; `scratch` at
/// least `g.scratch_len()` floats.
pub fn conv_image(
    g: &Geometry,
    img: &[f32],
    packed: &[f32],
    offsets: &[usize],
    out: &mut [f32],
    scratch: &mut [f32],
    epi: Epilogue,
) {
    let (hp, wp) = g.padded();
    let (ho, wo) = g.out();
    let d = g.c * g.kh * g.kw;
    assert!(
        img.len() >= g.c * g.h * g.w && out.len() >= g.o * ho * wo,
        "direct conv: buffers too small"
    );
    assert!(
        packed.len() >= g.o.div_ceil(OB) * d * OB && scratch.len() >= g.scratch_len(),
        "direct conv: buffers too small"
    );
    let positions = (ho * wp).div_ceil(PT) * PT;
    let in_len = g.c * hp * wp + positions + g.kh * wp + g.kw + PT;
    let (xpad, tile_out) = scratch.split_at_mut(in_len);
    xpad.fill(0.0);
    for ch in 0..g.c {
        for y in 0..g.h {
            let dst = (ch * hp + y + g.pad) * wp + g.pad;
            xpad[dst..dst + g.w].copy_from_slice(&img[(ch * g.h + y) * g.w..][..g.w]);
        }
    }
    assert_eq!(
        offsets.len(),
        d,
        "direct conv: offsets do not match the geometry"
    );
    for ob in 0..g.o.div_ceil(OB) {
        let wblock = &packed[ob * d * OB..(ob + 1) * d * OB];
        let dst = &mut tile_out[..OB * positions];
        for p0 in (0..positions).step_by(PT) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `available()` was checked by the caller (`conv2d` only
            // calls this kernel when it returned true). Every load reads
            // `xpad[off + p0 .. off + p0 + 32]` with off ≤ c·hp·wp + kh·wp + kw
            // and p0 + 32 ≤ positions, inside `in_len`; every store writes
            // `dst[j·positions + p0 ..][..32]` inside `OB·positions`.
            unsafe {
                tile_avx512(xpad, offsets, wblock, p0, dst, positions);
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (p0, offsets, wblock, &dst);
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
unsafe fn tile_avx512(
    xpad: &[f32],
    offsets: &[usize],
    wblock: &[f32],
    p0: usize,
    dst: &mut [f32],
    positions: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; OB];
    let x = xpad.as_ptr();
    let wp = wblock.as_ptr();
    for (t, &off) in offsets.iter().enumerate() {
        // SAFETY: see the caller; `t·OB + j < d·OB = wblock.len()`.
        let x0 = _mm512_loadu_ps(x.add(off + p0));
        let x1 = _mm512_loadu_ps(x.add(off + p0 + LANES));
        let wt = wp.add(t * OB);
        for (j, a) in acc.iter_mut().enumerate() {
            let wv = _mm512_set1_ps(*wt.add(j));
            a[0] = _mm512_fmadd_ps(wv, x0, a[0]);
            a[1] = _mm512_fmadd_ps(wv, x1, a[1]);
        }
    }
    let d = dst.as_mut_ptr();
    for (j, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(d.add(j * positions + p0), a[0]);
        _mm512_storeu_ps(d.add(j * positions + p0 + LANES), a[1]);
    }
}
