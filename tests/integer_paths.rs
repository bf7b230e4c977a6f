//! The real integer paths against the f32 simulation of the same model, on the
//! bundled pretrained ResNet-20 and 300 bundled test images.
//!
//! W8A8: the int8 kernel sums exactly, the simulation in f32, so a few
//! activations that sit within f32 rounding of a quantization boundary round
//! the other way and the difference propagates a step at a time (each layer
//! alone agrees to 2e-6, tests/int8.rs). Measured: max logit difference
//! 1.3 % of the logit range, 1 of 300 top-1 predictions changed (a near tie);
//! bounds 3 % and ≤ 3 (1 %). On the full test set: 81.06 % vs 81.07 %.
//! Weight-only 4-bit: no activation rounding, so only f32 summation order
//! differs: 1e-5 of the range, identical predictions.
mod common;
use qscope::data::{DatasetRoot, Preprocess, SplitKind};
use qscope::engine::Tensor;
use qscope::eval::accuracy::eval_indices;
use qscope::model::exec::{path_summary, set_integer_paths};
use qscope::model::{forward, Graph};
use qscope::quant::{quantize_model, Method, QuantConfig};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

/// The integer-path and AVX2 switches are process-wide: one test at a time.
static SWITCHES: Mutex<()> = Mutex::new(());

fn sample() -> (Graph, Tensor, Tensor) {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_models");
    let g = qscope::model::load(&base.join("resnet20.safetensors")).expect("load");
    let split = DatasetRoot::open(&base.join("cifar10"))
        .expect("open")
        .split(SplitKind::Test)
        .expect("split");
    let pre = Preprocess::for_model(&g.meta);
    let idx = eval_indices(&split, &(0..10).collect::<Vec<_>>(), None);
    let calib: Vec<usize> = idx.iter().copied().step_by(10).take(64).collect();
    let eval: Vec<usize> = idx.iter().copied().skip(1).step_by(3).take(300).collect();
    (g, pre.batch(&split, &calib), pre.batch(&split, &eval))
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b })
}

/// (max |Δ| / range of `b`, number of changed top-1 predictions).
fn compare(a: &Tensor, b: &Tensor) -> (f32, usize) {
    let (n, k, _, _) = a.dim();
    let (av, bv): (Vec<f32>, Vec<f32>) = (a.iter().copied().collect(), b.iter().copied().collect());
    let range = bv.iter().fold(0f32, |m, v| m.max(v.abs()));
    let maxd = av
        .iter()
        .zip(&bv)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let changed = (0..n)
        .filter(|&i| argmax(&av[i * k..(i + 1) * k]) != argmax(&bv[i * k..(i + 1) * k]))
        .count();
    (maxd / range, changed)
}

/// `g` quantized by `method` at `bits`, calibrated on `calib`.
fn quantized(g: &Graph, calib: &Tensor, method: Method, bits: u8) -> qscope::quant::QuantOutcome {
    quantize_model(
        g,
        calib,
        &QuantConfig::new(method, bits),
        &AtomicBool::new(false),
        &mut |_, _, _| {},
    )
    .expect("quantize")
}

/// 4-bit RTN of `g`, calibrated on `calib`.
fn rtn4(g: &Graph, calib: &Tensor) -> qscope::quant::QuantOutcome {
    quantized(g, calib, Method::Rtn, 4)
}

fn both_paths(g: &Graph, x: &Tensor) -> (Tensor, Tensor) {
    set_integer_paths(true);
    let real = forward(g, x.clone()).expect("integer path");
    set_integer_paths(false);
    let sim = forward(g, x.clone()).expect("simulation");
    set_integer_paths(true);
    (real, sim)
}

