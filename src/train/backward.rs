//! The backward pass of every op, as pure functions of saved forward values.
//! Each is checked against finite differences in `tests/train.rs`.
use crate::engine::kernels::{sgemm, weight_grad, MatRef};
use crate::engine::ops::conv::col2im;
use crate::engine::ops::{conv_output_size, im2col, ConvGeom};
use crate::engine::tensor::contiguous;
use crate::engine::Tensor;
use rayon::prelude::*;

/// Conv backward (groups = 1): `dX` by col2im of `Wᵀ·dY`, `dW = Σ_b dY·colᵀ`, `db = Σ dY`.
pub fn conv(
    x: &Tensor,
    w: &[f32],
    shape: [usize; 4],
    geom: ConvGeom,
    dy: &Tensor,
) -> Result<(Tensor, Vec<f32>, Vec<f32>), String> {
    if geom.groups > 1 {
        return Err("training grouped convolutions is not supported".into());
    }
    let (n, c, h, wd) = x.dim();
    let [o, cin, kh, kw] = shape;
    if cin != c {
        return Err(format!("weight expects {cin} channels, input has {c}"));
    }
    let s = geom.stride.max(1);
    let ho = conv_output_size(h, kh, s, geom.pad).ok_or("kernel larger than input")?;
    let wo = conv_output_size(wd, kw, s, geom.pad).ok_or("kernel larger than input")?;
    if dy.dim() != (n, o, ho, wo) {
        return Err(format!(
            "gradient {:?} does not match output {:?}",
            dy.dim(),
            (n, o, ho, wo)
        ));
    }
    let d = c * kh * kw;
    let p = ho * wo;
    let xs = contiguous(x);
    let dys = contiguous(dy);
    // Stride 1: dX is the convolution of dY with the transposed, flipped kernel
    // (padding k−1−p), which runs on the fast forward kernels; only dW needs im2col.
    let via_conv = s == 1 && kh == kw && geom.pad < kh;
    let mut dx = if via_conv {
        let mut wt = vec![0f32; w.len()];
        for oc in 0..o {
            for ci in 0..c {
                for ky in 0..kh {
                    for kx in 0..kw {
                        wt[((ci * o + oc) * kh + (kh - 1 - ky)) * kw + (kw - 1 - kx)] =
                            w[((oc * c + ci) * kh + ky) * kw + kx];
                    }
                }
            }
        }
        crate::engine::ops::conv2d(
            dy,
            &wt,
            [c, o, kh, kw],
            ConvGeom::new(1, kh - 1 - geom.pad),
            Default::default(),
        )?
    } else {
        Tensor::zeros((n, c, h, wd))
    };
    let dxs = dx.as_slice_mut().ok_or("fresh tensor")?;
    if !via_conv {
        // Per image and independent: in parallel, in any order.
        dxs.par_chunks_mut(c * h * wd).enumerate().for_each_init(
            || vec![0f32; d * p],
            |dcol, (b, dxi)| {
                let dyi = &dys[b * o * p..(b + 1) * o * p];
                sgemm(
                    MatRef::transposed(w, d, o),
                    MatRef::row_major(dyi, o, p),
                    dcol,
                    false,
                    1,
                );
                col2im(dcol, (h, wd), (0, c), (kh, kw), s, geom.pad, (ho, wo), dxi);
            },
        );
    }
    // dW and db sum over the batch: groups of GROUP images in f32, the
    // groups added in order (`ordered_sum`), so training is reproducible.
    const GROUP: usize = 4;
    let gg = crate::engine::kernels::conv_geometry::Geometry {
        c,
        h,
        w: wd,
        o,
        kh,
        kw,
        pad: geom.pad,
        stride: s,
    };
    let sums = crate::ordered::ordered_sum(n.div_ceil(GROUP), o * d + o, |group| {
        let mut acc = vec![0f32; o * d + o];
        let (dw, db) = acc.split_at_mut(o * d);
        let images = GROUP * group..(GROUP * group + GROUP).min(n);
        for b in images.clone() {
            for (oc, row) in dys[b * o * p..(b + 1) * o * p].chunks(p).enumerate() {
                db[oc] += row.iter().sum::<f32>();
            }
        }
        // The SIMD kernel where there is one (see `weight_grad`), else
        // im2col and a GEMM per image.
        if weight_grad::accumulate(&gg, &xs, &dys, images.clone(), dw) {
            return acc;
        }
        let mut col = vec![0f32; d * p];
        for b in images {
            let xi = &xs[b * c * h * wd..(b + 1) * c * h * wd];
            let dyi = &dys[b * o * p..(b + 1) * o * p];
            im2col(
                xi,
                (h, wd),
                (0, c),
                (kh, kw),
                s,
                geom.pad,
                (0, ho, wo),
                &mut col,
            );
            sgemm(
                MatRef::row_major(dyi, o, p),
                MatRef::transposed(&col, p, d),
                dw,
                true,
                1,
            );
        }
        acc
    });
    let dw: Vec<f32> = sums[..o * d].iter().map(|&v| v as f32).collect();
    let db: Vec<f32> = sums[o * d..].iter().map(|&v| v as f32).collect();
    Ok((dx, dw, db))
}

