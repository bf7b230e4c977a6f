//! f32 matrix multiply. The `gemm` crate picks AVX-512/AVX2/FMA micro-kernels
//! at run time (never at build time), which measured 70–88 GFLOP/s per core on
//! ResNet-20's shapes against 28–58 for ndarray's matrixmultiply.

/// A strided read-only matrix view: element (r, c) is `data[r*row_stride + c*col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major `rows × cols`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }
    /// The transpose of a row-major `cols × rows` matrix, without copying.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            row_stride: 1,
            col_stride: rows,
        }
    }
    /// The transpose, without copying.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
    fn max_index(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            return 0;
        }
        (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
    }
}

/// `c = a·b` (or `c += a·b` when `accumulate`), `c` row-major `a.rows × b.cols`.
/// `threads > 1` lets the kernel split the product itself (used when there are
/// fewer images than cores); otherwise it runs on the calling thread.
pub fn sgemm(a: MatRef, b: MatRef, c: &mut [f32], accumulate: bool, threads: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "sgemm: inner dimensions differ");
    assert!(c.len() >= m * n, "sgemm: output too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    assert!(a.max_index() < a.data.len(), "sgemm: lhs out of bounds");
    assert!(b.max_index() < b.data.len(), "sgemm: rhs out of bounds");
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above prove every index the kernel touches lies inside
    // `a.data`, `b.data` and `c` (m*n elements, row-major); the slices are
    // borrowed for the whole call so nothing aliases `c`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `sgemm` for products with far fewer rows than columns (a linear layer
/// on a few images): computed as `cᵀ = bᵀ·aᵀ` into a small buffer, then
/// transposed into `c`. The `gemm` crate ran these 2–6× slower the other
/// way round (4096 outputs × 25 088 inputs: 8 images on 1 thread 223 →
/// 49 ms, 64 images on 2 threads 175 → 75 ms); asked to write `cᵀ` straight
/// into `c`'s column order it turned the product back and was as slow.
pub fn sgemm_wide(a: MatRef, b: MatRef, c: &mut [f32], accumulate: bool, threads: usize) {
    let (m, n) = (a.rows, b.cols);
    assert!(c.len() >= m * n, "sgemm: output too small");
    let mut t = vec![0f32; m * n];
    sgemm(b.t(), a.t(), &mut t, false, threads);
    for (i, row) in c[..m * n].chunks_exact_mut(n.max(1)).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            let x = t[j * m + i];
            *v = if accumulate { *v + x } else { x };
        }
    }
}

/// Portable reference used by the tests (and nowhere hot).
pub fn sgemm_reference(a: MatRef, b: MatRef, c: &mut [f32], accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                s += a.data[i * a.row_stride + p * a.col_stride] as f64
                    * b.data[p * b.row_stride + j * b.col_stride] as f64;
            }
            let dst = &mut c[i * n + j];
            *dst = if accumulate {
                *dst + s as f32
            } else {
                s as f32
            };
        }
    }
}

/// `c[i·ldc + j] += alpha · Σ_t a[i·lda + t] · b[t·ldb + j]` for `i < m`,
/// `j < n`, `t < k` (row-major views with leading dimensions), in f64 on
/// the calling thread: GPTQ's lazy block update, run per block of rows by
/// its caller, so each row's sums do not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub fn dgemm_acc(
    (m, n, k): (usize, usize, usize),
    a: &[f64],
    lda: usize,
    b: &[f64],
    ldb: usize,
    c: &mut [f64],
    ldc: usize,
    alpha: f64,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(
        lda >= k && ldb >= n && ldc >= n,
        "dgemm: leading dimension too small"
    );
    assert!((m - 1) * lda + k <= a.len(), "dgemm: lhs out of bounds");
    assert!((k - 1) * ldb + n <= b.len(), "dgemm: rhs out of bounds");
    assert!((m - 1) * ldc + n <= c.len(), "dgemm: output out of bounds");
    // SAFETY: the asserts above bound every index the kernel touches inside
    // `a`, `b` and `c`; `c` is borrowed mutably for the call, so nothing
    // aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            true,
            a.as_ptr(),
            1,
            lda as isize,
            b.as_ptr(),
            1,
            ldb as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::Rng;

    fn rand_vec(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.normal() as f32).collect()
    }

    #[test]
    fn matches_reference_for_odd_shapes_and_strides() {
        let mut rng = Rng::new(7);
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 27, 1024),
            (17, 5, 9),
            (64, 576, 64),
            (10, 64, 3),
        ] {
            let a = rand_vec(&mut rng, m * k);
            let b = rand_vec(&mut rng, n * k);
            // `sgemm_wide` computes the same product the other way round.
            type Product = fn(MatRef, MatRef, &mut [f32], bool, usize);
            let products: [(Product, &str); 2] = [(sgemm, "sgemm"), (sgemm_wide, "sgemm_wide")];
            for ((product, name), threads, accumulate) in products
                .into_iter()
                .flat_map(|p| [(1, false), (1, true), (2, true)].map(|(t, acc)| (p, t, acc)))
            {
                let mut c = vec![0.5f32; m * n];
                let mut r = c.clone();
                // b used transposed: exercises non-unit strides.
                product(
                    MatRef::row_major(&a, m, k),
                    MatRef::transposed(&b, k, n),
                    &mut c,
                    accumulate,
                    threads,
                );
                sgemm_reference(
                    MatRef::row_major(&a, m, k),
                    MatRef::transposed(&b, k, n),
                    &mut r,
                    accumulate,
                );
                for (x, y) in c.iter().zip(&r) {
                    assert!(
                        (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                        "{name} {m}x{k}x{n} accumulate {accumulate}: {x} vs {y}"
                    );
                }
            }
        }
    }

    /// `dgemm_acc` on sub-matrices with leading dimensions larger than
    /// their widths (GPTQ's column blocks), against plain f64 loops.
    #[test]
    fn dgemm_acc_matches_loops_on_strided_views() {
        let mut rng = Rng::new(9);
        for &(m, n, k) in &[(1, 1, 1), (5, 17, 3), (32, 200, 64), (7, 9, 128)] {
            let (lda, ldb, ldc) = (k + 3, n + 5, n + 2);
            let a: Vec<f64> = (0..m * lda).map(|_| rng.normal()).collect();
            let b: Vec<f64> = (0..k * ldb).map(|_| rng.normal()).collect();
            let mut c: Vec<f64> = (0..m * ldc).map(|_| rng.normal()).collect();
            let mut want = c.clone();
            for i in 0..m {
                for j in 0..n {
                    let s: f64 = (0..k).map(|t| a[i * lda + t] * b[t * ldb + j]).sum();
                    want[i * ldc + j] -= s;
                }
            }
            dgemm_acc((m, n, k), &a, lda, &b, ldb, &mut c, ldc, -1.0);
            for (x, y) in c.iter().zip(&want) {
                assert!(
                    (x - y).abs() <= 1e-12 * (1.0 + y.abs()) * k as f64,
                    "{m}x{n}x{k}: {x} vs {y}"
                );
            }
        }
    }
}