#[test]
fn w8a8_int8_kernel_matches_the_simulation() {
    let _lock = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    let (g, calib, x) = sample();
    let q = quantized(&g, &calib, Method::SmoothQuant, 8);
    let summary = path_summary(&q.graph);
    if !summary.contains("int8") {
        eprintln!("no int8 kernel on this CPU ({summary}); comparing the simulation with itself");
    }
    let (real, sim) = both_paths(&q.graph, &x);
    let (d, changed) = compare(&real, &sim);
    eprintln!("w8a8: max logit difference {d:e} of range, {changed} changed predictions");
    assert!(d < 0.03, "logits differ by {d} of their range");
    assert!(changed <= 3, "{changed} of 300 predictions changed");

    // A layer whose weights leave the int8 grid (here: nudged) is not
    // silently requantized: it runs as the simulation.
    let mut g = q.graph.clone();
    let first = g
        .nodes
        .iter()
        .position(|n| matches!(n.op, qscope::model::Op::Conv(_)))
        .expect("a conv");
    if let Some(w) = g.weight_mut(first) {
        w[0] += 1e-3;
    }
    g.refold();
    let summary = path_summary(&g);
    if summary.contains("int8") {
        assert!(
            summary.starts_with("w8a8 simulated in fp32 ×1,"),
            "{summary}"
        );
    }
}

#[test]
fn w4_weight_only_kernel_matches_the_f32_weights() {
    let _lock = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    let (g, calib, x) = sample();
    let q = rtn4(&g, &calib);
    let summary = path_summary(&q.graph);
    if qscope::engine::kernels::direct_conv::available() {
        assert!(
            summary.contains("w4"),
            "4-bit RTN convs should run on the w4 kernel: {summary}"
        );
    }
    let (real, sim) = both_paths(&q.graph, &x);
    let (d, changed) = compare(&real, &sim);
    eprintln!("w4: max logit difference {d:e} of range, {changed} changed predictions");
    assert!(d < 1e-4, "logits differ by {d} of their range");
    assert_eq!(changed, 0);
    single_images_equal_the_batch(&q.graph, &x, 6);
}

/// A single image (per-part, chunked 4-bit transforms; block-by-block
/// decoding in the direct kernel) gives the batch's logits (layer-wide
/// transform and decode) bit for bit, on 1 and 2 threads.
fn single_images_equal_the_batch(g: &Graph, x: &Tensor, n: usize) {
    let batch = forward(g, x.slice(ndarray::s![..n, .., .., ..]).to_owned()).expect("batch");
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        for i in 0..n {
            let one = x.slice(ndarray::s![i..i + 1, .., .., ..]).to_owned();
            let got = pool.install(|| forward(g, one)).expect("one image");
            let want = batch.slice(ndarray::s![i..i + 1, .., .., ..]);
            assert!(
                got.iter()
                    .zip(want.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "image {i} on {threads} thread(s) differs from the batch"
            );
        }
    }
}

/// Widths that are not multiples of the kernels' 8- and 16-channel blocks,
/// an odd input-channel count in every 3×3 layer (the transform's half-full
/// last channel pair) and torchvision-style 1×1 shortcuts, 4-bit RTN: the
/// integer paths against the simulation, and single images against the batch.
/// At 3 bits the same, with every layer's codes held 3-bit packed.
#[test]
fn w4_on_odd_widths_matches_the_simulation() {
    let _lock = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("odd.safetensors");
    common::cifar_resnet(1, &[5, 13, 19], 10, common::Shortcut::Downsample, 7).write(&p, None);
    let g = qscope::model::load(&p).expect("load");
    let calib = common::random_input(32, 3, 32, 8);
    let x = common::random_input(20, 3, 32, 9);
    for bits in [4u8, 3] {
        let q = quantized(&g, &calib, Method::Rtn, bits);
        if qscope::engine::kernels::direct_conv::available() {
            let summary = path_summary(&q.graph);
            let others = ["w3", "w4"].iter().filter(|w| **w != format!("w{bits}"));
            assert!(summary.contains(&format!("w{bits}")), "{summary}");
            assert!(
                others.into_iter().all(|w| !summary.contains(w)),
                "{summary}"
            );
        }
        let (real, sim) = both_paths(&q.graph, &x);
        let (d, changed) = compare(&real, &sim);
        assert!(d < 1e-4, "{bits} bits: logits differ by {d} of their range");
        assert_eq!(changed, 0);
        single_images_equal_the_batch(&q.graph, &x, 4);
    }
}