/// Linear backward: `dX = dY·W`, `dW = dYᵀ·X`, `db = Σ dY`.
pub fn linear(x: &Tensor, w: &[f32], out: usize, dy: &Tensor) -> (Tensor, Vec<f32>, Vec<f32>) {
    let (n, c, h, wd) = x.dim();
    let inf = c * h * wd;
    let xs = contiguous(x);
    let dys = contiguous(dy);
    let mut dx = vec![0f32; n * inf];
    sgemm(
        MatRef::row_major(&dys, n, out),
        MatRef::row_major(w, out, inf),
        &mut dx,
        false,
        1,
    );
    let mut dw = vec![0f32; out * inf];
    sgemm(
        MatRef::transposed(&dys, out, n),
        MatRef::row_major(&xs, n, inf),
        &mut dw,
        false,
        1,
    );
    let mut db = vec![0f32; out];
    for row in dys.chunks(out) {
        db.iter_mut().zip(row).for_each(|(a, b)| *a += b);
    }
    (
        Tensor::from_shape_vec((n, c, h, wd), dx).unwrap_or_else(|_| Tensor::zeros((n, c, h, wd))),
        dw,
        db,
    )
}

/// Batch statistics: `(x̂, 1/σ, mean, unbiased variance)` per channel.
/// Loops run over contiguous (image, channel) planes of the NCHW tensor.
pub fn bn_normalise(x: &Tensor, eps: f32) -> (Tensor, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, c, h, w) = x.dim();
    let plane = h * w;
    let m = (n * plane) as f64;
    let xs = contiguous(x);
    let mut sum = vec![0f64; c];
    let mut sq = vec![0f64; c];
    for b in 0..n {
        for ch in 0..c {
            let p = &xs[(b * c + ch) * plane..][..plane];
            let (s, q) = p.iter().fold((0f32, 0f32), |(s, q), &v| (s + v, q + v * v));
            sum[ch] += s as f64;
            sq[ch] += q as f64;
        }
    }
    let means: Vec<f64> = sum.iter().map(|s| s / m).collect();
    let vars: Vec<f64> = sq
        .iter()
        .zip(&means)
        .map(|(q, mu)| (q / m - mu * mu).max(0.0))
        .collect();
    let inv: Vec<f32> = vars
        .iter()
        .map(|v| (1.0 / (v + eps as f64).sqrt()) as f32)
        .collect();
    let mut out = vec![0f32; xs.len()];
    out.par_chunks_mut(c * plane)
        .zip(xs.par_chunks(c * plane))
        .for_each(|(o, xi)| {
            for ch in 0..c {
                let (mu, is) = (means[ch] as f32, inv[ch]);
                for (d, &v) in o[ch * plane..(ch + 1) * plane]
                    .iter_mut()
                    .zip(&xi[ch * plane..(ch + 1) * plane])
                {
                    *d = (v - mu) * is;
                }
            }
        });
    let xhat =
        Tensor::from_shape_vec((n, c, h, w), out).unwrap_or_else(|_| Tensor::zeros((n, c, h, w)));
    let unbiased = vars
        .iter()
        .map(|v| (v * m / (m - 1.0).max(1.0)) as f32)
        .collect();
    (
        xhat,
        inv,
        means.iter().map(|&v| v as f32).collect(),
        unbiased,
    )
}

/// BatchNorm backward. Training mode differentiates through the batch
/// statistics; frozen (eval) mode is a per-channel affine map.
pub fn batchnorm(
    dy: &Tensor,
    xhat: &Tensor,
    inv_std: &[f32],
    gamma: &[f32],
    train: bool,
) -> (Tensor, Vec<f32>, Vec<f32>) {
    let (n, c, h, w) = dy.dim();
    let plane = h * w;
    let m = (n * plane) as f32;
    let g = contiguous(dy);
    let xh = contiguous(xhat);
    let mut dgamma = vec![0f64; c];
    let mut dbeta = vec![0f64; c];
    for b in 0..n {
        for ch in 0..c {
            let at = (b * c + ch) * plane;
            let (sb, sg) = g[at..at + plane]
                .iter()
                .zip(&xh[at..at + plane])
                .fold((0f32, 0f32), |(sb, sg), (&a, &x)| (sb + a, sg + a * x));
            dbeta[ch] += sb as f64;
            dgamma[ch] += sg as f64;
        }
    }
    let dgamma: Vec<f32> = dgamma.iter().map(|&v| v as f32).collect();
    let dbeta: Vec<f32> = dbeta.iter().map(|&v| v as f32).collect();
    let mut out = vec![0f32; g.len()];
    out.par_chunks_mut(c * plane)
        .enumerate()
        .for_each(|(b, o)| {
            for ch in 0..c {
                let at = (b * c + ch) * plane;
                let k = gamma[ch] * inv_std[ch];
                let (sb, sg) = (dbeta[ch] / m, dgamma[ch] / m);
                let dst = &mut o[ch * plane..(ch + 1) * plane];
                if train {
                    for ((d, &a), &x) in dst
                        .iter_mut()
                        .zip(&g[at..at + plane])
                        .zip(&xh[at..at + plane])
                    {
                        *d = k * (a - sb - x * sg);
                    }
                } else {
                    for (d, &a) in dst.iter_mut().zip(&g[at..at + plane]) {
                        *d = k * a;
                    }
                }
            }
        });
    (
        Tensor::from_shape_vec((n, c, h, w), out).unwrap_or_else(|_| Tensor::zeros((n, c, h, w))),
        dgamma,
        dbeta,
    )
}

