//! The geometry both direct kernels (f32 and int8) share: output size, and
//! where taps and input pixels land in the stride×stride phase planes of the
//! padded input. Each kernel adds its own buffer sizes in its own module.
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// One convolution (any stride), as the direct kernels see it.
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
    pub fn out(&self) -> (usize, usize) {
        let s = self.stride.max(1);
        (
            (self.h + 2 * self.pad - self.kh) / s + 1,
            (self.w + 2 * self.pad - self.kw) / s + 1,
        )
    }
    /// One phase plane: the padded input subsampled by the stride.
    pub fn phase(&self) -> (usize, usize) {
        let s = self.stride.max(1);
        (
            (self.h + 2 * self.pad).div_ceil(s),
            (self.w + 2 * self.pad).div_ceil(s),
        )
    }
    /// Elements per input unit (a channel for f32, an interleaved group of
    /// four for int8): `stride²` phase planes.
    pub fn unit_len(&self) -> usize {
        let (hq, wq) = self.phase();
        self.stride.max(1).pow(2) * hq * wq
    }
    /// Offset, within a unit, of padded row `py` at column phase 0.
    pub fn row_base(&self, py: usize) -> usize {
        let s = self.stride.max(1);
        let (hq, wq) = self.phase();
        (py % s) * s * hq * wq + (py / s) * wq
    }
    /// Offset of padded column `px` from its row's base.
    pub fn col_offset(&self, px: usize) -> usize {
        let s = self.stride.max(1);
        let (hq, wq) = self.phase();
        (px % s) * hq * wq + px / s
    }
}

/// Offset of every tap (unit, ky, kx) for `units` input units: tap (ky, kx)
/// at output position p reads `offset + p`. Cached per thread and geometry:
/// recomputing them on every call took 2 % of a batch-1 ResNet-20 pass.
pub fn tap_offsets(g: &Geometry, units: usize) -> Arc<[usize]> {
    type Key = (usize, usize, usize, usize, usize, usize, usize);
    thread_local! {
        static CACHE: RefCell<HashMap<Key, Arc<[usize]>>> = RefCell::new(HashMap::new());
    }
    let key = (g.h, g.w, g.kh, g.kw, g.pad, g.stride, units);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(v) = c.get(&key) {
            return v.clone();
        }
        // A model has a handful of geometries; bound the cache anyway.
        if c.len() >= 256 {
            c.clear();
        }
        let v: Arc<[usize]> = compute_tap_offsets(g, units).into();
        c.insert(key, v.clone());
        v
    })
}

fn compute_tap_offsets(g: &Geometry, units: usize) -> Vec<usize> {
    let ul = g.unit_len();
    let mut v = Vec::with_capacity(units * g.kh * g.kw);
    for u in 0..units {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                v.push(u * ul + g.row_base(ky) + g.col_offset(kx));
            }
        }
    }
    v
}

/// Elements `0, 2, 4, …` of `src` to `even` and `1, 3, …` to `odd`: one
/// input row split into a stride-2 conv's two column phases, 32 elements
/// per step (a scalar strided copy took 5 % of a ResNet-20 pass). Both
/// kernels' 32-bit elements (f32 values, packed int8 words) go through it.
/// `even` must hold ⌈n/2⌉ elements and `odd` ⌊n/2⌋, not overlapping `src`.
///
/// # Safety
/// AVX-512F must be available, and `even`/`odd` valid for those writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn deinterleave2_avx512<T: Copy>(src: &[T], even: *mut T, odd: *mut T) {
    use std::arch::x86_64::*;
    assert_eq!(std::mem::size_of::<T>(), 4, "32-bit elements only");
    let n = src.len();
    let p = src.as_ptr() as *const f32;
    let (e, o) = (even as *mut f32, odd as *mut f32);
    let ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let mut k = 0;
    while k + 32 <= n {
        let (a, b) = (_mm512_loadu_ps(p.add(k)), _mm512_loadu_ps(p.add(k + 16)));
        _mm512_storeu_ps(e.add(k / 2), _mm512_permutex2var_ps(a, ie, b));
        _mm512_storeu_ps(o.add(k / 2), _mm512_permutex2var_ps(a, io, b));
        k += 32;
    }
    while k < n {
        let dst = if k % 2 == 0 { even } else { odd };
        *dst.add(k / 2) = src[k];
        k += 1;
    }
}