/// What an AVX2-only CPU runs: the integer Winograd kernel on 3×3
/// stride-1 layers and, on the others (or everywhere with Winograd off),
/// 8-bit weights on the 16-bit-pair kernel and 7-bit ("reduce range")
/// weights on `vpmaddubsw`, each against the simulation with the same
/// bounds as the VNNI path.
#[test]
fn avx2_int8_kernels_match_the_simulation() {
    use qscope::engine::kernels::direct_conv::force_avx2;
    use qscope::engine::kernels::int8_conv::Kernel;
    use qscope::engine::ops::conv::set_winograd;
    if !Kernel::Avx2Pairs.supported() {
        eprintln!("skipping: no AVX2");
        return;
    }
    let _lock = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    let (g, calib, x) = sample();
    // Lowering picks the kernel, so the switch is on before the first forward.
    force_avx2(true);
    for (bits, kernel, winograd) in [
        (8, "int8 avx2-madd16", true),
        (8, "int8 avx2-madd16", false),
        (7, "int8 avx2-maddubs", false),
    ] {
        set_winograd(winograd);
        let q = quantized(&g, &calib, Method::SmoothQuant, bits);
        let summary = path_summary(&q.graph);
        let (real, sim) = both_paths(&q.graph, &x);
        let (d, changed) = compare(&real, &sim);
        eprintln!("{bits}-bit on {summary}: max logit difference {d:e}, {changed} changed");
        // The same model on the direct kernels only: the same logits, bit
        // for bit (the Winograd kernel ends at the same accumulators).
        let direct_only = winograd.then(|| {
            set_winograd(false);
            forward(&q.graph, x.clone()).expect("direct int8")
        });
        force_avx2(false);
        set_winograd(true);
        if let Some(direct) = direct_only {
            assert!(
                common::same_bits(&real, &direct),
                "winograd and direct logits differ"
            );
        }
        let want = if winograd {
            // The 3×3 stride-1 layers, then the stride-2 ones.
            format!("int8 winograd avx2-madd16 ×17, {kernel} ×2")
        } else {
            format!("{kernel} ×")
        };
        assert!(summary.starts_with(&want), "{summary}");
        assert!(d < 0.03, "{bits}-bit: logits differ by {d} of their range");
        assert!(
            changed <= 3,
            "{bits}-bit: {changed} of 300 predictions changed"
        );
        force_avx2(true);
    }
    force_avx2(false);
}

/// A miniature torchvision bottleneck ResNet (1×1 stride-1 convs, which
/// decode their 4-bit codes for the GEMM), 32×32 input, 10 classes.
fn bottleneck_model(dir: &Path) -> Graph {
    let t = common::bottleneck_resnet((16, 3), &[(8, 40), (24, 72)], 10, 12);
    let p = dir.join("bottleneck.safetensors");
    let md = [("input_size".to_string(), "32".to_string())]
        .into_iter()
        .collect();
    t.write(&p, Some(md));
    qscope::model::load(&p).expect("load")
}