pub fn max_pool(x: &Tensor, dy: &Tensor, k: usize, s: usize, p: usize) -> Tensor {
    let (n, c, h, w) = x.dim();
    let (_, _, ho, wo) = dy.dim();
    let mut dx = Tensor::zeros((n, c, h, w));
    for b in 0..n {
        for ch in 0..c {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut best = (f32::NEG_INFINITY, None);
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * s + ky) as isize - p as isize;
                            let ix = (ox * s + kx) as isize - p as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                let v = x[[b, ch, iy as usize, ix as usize]];
                                if v > best.0 {
                                    best = (v, Some((iy as usize, ix as usize)));
                                }
                            }
                        }
                    }
                    if let Some((iy, ix)) = best.1 {
                        dx[[b, ch, iy, ix]] += dy[[b, ch, oy, ox]];
                    }
                }
            }
        }
    }
    dx
}

pub fn avg_pool(
    dim: (usize, usize, usize, usize),
    dy: &Tensor,
    k: usize,
    s: usize,
    p: usize,
) -> Tensor {
    let (n, c, h, w) = dim;
    let (_, _, ho, wo) = dy.dim();
    let mut dx = Tensor::zeros(dim);
    let area = (k * k) as f32;
    for b in 0..n {
        for ch in 0..c {
            for oy in 0..ho {
                for ox in 0..wo {
                    let g = dy[[b, ch, oy, ox]] / area;
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * s + ky) as isize - p as isize;
                            let ix = (ox * s + kx) as isize - p as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                dx[[b, ch, iy as usize, ix as usize]] += g;
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

/// Option-A shortcut backward: the kept pixels of the un-padded channels.
pub fn shortcut_pad(
    dim: (usize, usize, usize, usize),
    dy: &Tensor,
    stride: usize,
    pad_before: usize,
) -> Tensor {
    let (n, c, h, w) = dim;
    let mut dx = Tensor::zeros((n, c, h, w));
    let src = dy.slice(ndarray::s![.., pad_before..pad_before + c, .., ..]);
    dx.slice_mut(ndarray::s![.., .., ..;stride as isize, ..;stride as isize])
        .assign(&src);
    dx
}

/// Mean softmax cross-entropy over the batch: `(loss, dlogits, correct)`.
/// Mean `KL(softmax(teacher) ‖ softmax(logits))` over the batch and its
/// gradient w.r.t. `logits`, `(p − p_teacher)/n`.
pub fn softmax_kl(logits: &Tensor, teacher: &[&[f32]]) -> (f64, Tensor) {
    let (n, k, _, _) = logits.dim();
    let softmax = |row: &mut dyn Iterator<Item = f32>| -> Vec<f64> {
        let v: Vec<f64> = row.map(f64::from).collect();
        let mx = v.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x));
        let e: Vec<f64> = v.iter().map(|&x| (x - mx).exp()).collect();
        let z: f64 = e.iter().sum();
        e.into_iter().map(|x| x / z).collect()
    };
    let mut d = Tensor::zeros((n, k, 1, 1));
    let mut loss = 0f64;
    for b in 0..n {
        let p = softmax(&mut (0..k).map(|j| logits[[b, j, 0, 0]]));
        let q = softmax(&mut teacher[b].iter().copied());
        for j in 0..k {
            if q[j] > 0.0 {
                loss += q[j] * (q[j].ln() - p[j].max(1e-300).ln());
            }
            d[[b, j, 0, 0]] = ((p[j] - q[j]) / n as f64) as f32;
        }
    }
    (loss / n as f64, d)
}

pub fn softmax_cross_entropy(logits: &Tensor, labels: &[u32]) -> (f64, Tensor, usize) {
    let (n, k, _, _) = logits.dim();
    let mut d = Tensor::zeros((n, k, 1, 1));
    let mut loss = 0f64;
    let mut correct = 0;
    for b in 0..n {
        let row: Vec<f32> = (0..k).map(|j| logits[[b, j, 0, 0]]).collect();
        let mx = row.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
        let exps: Vec<f64> = row.iter().map(|&v| ((v - mx) as f64).exp()).collect();
        let z: f64 = exps.iter().sum();
        let y = labels[b] as usize;
        loss += -(exps[y] / z).ln();
        let argmax = row
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |a, (j, &v)| if v > a.1 { (j, v) } else { a },
            )
            .0;
        correct += usize::from(argmax == y);
        for j in 0..k {
            d[[b, j, 0, 0]] = ((exps[j] / z - f64::from(u8::from(j == y))) / n as f64) as f32;
        }
    }
    (loss / n as f64, d, correct)
}
