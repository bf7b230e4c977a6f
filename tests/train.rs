//! Training: gradients against central finite differences through whole small
//! networks (so every op's backward is exercised in context), learning a toy
//! set, checkpoints, divergence. Tolerances: f32 forward, central step 1e-3
//! (larger steps cross ReLU kinks), so a gradient must match to 5 % relative
//! (+1e-4 absolute, the f32 noise of the loss over the step).
mod common;
use common::{cifar_resnet, random_input, Shortcut};
use qscope::model::{load, Graph, Op};
use qscope::train::backward::softmax_cross_entropy;
use qscope::train::tape::{forward, BnMode, FakeQuant};
use qscope::util::Rng;

fn loss(g: &mut Graph, x: &qscope::engine::Tensor, labels: &[u32], bn: BnMode) -> f64 {
    let t = forward(g, x.clone(), bn, None).expect("forward");
    softmax_cross_entropy(t.output(g).expect("out"), labels).0
}

fn check_graph(g: &mut Graph, x: &qscope::engine::Tensor, labels: &[u32], bn: BnMode) {
    let mut t = forward(g, x.clone(), bn, None).expect("forward");
    let (_, d, _) = softmax_cross_entropy(t.output(g).expect("out"), labels);
    let grads = t.backward(g, d).expect("backward");
    let mut rng = Rng::new(3);
    let mut checked = 0;
    for node in 0..g.nodes.len() {
        let Some(pg) = grads[node].clone() else {
            continue;
        };
        for _ in 0..3 {
            let k = rng.below(pg.w.len());
            let get = |g: &mut Graph| -> *mut f32 {
                match &mut g.nodes[node].op {
                    Op::Conv(c) => &mut c.weight[k],
                    Op::Linear(l) => &mut l.weight[k],
                    Op::BatchNorm(b) => &mut b.gamma[k],
                    _ => unreachable!(),
                }
            };
            let eps: f32 = std::env::var("FD_EPS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1e-3);
            // SAFETY (test only): the pointer is into g, used before g is touched again.
            let orig = unsafe { *get(g) };
            unsafe { *get(g) = orig + eps };
            let up = loss(g, x, labels, bn);
            unsafe { *get(g) = orig - eps };
            let down = loss(g, x, labels, bn);
            unsafe { *get(g) = orig };
            let fd = (up - down) / (2.0 * eps as f64);
            let an = pg.w[k] as f64;
            assert!(
                (fd - an).abs() <= 5e-2 * fd.abs().max(an.abs()) + 1e-4,
                "{} [{k}]: analytic {an} vs numeric {fd}",
                g.nodes[node].name
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked}");
}

#[test]
fn gradients_match_finite_differences_in_train_and_frozen_bn_mode() {
    let dir = tempfile::tempdir().expect("tmp");
    for (sc, bn) in [
        (Shortcut::OptionA, BnMode::Train),
        (Shortcut::Downsample, BnMode::Frozen),
    ] {
        let p = dir.path().join("m.safetensors");
        cifar_resnet(1, &[4, 8], 5, sc, 11).write(&p, None);
        let mut g = load(&p).expect("load");
        let x = random_input(6, 3, 12, 2);
        check_graph(&mut g, &x, &[0, 1, 2, 3, 4, 0], bn);
    }
}

#[test]
fn input_gradient_through_maxpool_and_pools_matches() {
    use qscope::train::backward;
    let x = random_input(2, 3, 7, 5);
    let mut rng = Rng::new(8);
    let w: Vec<f32> = (0..4 * 3 * 9).map(|_| rng.normal() as f32).collect();
    // f(x) = Σ r ⊙ maxpool(conv(x)) for a fixed random r: df/dx via the backward ops.
    let geom = qscope::engine::ops::ConvGeom::new(2, 1);
    let f = |x: &qscope::engine::Tensor| -> (f64, qscope::engine::Tensor, qscope::engine::Tensor) {
        let y = qscope::engine::ops::conv2d(x, &w, [4, 3, 3, 3], geom, Default::default())
            .expect("conv");
        let p = qscope::engine::ops::max_pool(&y, 2, 1, 0).expect("pool");
        let r = qscope::engine::Tensor::from_shape_fn(p.dim(), |(a, b, c, d)| {
            ((a * 7 + b * 5 + c * 3 + d) % 5) as f32 - 2.0
        });
        ((&p * &r).sum() as f64, y, r)
    };
    let (_, y, r) = f(&x);
    let dy = backward::max_pool(&y, &r, 2, 1, 0);
    let (dx, _, _) = backward::conv(&x, &w, [4, 3, 3, 3], geom, &dy).expect("bwd");
    for &(b, c, i, j) in &[(0, 0, 0, 0), (1, 2, 3, 4), (0, 1, 6, 6), (1, 0, 2, 5)] {
        let eps = 1e-2;
        let mut xp = x.clone();
        xp[[b, c, i, j]] += eps;
        let mut xm = x.clone();
        xm[[b, c, i, j]] -= eps;
        let fd = (f(&xp).0 - f(&xm).0) / (2.0 * eps as f64);
        let an = dx[[b, c, i, j]] as f64;
        assert!(
            (fd - an).abs() <= 5e-2 * fd.abs().max(an.abs()) + 1e-3,
            "({b},{c},{i},{j}): {an} vs {fd}"
        );
    }
}

#[test]
fn conv_gradients_are_the_same_bits_on_any_thread_count() {
    // dW and db sum over the batch; summed as rayon happened to split the
    // work, they changed from run to run and a seeded fine-tune with them.
    use qscope::train::backward;
    let x = random_input(19, 8, 12, 3);
    let mut rng = Rng::new(4);
    let w: Vec<f32> = (0..16 * 8 * 9).map(|_| rng.normal() as f32).collect();
    for (stride, side) in [(1, 12), (2, 6)] {
        let geom = qscope::engine::ops::ConvGeom::new(stride, 1);
        let dy = random_input(19, 16, side, 5 + stride as u64);
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| backward::conv(&x, &w, [16, 8, 3, 3], geom, &dy).expect("bwd"))
        };
        let (dx1, dw1, db1) = on(1);
        for threads in [2, 3, 5] {
            for _ in 0..3 {
                let (dx, dw, db) = on(threads);
                assert!(
                    common::same_bits(&dw, &dw1) && common::same_bits(&db, &db1),
                    "stride {stride}, {threads} threads: dW/db differ from 1 thread"
                );
                assert!(
                    common::same_bits(dx.iter(), dx1.iter()),
                    "stride {stride}: dX"
                );
            }
        }
    }
}

/// The weight-gradient kernel against dW summed in f64 straight from its
/// definition, `Σ_b Σ_pos dY[b][o][pos]·X[b][c][pos·s + (ky,kx) − pad]`,
/// on shapes that reach every tile and chunk: output channels that fill
/// 1–4 vectors and more (3, 16, 40, 70), rows that end mid-tile, stride 2,
/// no padding, 1×1 (also stride 2) and 5×5 kernels; on AVX-512 and on the
/// AVX2 kernel.
#[test]
fn weight_gradient_kernel_matches_the_definition_in_f64() {
    use qscope::engine::kernels::conv_geometry::Geometry;
    use qscope::engine::kernels::weight_grad::{accumulate_on, Isa};
    let cases = [
        // (c, h, w, o, k, stride, pad)
        (3, 9, 11, 16, 3, 1, 1),
        (5, 8, 8, 3, 3, 1, 1),
        (4, 7, 6, 40, 3, 2, 1),
        (2, 6, 6, 70, 5, 1, 2),
        (6, 5, 5, 17, 1, 1, 0),
        (3, 9, 9, 24, 3, 2, 0),
        // A torchvision downsample shortcut: 1×1, stride 2.
        (8, 8, 8, 33, 1, 2, 0),
    ];
    let mut ran = 0;
    for isa in [Isa::Avx512, Isa::Avx2] {
        for (i, &(c, h, w, o, k, s, pad)) in cases.iter().enumerate() {
            let ho = (h + 2 * pad - k) / s + 1;
            let wo = (w + 2 * pad - k) / s + 1;
            let n = 3;
            let mut rng = Rng::new(60 + i as u64);
            let xs: Vec<f32> = (0..n * c * h * w).map(|_| rng.normal() as f32).collect();
            let dy: Vec<f32> = (0..n * o * ho * wo).map(|_| rng.normal() as f32).collect();
            let g = Geometry {
                c,
                h,
                w,
                o,
                kh: k,
                kw: k,
                pad,
                stride: s,
            };
            assert_eq!(g.out(), (ho, wo));
            // Starts from ones: the kernel adds to what is there.
            let d = c * k * k;
            let mut dw = vec![1f32; o * d];
            if !accumulate_on(isa, &g, &xs, &dy, 0..n, &mut dw) {
                continue;
            }
            ran += 1;
            let mut worst = 0f64;
            for oc in 0..o {
                for r in 0..d {
                    let (ci, ky, kx) = (r / (k * k), r / k % k, r % k);
                    let mut want = 1f64;
                    for b in 0..n {
                        for y in 0..ho {
                            for xo in 0..wo {
                                let (iy, ix) = (y * s + ky, xo * s + kx);
                                if iy < pad || ix < pad || iy - pad >= h || ix - pad >= w {
                                    continue;
                                }
                                want += dy[((b * o + oc) * ho + y) * wo + xo] as f64
                                    * xs[((b * c + ci) * h + iy - pad) * w + ix - pad] as f64;
                            }
                        }
                    }
                    worst = worst.max((dw[oc * d + r] as f64 - want).abs());
                }
            }
            // Sums of up to 3·9·11 products of unit normals in f32.
            assert!(worst < 1e-4, "case {i} ({isa:?}): off by {worst}");
        }
    }
    // Any x86-64 CI machine has AVX2; elsewhere the GEMM path runs.
    if cfg!(target_arch = "x86_64") {
        assert!(ran >= cases.len(), "the AVX2 kernel did not run");
    }
}

fn toy_split(n: usize) -> qscope::data::Split {
    // Two classes: bright left half vs bright right half (32×32 RGB).
    let mut rng = Rng::new(2);
    let mut images = vec![];
    let mut labels = vec![];
    for i in 0..n {
        let label = (i % 2) as u32;
        let mut px = vec![0u8; 32 * 32 * 3];
        for y in 0..32 {
            for x in 0..32 {
                let bright = (x < 16) == (label == 0);
                let v = if bright { 200 } else { 40 } + (rng.normal() * 20.0) as i32;
                for c in 0..3 {
                    px[(y * 32 + x) * 3 + c] = v.clamp(0, 255) as u8;
                }
            }
        }
        images.push(qscope::data::Image {
            width: 32,
            height: 32,
            channels: 3,
            pixels: px,
        });
        labels.push(label);
    }
    qscope::data::Split {
        source: "toy".into(),
        class_names: vec!["left".into(), "right".into()],
        images,
        labels,
    }
}

#[test]
fn tiny_model_learns_a_separable_toy_set_and_checkpoint_reloads_identically() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("m.safetensors");
    cifar_resnet(1, &[4, 8], 2, Shortcut::OptionA, 5).write(&p, None);
    let mut g = load(&p).expect("load");
    let split = toy_split(64);
    let pre = qscope::data::Preprocess::for_model(&g.meta);
    let cfg = qscope::train::TrainConfig {
        epochs: 20.0,
        batch: 16,
        lr: 0.05,
        augment: false,
        ..Default::default()
    };
    let idx: Vec<usize> = (0..64).collect();
    let r = qscope::train::finetune(
        &mut g,
        &split,
        &idx,
        &pre,
        &cfg,
        None,
        &std::sync::atomic::AtomicBool::new(false),
        &mut |_| {},
    )
    .expect("train");
    assert!(
        r.history[0].0 > 0.3 && r.final_loss < 0.1,
        "loss {} → {}",
        r.history[0].0,
        r.final_loss
    );
    let fused = g.fused();
    let logits = qscope::model::forward(&fused, pre.batch(&split, &idx)).expect("fwd");
    let correct = (0..64)
        .filter(|&i| (logits[[i, 1, 0, 0]] > logits[[i, 0, 0, 0]]) == (split.labels[i] == 1))
        .count();
    assert_eq!(correct, 64);
    let ck = dir.path().join("ft.safetensors");
    qscope::model::export::save(&g, &[], &ck).expect("save");
    let back = load(&ck).expect("reload").fused();
    let again = qscope::model::forward(&back, pre.batch(&split, &idx)).expect("fwd");
    assert_eq!(logits, again, "a checkpoint reloads to identical logits");
}

