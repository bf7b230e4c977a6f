//! A convolution's weight gradient, `dW[o][c,ky,kx] = Σ_b Σ_pos dY[b][o][pos] ·
//! X[b][c][pos·s + (ky, kx) − pad]`, for training and the CoRa rank search.
//!
//! As a GEMM (`dY · im2colᵀ`) one operand is `c·kh·kw × positions` and
//! each of its elements is used only `o` times; with ResNet's 16 output
//! channels the GEMM library's packing of it cost several times the
//! multiply-adds (20 GFLOP/s on 2 cores for 16 channels at 32×32). Here no
//! operand is packed: each output position loads its `dY` as vectors over
//! output channels (a transposed copy per image) and multiplies them by
//! the input values of a tile of `(c, ky, kx)` rows, each one broadcast
//! load straight from a zero-padded copy of the image. The tile's
//! accumulators stay in registers over all positions.
//!
//! Sums run in a fixed order (image by image, position by position), so
//! results do not depend on threads: callers split by images.
use super::conv_geometry::Geometry;
use super::direct_conv::isa;
pub use super::direct_conv::Isa;

/// The zero-padded image's sides.
fn padded(g: &Geometry) -> (usize, usize) {
    (g.h + 2 * g.pad, g.w + 2 * g.pad)
}

/// The `(c, ky, kx)` rows of dW.
fn row_count(g: &Geometry) -> usize {
    g.c * g.kh * g.kw
}

/// Add the weight gradient of images `images` of `x` (`n × c × h × w`) and
/// `dy` (`n × o × ho × wo`) to `dw` (`o × c·kh·kw`). Returns false, with
/// `dw` untouched, when no SIMD kernel runs here.
pub fn accumulate(
    g: &Geometry,
    x: &[f32],
    dy: &[f32],
    images: std::ops::Range<usize>,
    dw: &mut [f32],
) -> bool {
    match isa() {
        Some(isa) => accumulate_on(isa, g, x, dy, images, dw),
        None => false,
    }
}

