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