/// Inference graphs release the f32 copies of layers that run from codes
/// (`Graph::release_f32_weights`): the logits stay bit for bit the same,
/// the weights held shrink to the codes, and switching integer paths off
/// afterwards still runs the codes (there is nothing else to run).
#[test]
fn released_f32_weights_leave_the_logits_unchanged() {
    let _lock = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    if !qscope::engine::kernels::direct_conv::available() {
        eprintln!("skipping: no AVX2 / AVX-512 kernels, nothing runs from codes");
        return;
    }
    set_integer_paths(true);
    let dir = tempfile::tempdir().expect("tmp");
    let (sample, calib, x) = sample();
    let bottleneck = bottleneck_model(dir.path());
    let bx = common::random_input(6, 3, 32, 13);
    let bcalib = common::random_input(16, 3, 32, 14);
    let x = x.slice(ndarray::s![..40, .., .., ..]).to_owned();
    let w8a8 = quantized(&sample, &calib, Method::SmoothQuant, 8).graph;
    // (name, model, input, how many times smaller than f32 the weights held must be)
    // f32 models (bound 0: no bound) release only copies their kernels do
    // not read, and keep running the same kernels.
    let mut cases = vec![
        ("resnet20 w4", rtn4(&sample, &calib).graph, x.clone(), 6),
        // Narrow layers: per-channel scales and the f32 classifier weigh more.
        (
            "bottleneck w4",
            rtn4(&bottleneck, &bcalib).graph,
            bx.clone(),
            3,
        ),
        // 3 bits per code (and the same per-channel scales).
        (
            "resnet20 w3",
            quantized(&sample, &calib, Method::Rtn, 3).graph,
            x.clone(),
            8,
        ),
        (
            "bottleneck w3",
            quantized(&bottleneck, &bcalib, Method::Rtn, 3).graph,
            bx.clone(),
            3,
        ),
        ("resnet20 fp32", sample.clone(), x.clone(), 0),
        ("bottleneck fp32", bottleneck.clone(), bx, 0),
    ];
    if path_summary(&w8a8).contains("int8") {
        cases.push(("resnet20 w8a8", w8a8, x, 3));
    }
    for (name, g, x, smaller) in cases {
        let g = g.fused();
        let summary = path_summary(&g);
        if let Some(bits) = name
            .strip_prefix("bottleneck ")
            .filter(|b| b.starts_with('w'))
        {
            assert!(
                summary.contains(&format!("{bits} weight-only (decoded + gemm)")),
                "{summary}"
            );
        }
        let want = forward(&g, x.clone()).expect("f32 copies kept");
        let before = g.resident_weight_bytes();
        let mut lean = g.clone();
        let freed = lean.release_f32_weights();
        let after = lean.resident_weight_bytes();
        // Codes plus per-channel scales, against one f32 per weight.
        let f32_bytes = 4 * g.param_count();
        eprintln!("{name}: weights held {before} → {after} bytes (f32 model {f32_bytes})");
        assert!(after * smaller < f32_bytes, "{name}: {after} bytes held");
        assert!(freed > 0, "{name}: nothing released");
        assert_eq!(before - after, freed, "{name}");
        assert_eq!(path_summary(&lean), summary, "{name}");
        let got = forward(&lean, x.clone()).expect("codes only");
        assert!(common::same_bits(&got, &want), "{name}: logits changed");
        // The original graph still has its f32 weights (shared layers are copied).
        assert_eq!(g.resident_weight_bytes(), before);
        set_integer_paths(false);
        let got = forward(&lean, x.clone());
        set_integer_paths(true);
        assert!(
            common::same_bits(&got.expect("codes only"), &want),
            "{name}"
        );
    }
}