/// [`accumulate`] with the kernel of `isa` (tests run both where AVX-512
/// exists); false when this CPU cannot run it.
pub fn accumulate_on(
    isa: Isa,
    g: &Geometry,
    x: &[f32],
    dy: &[f32],
    images: std::ops::Range<usize>,
    dw: &mut [f32],
) -> bool {
    if !supports(isa) {
        return false;
    }
    // `out()` keeps every padded read in the image once the kernel fits.
    let (hp, wp) = padded(g);
    assert!(g.kh <= hp && g.kw <= wp, "weight_grad: geometry {g:?}");
    let (ho, wo) = g.out();
    let (d, p) = (row_count(g), ho * wo);
    assert!(
        x.len() >= images.end * g.c * g.h * g.w && dy.len() >= images.end * g.o * p,
        "weight_grad: inputs too small"
    );
    assert!(dw.len() >= g.o * d, "weight_grad: dW too small");
    let lanes = if isa == Isa::Avx512 { 16 } else { 8 };
    let o_pad = g.o.div_ceil(lanes) * lanes;
    let mut xpad = vec![0f32; g.c * hp * wp];
    let mut dyt = vec![0f32; p * o_pad];
    // `dW` transposed (`[c·kh·kw][o_pad]`): each row's output channels are
    // the lanes of the kernel's accumulators.
    let mut dwt = vec![0f32; d * o_pad];
    for b in images {
        pad_image(g, &x[b * g.c * g.h * g.w..][..g.c * g.h * g.w], &mut xpad);
        let dyb = &dy[b * g.o * p..][..g.o * p];
        for (oc, row) in dyb.chunks_exact(p).enumerate() {
            for (pos, &v) in row.iter().enumerate() {
                dyt[pos * o_pad + oc] = v;
            }
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `supports` checked the CPU; `out()` keeps every padded
        // read in `xpad`, the buffers are sized above, and `run` only
        // indexes rows below `d` and lanes below `o_pad`.
        unsafe {
            run(g, isa, &xpad, &dyt, o_pad, &mut dwt)
        };
    }
    for (oc, row) in dw.chunks_exact_mut(d).take(g.o).enumerate() {
        for (r, v) in row.iter_mut().enumerate() {
            *v += dwt[r * o_pad + oc];
        }
    }
    true
}

fn supports(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        match isa {
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            Isa::Avx2 => avx2,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        false
    }
}

/// The image with `pad` zeros around each channel (the borders were zeroed
/// at allocation and are never written).
fn pad_image(g: &Geometry, img: &[f32], xpad: &mut [f32]) {
    let (hp, wp) = padded(g);
    for ch in 0..g.c {
        for y in 0..g.h {
            let dst = &mut xpad[(ch * hp + y + g.pad) * wp + g.pad..][..g.w];
            dst.copy_from_slice(&img[(ch * g.h + y) * g.w..][..g.w]);
        }
    }
}

/// Every tile of rows × chunk of output-channel vectors, with the tile
/// shape that keeps the accumulators in registers.
#[cfg(target_arch = "x86_64")]
unsafe fn run(g: &Geometry, isa: Isa, xpad: &[f32], dyt: &[f32], o_pad: usize, dwt: &mut [f32]) {
    let lanes = if isa == Isa::Avx512 { 16 } else { 8 };
    let vectors = o_pad / lanes;
    let mut v0 = 0;
    while v0 < vectors {
        let nv = (vectors - v0).min(4);
        // Rows per tile: 24 accumulators on AVX-512 (of 32 registers), 12
        // on AVX2 (of 16, with the dY vectors and the broadcast beside).
        let t = Tile {
            g,
            xpad: xpad.as_ptr(),
            dyt: dyt.as_ptr().add(v0 * lanes),
            o_pad,
            dwt: dwt.as_mut_ptr().add(v0 * lanes),
        };
        match (isa, nv) {
            (Isa::Avx512, 1) => t.rows(|r0, n| unsafe { t.avx512::<24, 1>(r0, n) }),
            (Isa::Avx512, 2) => t.rows(|r0, n| unsafe { t.avx512::<12, 2>(r0, n) }),
            (Isa::Avx512, 3) => t.rows(|r0, n| unsafe { t.avx512::<8, 3>(r0, n) }),
            (Isa::Avx512, _) => t.rows(|r0, n| unsafe { t.avx512::<6, 4>(r0, n) }),
            (Isa::Avx2, 1) => t.rows(|r0, n| unsafe { t.avx2::<12, 1>(r0, n) }),
            (Isa::Avx2, 2) => t.rows(|r0, n| unsafe { t.avx2::<6, 2>(r0, n) }),
            (Isa::Avx2, 3) => t.rows(|r0, n| unsafe { t.avx2::<4, 3>(r0, n) }),
            (Isa::Avx2, _) => t.rows(|r0, n| unsafe { t.avx2::<2, 4>(r0, n) }),
        }
        v0 += nv;
    }
}

/// A tile's body with one ISA's intrinsics (`$lanes` f32 per vector): a
/// macro, so they expand inside each `target_feature` function. Loads the
/// tile's rows of `dwt`, adds every position's products, stores them back.
#[cfg(target_arch = "x86_64")]
macro_rules! tile_body {
    ($t:ident, $r0:ident, $left:ident, $R:ident, $NV:ident, $lanes:expr, $zero:path,
     $load:path, $store:path, $set1:path, $fma:path) => {{
        let n = $R.min($left);
        let base: [usize; $R] = std::array::from_fn(|i| $t.base($r0 + if i < n { i } else { 0 }));
        let mut acc = [[$zero(); $NV]; $R];
        for (i, row) in acc.iter_mut().enumerate().take(n) {
            for (v, a) in row.iter_mut().enumerate() {
                *a = $load($t.dwt.add(($r0 + i) * $t.o_pad + $lanes * v));
            }
        }
        let g = $t.g;
        let (s, (ho, wo), (_, wp)) = (g.stride.max(1), g.out(), padded(g));
        for y in 0..ho {
            for x in 0..wo {
                let off = y * s * wp + x * s;
                let dy = $t.dyt.add((y * wo + x) * $t.o_pad);
                let d: [_; $NV] = std::array::from_fn(|v| $load(dy.add($lanes * v)));
                for (row, &b) in acc.iter_mut().zip(&base) {
                    let xv = $set1(*$t.xpad.add(b + off));
                    for (a, &dv) in row.iter_mut().zip(&d) {
                        *a = $fma(dv, xv, *a);
                    }
                }
            }
        }
        for (i, row) in acc.iter().enumerate().take(n) {
            for (v, &a) in row.iter().enumerate() {
                $store($t.dwt.add(($r0 + i) * $t.o_pad + $lanes * v), a);
            }
        }
        n
    }};
}

/// One chunk of output-channel vectors: `dyt` and `dwt` point at its first
/// lane.
#[cfg(target_arch = "x86_64")]
struct Tile<'a> {
    g: &'a Geometry,
    xpad: *const f32,
    dyt: *const f32,
    o_pad: usize,
    dwt: *mut f32,
}

#[cfg(target_arch = "x86_64")]
impl Tile<'_> {
    /// Calls `tile(first row, rows)` for consecutive tiles of the rows;
    /// `tile` returns how many rows it covers.
    unsafe fn rows(&self, tile: impl Fn(usize, usize) -> usize) {
        let d = row_count(self.g);
        let mut r0 = 0;
        while r0 < d {
            r0 += tile(r0, d - r0);
        }
    }

    /// Offset in the padded image of row `r` = (c, ky, kx) at position 0.
    fn base(&self, r: usize) -> usize {
        let g = self.g;
        let (hp, wp) = padded(g);
        let (c, k) = (r / (g.kh * g.kw), r % (g.kh * g.kw));
        (c * hp + k / g.kw) * wp + k % g.kw
    }

    /// Rows `r0 .. r0 + min(R, left)`; rows past the end repeat row `r0`
    /// (valid reads) and are not stored.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512<const R: usize, const NV: usize>(&self, r0: usize, left: usize) -> usize {
        use std::arch::x86_64::*;
        tile_body!(
            self,
            r0,
            left,
            R,
            NV,
            16,
            _mm512_setzero_ps,
            _mm512_loadu_ps,
            _mm512_storeu_ps,
            _mm512_set1_ps,
            _mm512_fmadd_ps
        )
    }

    /// [`Self::avx512`] in 8-lane vectors.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<const R: usize, const NV: usize>(&self, r0: usize, left: usize) -> usize {
        use std::arch::x86_64::*;
        tile_body!(
            self,
            r0,
            left,
            R,
            NV,
            8,
            _mm256_setzero_ps,
            _mm256_loadu_ps,
            _mm256_storeu_ps,
            _mm256_set1_ps,
            _mm256_fmadd_ps
        )
    }
}