#[test]
fn a_diverging_run_stops_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("m.safetensors");
    cifar_resnet(1, &[4, 8], 2, Shortcut::OptionA, 5).write(&p, None);
    let mut g = load(&p).expect("load");
    let split = toy_split(32);
    let pre = qscope::data::Preprocess::for_model(&g.meta);
    let cfg = qscope::train::TrainConfig {
        epochs: 5.0,
        batch: 8,
        lr: 1e9,
        augment: false,
        ..Default::default()
    };
    let e = qscope::train::finetune(
        &mut g,
        &split,
        &(0..32).collect::<Vec<_>>(),
        &pre,
        &cfg,
        None,
        &std::sync::atomic::AtomicBool::new(false),
        &mut |_| {},
    )
    .expect_err("must diverge");
    let msg = e.to_string();
    assert!(
        msg.contains("lower the learning rate") && msg.contains("Nothing was saved"),
        "{msg}"
    );
}

#[test]
fn fake_quant_forward_equals_rtn_on_the_same_grid_and_ste_masks_outside() {
    // Reference: torch_sym per row, Δ = max|w|/7.5, code = clamp(round(w/Δ), −8, 7),
    // STE mask = 1 where the unclamped code is inside [−8, 7].
    let w = vec![0.9f32, -1.0, 0.33, 0.0, 2.0, -2.0, 0.61, 1.9];
    let (q, mask) = qscope::train::tape::fake_quant_weight(&w, 2, 4);
    for (r, row) in w.chunks(4).enumerate() {
        let delta = row.iter().fold(0f32, |m, v| m.max(v.abs())) / 7.5;
        for (k, &v) in row.iter().enumerate() {
            let code = (v / delta).round_ties_even();
            assert_eq!(q[r * 4 + k], code.clamp(-8.0, 7.0) * delta);
            assert_eq!(mask[r * 4 + k], (-8.0..=7.0).contains(&code));
        }
    }
    let _ = FakeQuant::default();
}