/// The 4-bit linear kernel (AVX-512, AVX2 forced, portable) against an f64
/// reference of the decoded weights, on widths around its 16- and 32-input
/// blocks and odd byte counts: within 1e-5 of Σ|x·w|. On every ISA an
/// image's outputs are bit for bit the same alone, in a batch, and on 1 or
/// 2 threads.
#[test]
fn w4_linear_kernel_matches_the_decoded_weights() {
    use qscope::engine::kernels::direct_conv::force_avx2;
    use qscope::engine::kernels::lowbit_linear::{linear_w4, linear_w4_portable, RowCodes};
    use qscope::engine::kernels::packed3::pack3;
    let _lock = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = qscope::util::Rng::new(11);
    let cases: [(usize, usize, usize); 11] = [
        (1, 1, 1),
        (1, 2, 3),
        (2, 15, 7),
        (3, 16, 9),
        (4, 17, 5),
        (5, 31, 8),
        (1, 32, 16),
        (6, 33, 3),
        (9, 100, 70),
        (1, 513, 130),
        (2, 4096, 257),
    ];
    for (n, d, o) in cases {
        let rb = d.div_ceil(2);
        let codes: Vec<u8> = (0..o * rb)
            .map(|_| (rng.below(16) | (rng.below(16) << 4)) as u8)
            .collect();
        // Odd d: the last byte's high nibble is padding, never read.
        let code = |r: usize, i: usize| (codes[r * rb + i / 2] >> (4 * (i % 2))) & 15;
        let step: Vec<f32> = (0..o).map(|_| 0.01 + 0.1 * rng.unit() as f32).collect();
        let lo: Vec<f32> = (0..o).map(|_| -(rng.unit() as f32)).collect();
        let bias: Vec<f32> = (0..o).map(|_| rng.normal() as f32).collect();
        let x: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
        let mut want = vec![0f64; n * o];
        let mut scale = vec![0f64; n * o];
        for k in 0..n {
            for r in 0..o {
                for i in 0..d {
                    let w = lo[r] as f64 + step[r] as f64 * code(r, i) as f64;
                    want[k * o + r] += x[k * d + i] as f64 * w;
                    scale[k * o + r] += (x[k * d + i] as f64 * w).abs();
                }
                want[k * o + r] += bias[r] as f64;
            }
        }
        let check = |got: &[f32], what: &str| {
            for j in 0..n * o {
                let err = (got[j] as f64 - want[j]).abs();
                assert!(
                    err <= 1e-5 * (scale[j] + 1.0),
                    "{what} n={n} d={d} o={o}: output {j} off by {err}"
                );
            }
        };
        let mut port = vec![0f32; n * o];
        linear_w4_portable(&x, n, d, &codes, &step, &lo, o, Some(&bias), &mut port);
        check(&port, "portable");
        for avx2 in [false, true] {
            force_avx2(avx2);
            let run = |x: &[f32], n: usize, threads: usize| {
                let mut out = vec![0f32; n * o];
                linear_w4(
                    x,
                    n,
                    d,
                    RowCodes::Nibbles(&codes),
                    &step,
                    &lo,
                    o,
                    Some(&bias),
                    &mut out,
                    threads,
                );
                out
            };
            let batch = run(&x, n, 1);
            check(&batch, if avx2 { "avx2" } else { "best isa" });
            assert_eq!(run(&x, n, 2), batch, "threads change the result");
            for k in 0..n {
                let one = run(&x[k * d..(k + 1) * d], 1, 2);
                assert_eq!(one[..], batch[k * o..(k + 1) * o], "image {k} alone");
            }
            // Codes below 8 held 3-bit packed, row by row: unpacked per
            // row, the same outputs as their nibbles bit for bit.
            let nib3: Vec<u8> = codes.iter().map(|b| b & 0x77).collect();
            let packed: Vec<u8> = nib3
                .chunks(rb)
                .flat_map(|row| pack3(row).expect("codes < 8"))
                .collect();
            let run3 = |codes: RowCodes| {
                let mut out = vec![0f32; n * o];
                linear_w4(&x, n, d, codes, &step, &lo, o, Some(&bias), &mut out, 2);
                out
            };
            assert_eq!(
                run3(RowCodes::Packed3(&packed)),
                run3(RowCodes::Nibbles(&nib3)),
                "3-bit rows, n={n} d={d} o={o}"
            );
        }
        force_avx2(false);
    }
}

/// A VGG quantized to 4 bits runs its classifier from the codes too: the
/// same logits as the f32 simulation (summation order only) and, released,
/// about an eighth of the f32 weight bytes; at 3 bits, every layer's codes
/// are held in 3 bits (unpacked per call) with the same guarantees.
#[test]
fn w4_vgg_classifier_runs_from_codes() {
    let _lock = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    let g = qscope::model::load(&common::fixture("vgg_bn.safetensors")).expect("vgg");
    let calib = common::random_input(16, 3, 16, 21);
    let x = common::random_input(12, 3, 16, 22);
    for bits in [4u8, 3] {
        let q = quantized(&g, &calib, Method::Rtn, bits).graph.fused();
        let summary = path_summary(&q);
        assert!(summary.contains("linear ×3"), "{summary}");
        let (real, sim) = both_paths(&q, &x);
        let (d, changed) = compare(&real, &sim);
        assert!(d < 1e-4, "{bits} bits: logits differ by {d} of their range");
        assert_eq!(changed, 0);
        single_images_equal_the_batch(&q, &x, 5);
        let mut lean = q.clone();
        lean.release_f32_weights();
        assert!(common::same_bits(
            &forward(&lean, x.clone()).expect("codes"),
            &real
        ));
        // Each linear keeps its codes and per-row scales only: half a byte
        // per weight at 4 bits, 3/8 (whole 6-byte groups per row) at 3; two
        // f32 per row, padded to 8 rows.
        for n in &lean.nodes {
            if let qscope::model::Op::Linear(l) = &n.op {
                let codes = l.lowbit.as_ref().expect("codes");
                assert!(l.weight.is_empty(), "{}: f32 weights kept", n.name);
                let (o, d) = (l.out_features, l.in_features);
                let row = match bits {
                    4 => d.div_ceil(2),
                    _ => d.div_ceil(16) * 6,
                };
                assert_eq!(codes.held_bits(), bits, "{}", n.name);
                assert_eq!(
                    codes.held_bytes(),
                    o * row + 8 * o.div_ceil(8) * 8,
                    "{}",
                    n.name
                );
            }
        }
        eprintln!(
            "vgg w{bits}: {summary}; weights held {} bytes",
            lean.resident_weight_bytes()
        );
    }
}

/// A W8A8 linear runs as the 1×1 conv it is on the int8 kernel, ReLU fused
/// (`fuse::w8a8_linear_as_conv`): a SmoothQuant VGG's classifier against
/// the f32 simulation, with the bounds of the ResNet-20 check above.
#[test]
fn w8a8_linear_layers_run_on_the_int8_kernel() {
    let _lock = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    let g = qscope::model::load(&common::fixture("vgg_bn.safetensors")).expect("vgg");
    let calib = common::random_input(16, 3, 16, 23);
    let x = common::random_input(40, 3, 16, 24);
    let w8a8 = quantized(&g, &calib, Method::SmoothQuant, 8).graph;
    let q = w8a8.fused();
    assert!(
        !q.nodes
            .iter()
            .any(|n| matches!(n.op, qscope::model::Op::Linear(_))),
        "every W8A8 linear is a conv in the inference graph"
    );
    // The classifier's ReLUs fused into the convs' epilogues.
    assert!(!q
        .nodes
        .iter()
        .any(|n| matches!(n.op, qscope::model::Op::Relu)));
    let summary = path_summary(&q);
    if summary.contains("int8") {
        assert!(
            summary.starts_with("int8") && summary.ends_with("×6"),
            "{summary}"
        );
    }
    let (real, sim) = both_paths(&q, &x);
    let (d, changed) = compare(&real, &sim);
    assert!(d < 0.03, "logits differ by {d} of their range");
    assert!(changed <= 1, "{changed} of 40 predictions changed");
    // The simulation of the unfused graph (a linear fed its fake-quantized
    // input) is the same arithmetic.
    set_integer_paths(false);
    let unfused = forward(&w8a8, x.clone());
    set_integer_paths(true);
    let (d, changed) = compare(&unfused.expect("unfused"), &sim);
    assert!(d < 1e-4 && changed == 0, "{d} {changed}");
}