/// The distillation loss of the CoRa search: its gradient against central
/// differences in f64 terms (1e-4 absolute over a 1e-3 step), zero loss and
/// zero gradient when the logits equal the teacher's.
#[test]
fn softmax_kl_gradient_matches_finite_differences() {
    use qscope::train::backward::softmax_kl;
    let mut rng = Rng::new(11);
    let (n, k) = (3, 5);
    let mut logits = qscope::engine::Tensor::zeros((n, k, 1, 1));
    logits
        .iter_mut()
        .for_each(|v| *v = 3.0 * rng.normal() as f32);
    let teacher: Vec<Vec<f32>> = (0..n)
        .map(|_| (0..k).map(|_| 3.0 * rng.normal() as f32).collect())
        .collect();
    let rows: Vec<&[f32]> = teacher.iter().map(|r| r.as_slice()).collect();
    let (loss, d) = softmax_kl(&logits, &rows);
    assert!(loss > 0.0);
    for b in 0..n {
        for j in 0..k {
            let eps = 1e-3f32;
            let mut up = logits.clone();
            up[[b, j, 0, 0]] += eps;
            let mut down = logits.clone();
            down[[b, j, 0, 0]] -= eps;
            let fd = (softmax_kl(&up, &rows).0 - softmax_kl(&down, &rows).0) / (2.0 * eps as f64);
            let g = d[[b, j, 0, 0]] as f64;
            assert!(
                (fd - g).abs() < 1e-4,
                "({b},{j}): analytic {g}, numeric {fd}"
            );
        }
    }
    let mut same = qscope::engine::Tensor::zeros((n, k, 1, 1));
    for b in 0..n {
        for j in 0..k {
            same[[b, j, 0, 0]] = teacher[b][j];
        }
    }
    let (l0, d0) = softmax_kl(&same, &rows);
    assert!(l0.abs() < 1e-9 && d0.iter().all(|v| v.abs() < 1e-7), "{l0}");
}
