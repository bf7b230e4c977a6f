//! Loader and graph tests on checkpoints written here (both PyTorch naming
//! conventions, several depths and widths), plus clear errors on bad files.
mod common;
use common::{cifar_resnet, max_rel_diff, random_input, Shortcut};
use qscope::model::{forward, load, Op};
use std::collections::HashMap;

#[test]
fn infers_depth_and_widths_for_both_naming_conventions() {
    let dir = tempfile::tempdir().expect("tmp");
    for (n, widths, sc, depth) in [
        (1, vec![8, 16, 32], Shortcut::OptionA, 8),
        (3, vec![16, 32, 64], Shortcut::OptionA, 20),
        (2, vec![4, 8], Shortcut::Downsample, 10),
    ] {
        let p = dir.path().join(format!("m{depth}.safetensors"));
        cifar_resnet(n, &widths, 7, sc, 1).write(&p, None);
        let g = load(&p).expect("load");
        assert_eq!(g.meta.arch, format!("resnet{depth}"));
        assert_eq!(g.meta.num_classes, 7);
        let convs = g.layers().iter().filter(|l| l.kind == "conv").count();
        let extra = if sc == Shortcut::Downsample {
            widths.len() - 1
        } else {
            0
        };
        assert_eq!(convs, 1 + 2 * n * widths.len() + extra);
        let out = forward(&g, random_input(2, 3, 32, 2)).expect("forward");
        assert_eq!(out.dim(), (2, 7, 1, 1));
    }
}

#[test]
fn folding_batchnorm_and_fusing_preserve_outputs() {
    let dir = tempfile::tempdir().expect("tmp");
    for sc in [Shortcut::OptionA, Shortcut::Downsample] {
        let p = dir.path().join("m.safetensors");
        cifar_resnet(2, &[8, 16, 32], 10, sc, 9).write(&p, None);
        let g = load(&p).expect("load");
        let fused = g.fused();
        assert!(fused.nodes.len() < g.nodes.len());
        assert!(
            !fused.nodes.iter().any(|n| matches!(n.op, Op::BatchNorm(_))),
            "every BN follows a conv and folds"
        );
        // Option-A shortcuts come after conv2 in the checkpoint's order;
        // they move before it so the add and ReLU still fuse.
        assert!(
            !fused
                .nodes
                .iter()
                .any(|n| matches!(n.op, Op::BatchNorm(_) | Op::Add | Op::Relu)),
            "{sc:?}: every add and ReLU fuses into a conv"
        );
        for batch in [1, 5] {
            let x = random_input(batch, 3, 32, 4);
            let a = forward(&g, x.clone()).expect("plain");
            let b = forward(&fused, x).expect("fused");
            // Reference: the unfused graph (separate BN, add, ReLU ops). Tolerance 1e-5 relative.
            assert!(max_rel_diff(&b, &a) < 1e-5, "{}", max_rel_diff(&b, &a));
        }
    }
}

/// Checkpoints saved from a wrapper (`model.` from Lightning, `_orig_mod.`
/// from torch.compile, DataParallel's `module.`) load as the bare network,
/// with the same logits bit for bit; a partial prefix is not stripped.
#[test]
fn wrapper_prefixes_are_stripped() {
    let dir = tempfile::tempdir().expect("tmp");
    let bare = cifar_resnet(1, &[8, 16], 5, Shortcut::Downsample, 4);
    let p = dir.path().join("bare.safetensors");
    bare.write(&p, None);
    let x = random_input(2, 3, 32, 9);
    let want = forward(&load(&p).expect("bare"), x.clone()).expect("forward");
    for prefix in ["model.", "model._orig_mod.", "module.net.", "backbone."] {
        let wrapped = common::Tensors(
            bare.0
                .iter()
                .map(|(n, s, d)| (format!("{prefix}{n}"), s.clone(), d.clone()))
                .collect(),
        );
        let p = dir.path().join("wrapped.safetensors");
        wrapped.write(&p, None);
        let g = load(&p).unwrap_or_else(|e| panic!("{prefix}: {e}"));
        let got = forward(&g, x.clone()).expect("forward");
        assert!(common::same_bits(got.iter(), want.iter()), "{prefix}");
    }
    // One tensor outside the wrapper: nothing is stripped, and the error
    // names what it could not place.
    let mut partial = common::Tensors(
        bare.0
            .iter()
            .map(|(n, s, d)| (format!("model.{n}"), s.clone(), d.clone()))
            .collect(),
    );
    partial
        .0
        .push(("loss.weight".into(), vec![5], vec![1.0; 5]));
    let p = dir.path().join("partial.safetensors");
    partial.write(&p, None);
    let err = load(&p).expect_err("must not load").to_string();
    assert!(err.contains("cannot infer the architecture"), "{err}");
}

#[test]
fn metadata_overrides_name_and_normalisation() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("m.safetensors");
    let md: HashMap<String, String> = [
        ("arch", "my-net"),
        ("mean", "[0.5, 0.5, 0.5]"),
        ("std", "0.25,0.25,0.25"),
        ("classes", "a,b,c"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    cifar_resnet(1, &[4, 8], 3, Shortcut::OptionA, 2).write(&p, Some(md));
    let g = load(&p).expect("load");
    assert_eq!(g.meta.arch, "my-net");
    assert_eq!(g.meta.mean, vec![0.5; 3]);
    assert_eq!(g.meta.std, vec![0.25; 3]);
    assert_eq!(
        g.meta.class_names.as_deref(),
        Some(&["a".to_string(), "b".into(), "c".into()][..])
    );
}

fn load_err(t: &common::Tensors) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("bad.safetensors");
    t.write(&p, None);
    load(&p).expect_err("must fail").to_string()
}

/// torchvision names as Hugging Face `transformers` writes them
/// (`ResNetForImageClassification`), mapped here independently of the
/// loader's own mapping.
fn hugging_face_name(tv: &str) -> String {
    let conv_or_bn = |part: &str, rest: &str| -> String {
        let kind = if part.starts_with("conv") || part == "downsample.0" {
            "convolution"
        } else {
            "normalization"
        };
        format!("{kind}.{rest}")
    };
    let parts: Vec<&str> = tv.split('.').collect();
    match parts.as_slice() {
        ["conv1" | "bn1", rest] => {
            format!("resnet.embedder.embedder.{}", conv_or_bn(parts[0], rest))
        }
        ["fc", rest] => format!("classifier.1.{rest}"),
        [layer, i, "downsample", d, rest] => {
            let s = layer["layer".len()..].parse::<usize>().unwrap() - 1;
            let which = format!("downsample.{d}");
            format!(
                "resnet.encoder.stages.{s}.layers.{i}.shortcut.{}",
                conv_or_bn(&which, rest)
            )
        }
        [layer, i, part, rest] => {
            let s = layer["layer".len()..].parse::<usize>().unwrap() - 1;
            let j = part[part.len() - 1..].parse::<usize>().unwrap() - 1;
            format!(
                "resnet.encoder.stages.{s}.layers.{i}.layer.{j}.{}",
                conv_or_bn(part, rest)
            )
        }
        _ => panic!("unexpected torchvision name {tv}"),
    }
}

/// Hugging Face ResNets (bottleneck at ImageNet layout, and basic blocks)
/// give the same logits as the torchvision-named file, bit for bit.
#[test]
fn hugging_face_resnets_load_as_torchvision() {
    let dir = tempfile::tempdir().expect("tmp");
    let md: HashMap<String, String> = [("input_size".to_string(), "64".to_string())]
        .into_iter()
        .collect();
    for (t, size) in [
        (
            common::bottleneck_resnet((8, 7), &[(4, 16), (8, 32)], 5, 4),
            64,
        ),
        (cifar_resnet(2, &[4, 8], 3, Shortcut::Downsample, 5), 32),
    ] {
        let tv_path = dir.path().join("tv.safetensors");
        let hf_path = dir.path().join("hf.safetensors");
        t.write(&tv_path, Some(md.clone()));
        let hf = common::Tensors(
            t.0.iter()
                .map(|(n, s, d)| (hugging_face_name(n), s.clone(), d.clone()))
                .collect(),
        );
        assert!(hf.0.iter().all(|(n, _, _)| n != "conv1.weight"));
        hf.write(&hf_path, Some(md.clone()));
        let (a, b) = (load(&tv_path).expect("tv"), load(&hf_path).expect("hf"));
        assert_eq!(a.meta.arch, b.meta.arch);
        assert_eq!(a.meta.family, b.meta.family);
        let x = random_input(2, 3, size, 7);
        let (ya, yb) = (forward(&a, x.clone()).unwrap(), forward(&b, x).unwrap());
        assert!(common::same_bits(ya.iter(), yb.iter()));
    }
}

/// Fine-tuning heads: `fc = Sequential(Dropout, Linear)` (`fc.1`) gives the
/// plain `fc` model's logits bit for bit; `Sequential(Linear, ReLU,
/// Dropout, Linear)` (`fc.0`, `fc.3`) equals the hidden layer's model
/// followed by a ReLU and the second linear computed here (f64, 1e-5 of the
/// largest logit).
#[test]
fn resnet_sequential_heads_load() {
    let dir = tempfile::tempdir().expect("tmp");
    let write = |t: &common::Tensors, name: &str| {
        let p = dir.path().join(name);
        t.write(&p, None);
        load(&p).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let renamed = |t: &common::Tensors, from: &str, to: &str| {
        common::Tensors(
            t.0.iter()
                .map(|(n, s, d)| (n.replacen(from, to, 1), s.clone(), d.clone()))
                .collect(),
        )
    };
    let x = random_input(2, 3, 32, 5);
    let base = cifar_resnet(1, &[4, 8], 6, Shortcut::Downsample, 8);
    let want = forward(&write(&base, "fc.safetensors"), x.clone()).unwrap();
    let dropout_head = write(&renamed(&base, "fc.", "fc.1."), "fc1.safetensors");
    assert_eq!(dropout_head.meta.num_classes, 6);
    let got = forward(&dropout_head, x.clone()).unwrap();
    assert!(common::same_bits(got.iter(), want.iter()));

    // Hidden layer: the base model's fc (6 outputs) as fc.0, then fc.3: 6 → 3.
    let mut two = renamed(&base, "fc.", "fc.0.");
    let w3: Vec<f32> = (0..18).map(|i| (i as f32 * 0.37).sin()).collect();
    let b3: Vec<f32> = vec![0.1, -0.2, 0.3];
    two.0.push(("fc.3.weight".into(), vec![3, 6], w3.clone()));
    two.0.push(("fc.3.bias".into(), vec![3], b3.clone()));
    let g = write(&two, "fc03.safetensors");
    assert_eq!(g.meta.num_classes, 3);
    let got = forward(&g, x).unwrap();
    let scale = got.iter().fold(0f32, |m, v| m.max(v.abs()));
    for n in 0..2 {
        for k in 0..3 {
            let r: f64 = b3[k] as f64
                + (0..6)
                    .map(|j| w3[k * 6 + j] as f64 * (want[[n, j, 0, 0]] as f64).max(0.0))
                    .sum::<f64>();
            let d = (got[[n, k, 0, 0]] as f64 - r).abs();
            assert!(d <= 1e-5 * scale as f64, "image {n} class {k}: {d}");
        }
    }
}

/// A pre-activation ResNet (no BatchNorm after the stem, one before each
/// block's convs) is named as such, not as a file missing `bn1.weight`.
#[test]
fn pre_activation_resnets_are_named() {
    let mut t = cifar_resnet(1, &[4, 8], 3, Shortcut::Downsample, 3);
    for s in ["weight", "bias", "running_mean", "running_var"] {
        t.remove(&format!("bn1.{s}"));
    }
    let err = load_err(&t);
    assert!(err.contains("pre-activation ResNet"), "{err}");
}

#[test]
fn missing_extra_and_misshaped_tensors_are_named() {
    let mut t = cifar_resnet(1, &[4, 8], 3, Shortcut::OptionA, 3);
    t.remove("layer2.0.bn1.running_var");
    let e = load_err(&t);
    assert!(
        e.contains("layer2.0.bn1.running_var") && e.contains("missing") && e.contains("[8]"),
        "{e}"
    );

    let mut t = cifar_resnet(1, &[4, 8], 3, Shortcut::OptionA, 3);
    t.0.push(("layer1.0.extra.weight".into(), vec![2], vec![0.0, 0.0]));
    let e = load_err(&t);
    assert!(
        e.contains("layer1.0.extra.weight") && e.contains("not used"),
        "{e}"
    );

    let mut t = cifar_resnet(1, &[4, 8], 3, Shortcut::OptionA, 3);
    for (n, s, d) in &mut t.0 {
        if n == "layer1.0.conv2.weight" {
            *s = vec![4, 2, 3, 3];
            d.truncate(72);
        }
    }
    let e = load_err(&t);
    assert!(
        e.contains("layer1.0.conv2.weight") && e.contains("[4, 2, 3, 3]") && e.contains("expected"),
        "{e}"
    );

    // A diverged checkpoint: NaN and ∞ in one tensor, named with the count.
    let mut t = cifar_resnet(1, &[4, 8], 3, Shortcut::OptionA, 3);
    for (n, _, d) in &mut t.0 {
        if n == "layer2.0.bn2.weight" {
            d[1] = f32::NAN;
            d[5] = f32::INFINITY;
        }
    }
    let e = load_err(&t);
    assert!(
        e.contains("layer2.0.bn2.weight") && e.contains("2 of its 8 values are NaN or infinite"),
        "{e}"
    );
}

/// Half-precision checkpoints (F16, BF16) load as the same network with
/// each weight rounded to that type, and the brief says how they were stored.
#[test]
fn f16_and_bf16_checkpoints_load_as_their_rounded_f32_weights() {
    let dir = tempfile::tempdir().expect("tmp");
    let t = cifar_resnet(1, &[4, 8], 3, Shortcut::Downsample, 3);
    let x = random_input(2, 3, 32, 5);
    for (dtype, round, name) in [
        (
            safetensors::Dtype::F16,
            (|v: f32| half::f16::from_f32(v).to_f32()) as fn(f32) -> f32,
            "f16",
        ),
        (
            safetensors::Dtype::BF16,
            |v: f32| half::bf16::from_f32(v).to_f32(),
            "bf16",
        ),
    ] {
        let half_path = dir.path().join(format!("{name}.safetensors"));
        t.write_as(&half_path, None, dtype);
        let rounded = common::Tensors(
            t.0.iter()
                .map(|(n, s, d)| (n.clone(), s.clone(), d.iter().map(|&v| round(v)).collect()))
                .collect(),
        );
        let f32_path = dir.path().join(format!("{name}_as_f32.safetensors"));
        rounded.write(&f32_path, None);
        let (gh, gf) = (
            load(&half_path).expect("half"),
            load(&f32_path).expect("f32"),
        );
        assert!(
            gh.brief().ends_with(&format!("{name} weights, run in f32")),
            "{}",
            gh.brief()
        );
        assert!(gf.brief().ends_with("f32 weights"), "{}", gf.brief());
        let (a, b) = (
            forward(&gh, x.clone()).expect("half"),
            forward(&gf, x.clone()).expect("f32"),
        );
        assert_eq!(a, b, "{name}: the same network bit for bit");
    }
}

#[test]
fn truncated_corrupt_and_wrong_dtype_files_give_errors_not_panics() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = dir.path().join("good.safetensors");
    cifar_resnet(1, &[4, 8], 3, Shortcut::OptionA, 3).write(&good, None);
    let bytes = std::fs::read(&good).expect("read");
    // Each says what is wrong in words, not only the crate's error name.
    for (name, data, says) in [
        (
            "trunc.safetensors",
            bytes[..bytes.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "garbage.safetensors",
            b"not a model at all".to_vec(),
            "not a safetensors file",
        ),
        ("empty.safetensors", vec![], "too short"),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, data).expect("write");
        let e = load(&p).expect_err("must fail").to_string();
        assert!(
            e.contains(name) && e.contains("safetensors") && e.contains(says),
            "{e}"
        );
    }
    // An int64 weight where floats are expected.
    let p = dir.path().join("i64.safetensors");
    let raw = vec![0u8; 8 * 4];
    let v =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![4], &raw).expect("view");
    safetensors::serialize_to_file(vec![("conv1.weight".to_string(), v)], &None, &p)
        .expect("write");
    let e = load(&p).expect_err("must fail").to_string();
    assert!(e.contains("conv1.weight") && e.contains("dtype"), "{e}");
    let e = load(&dir.path().join("nope.safetensors"))
        .expect_err("must fail")
        .to_string();
    assert!(e.contains("nope.safetensors"), "{e}");
}

#[test]
fn layer_table_counts_params_and_macs() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("m.safetensors");
    cifar_resnet(1, &[4, 8], 3, Shortcut::OptionA, 3).write(&p, None);
    let g = load(&p).expect("load");
    let l = g.layers();
    assert_eq!(l[0].name, "conv1");
    assert_eq!(l[0].macs, (4 * 3 * 9 * 32 * 32) as u64);
    let last_conv = &l[l.len() - 2];
    assert_eq!(last_conv.output_hw, (16, 16));
    assert_eq!(l.last().map(|x| x.params), Some(3 * 8 + 3));
    // The one-line brief counts the same, and says how weights are stored.
    let params = g.param_count() as f64 / 1e3;
    let brief = g.brief();
    assert!(
        brief.starts_with("resnet")
            && brief.contains(" · 3 classes · 3×32×32 · ")
            && brief.contains(&format!("{params:.1} k params"))
            && brief.ends_with("f32 weights"),
        "{brief}"
    );
    assert_eq!(g.stored_bits("conv1"), None);
}

/// The benchmark's batch-1 figures are ordered (best ≤ median ≤ p90) and
/// its throughput and GFLOP/s agree with the model's multiply-adds.
#[test]
fn bench_report_is_consistent() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("m.safetensors");
    cifar_resnet(1, &[4, 8], 3, Shortcut::OptionA, 3).write(&p, None);
    let g = load(&p).expect("load").fused();
    let r = qscope::eval::bench(&g, 4, 1, std::time::Duration::from_millis(50)).expect("bench");
    assert!(r.latency_ms_min > 0.0);
    assert!(r.latency_ms_min <= r.latency_ms_median && r.latency_ms_median <= r.latency_ms_p90);
    let flops = 2.0 * g.macs_per_image() as f64 * r.images_per_s / 1e9;
    assert!((r.gflops - flops).abs() <= 1e-9 * flops.max(1.0));
    assert_eq!((r.batch, r.threads), (4, 1));
}

#[test]
fn torchvision_imagenet_bottleneck_resnet_loads_and_folds() {
    // A miniature ResNet-50 layout: 7×7 stride-2 stem, max-pool, bottleneck
    // blocks with `downsample.{0,1}`, `fc`; stride 2 on conv2 of layer2.0.
    let t = common::bottleneck_resnet((8, 7), &[(4, 16), (8, 32)], 5, 4);
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("r.safetensors");
    let md: HashMap<String, String> = [("input_size".to_string(), "64".to_string())]
        .into_iter()
        .collect();
    t.write(&p, Some(md));
    let g = load(&p).expect("load");
    assert_eq!(g.meta.family, qscope::model::Family::Imagenet);
    assert_eq!(g.meta.arch, "resnet8");
    assert!(g.nodes.iter().any(|n| matches!(n.op, Op::MaxPool { .. })));
    let layers = g.layers();
    assert_eq!(layers.len(), 1 + 2 * 4 + 1);
    let conv2 = layers
        .iter()
        .find(|l| l.name == "layer2.0.conv2")
        .expect("conv2");
    // 64 → stem /2 → 32 → pool /2 → 16 → layer2 stride 2 on conv2 → 8.
    assert_eq!(conv2.output_hw, (8, 8));
    let x = random_input(2, 3, 64, 3);
    let a = forward(&g, x.clone()).expect("plain");
    let b = forward(&g.fused(), x).expect("fused");
    assert_eq!(a.dim(), (2, 5, 1, 1));
    assert!(max_rel_diff(&b, &a) < 1e-5);
}

/// A torchvision-style VGG with BatchNorm (conv biases, BN, ReLU, max-pools
/// found from the index gaps, a 3-layer classifier reading a 4×4 map)
/// against logits a plain numpy forward pass computed
/// (`tests/make_vgg_fixture.py`). Tolerance 1e-4 relative to the largest logit.
#[test]
fn torchvision_vgg_matches_a_numpy_reference() {
    let g = load(&common::fixture("vgg_bn.safetensors")).expect("load");
    assert_eq!(g.meta.arch, "vgg6_bn");
    assert_eq!(g.meta.input_size, 16, "implied by the classifier's 4×4 map");
    assert_eq!(g.meta.family, qscope::model::Family::Cifar);
    let pools = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::MaxPool { .. }))
        .count();
    assert_eq!(pools, 2);
    let names: Vec<String> = g.layers().iter().map(|l| l.name.clone()).collect();
    assert_eq!(
        names,
        [
            "features.0",
            "features.4",
            "features.7",
            "classifier.0",
            "classifier.3",
            "classifier.6"
        ]
    );
    let bytes = std::fs::read(common::fixture("vgg_bn_io.safetensors")).expect("io");
    let io = safetensors::SafeTensors::deserialize(&bytes).expect("io");
    let floats = |name: &str| -> Vec<f32> {
        io.tensor(name)
            .expect(name)
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    let x = qscope::engine::Tensor::from_shape_vec((3, 3, 16, 16), floats("input")).expect("x");
    let want = floats("logits");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for graph in [g.clone(), g.fused()] {
        let y = forward(&graph, x.clone()).expect("forward");
        assert_eq!(y.dim(), (3, 10, 1, 1));
        let err = y
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err < 1e-4 * scale, "max |Δ| {err} vs largest logit {scale}");
    }
}

/// Without BatchNorm, with one `classifier` linear reading one feature per
/// channel (global pooling, any input size), and the errors a VGG-looking
/// file that does not fit gets.
#[test]
fn plain_vgg_loads_and_misfits_are_named() {
    let mut rng = qscope::util::Rng::new(3);
    let mut t = common::Tensors(vec![]);
    t.add(&mut rng, "features.0.weight", &[8, 3, 3, 3], 0.3);
    t.add(&mut rng, "features.0.bias", &[8], 0.1);
    t.add(&mut rng, "features.3.weight", &[8, 8, 3, 3], 0.3);
    t.add(&mut rng, "features.3.bias", &[8], 0.1);
    t.add(&mut rng, "classifier.weight", &[10, 8], 0.3);
    t.add(&mut rng, "classifier.bias", &[10], 0.1);
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("v.safetensors");
    t.write(&p, None);
    let g = load(&p).expect("load");
    assert_eq!(g.meta.arch, "vgg3");
    assert_eq!(g.meta.input_size, 32);
    // features.2 is a pool; the last pool is assumed: 32 → 16 → 8, then global.
    assert!(g.nodes.iter().any(|n| matches!(n.op, Op::GlobalAvgPool)));
    let y = forward(&g.fused(), random_input(2, 3, 32, 1)).expect("forward");
    assert_eq!(y.dim(), (2, 10, 1, 1));
    // A 1×1 conv (VGG-16's configuration C) keeps the map: padding k / 2.
    let mut c = common::Tensors(t.0.clone());
    c.remove("features.3.weight");
    c.add(&mut rng, "features.3.weight", &[8, 8, 1, 1], 0.3);
    c.write(&p, None);
    let g1 = load(&p).expect("1×1 conv");
    let y = forward(&g1.fused(), random_input(2, 3, 32, 1)).expect("forward");
    assert_eq!(y.dim(), (2, 10, 1, 1));
    assert_eq!(g1.layers()[1].output_hw, (16, 16));

    // A classifier that reads no square map of the last conv's channels.
    let mut bad = common::Tensors(t.0.clone());
    bad.remove("classifier.weight");
    bad.add(&mut rng, "classifier.weight", &[10, 24], 0.3);
    bad.write(&p, None);
    let e = load_err_at(&p);
    assert!(e.contains("24 features") && e.contains("8 channels"), "{e}");
    // A BatchNorm that does not directly follow its conv.
    let mut bad = common::Tensors(t.0.clone());
    bad.bn(&mut rng, "features.2", 8);
    bad.write(&p, None);
    let e = load_err_at(&p);
    assert!(e.contains("features.2"), "{e}");
    // Neither a ResNet nor a VGG.
    let mut other = common::Tensors(vec![]);
    other.add(&mut rng, "stem.weight", &[8, 3, 3, 3], 0.3);
    other.write(&p, None);
    let e = load_err_at(&p);
    assert!(
        e.contains("conv1.weight") && e.contains("features.0.weight"),
        "{e}"
    );
}

fn load_err_at(p: &std::path::Path) -> String {
    match load(p) {
        Ok(_) => panic!("{} loaded", p.display()),
        Err(e) => e.to_string(),
    }
}

/// A layer as wide as an ImageNet VGG's first linear (25 088 inputs) needs
/// tens of GB for GPTQ's Hessian and its working copies: the quantizers
/// that build it refuse with the layer and the figure instead of the
/// process being killed. Here 8·158² = 199 712 inputs (terabytes).
#[test]
fn gram_based_quantizers_refuse_layers_whose_gram_cannot_fit() {
    use qscope::jobs::calib_memory::check_gram;
    use qscope::quant::Method;
    let mut rng = qscope::util::Rng::new(5);
    let mut t = common::Tensors(vec![]);
    t.add(&mut rng, "features.0.weight", &[8, 3, 3, 3], 0.3);
    t.add(&mut rng, "features.3.weight", &[8, 8, 3, 3], 0.3);
    t.add(&mut rng, "classifier.weight", &[1, 8 * 158 * 158], 0.01);
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("wide.safetensors");
    t.write(&p, None);
    let g = load(&p).expect("load");
    assert_eq!(g.meta.input_size, 158 * 4, "the map the classifier reads");
    for m in [Method::Gptq, Method::Gpfq, Method::Awq] {
        let e = check_gram(&g, m).expect_err("must refuse").to_string();
        assert!(
            e.contains("classifier") && e.contains("199712") && e.contains("rtn"),
            "{e}"
        );
    }
    assert!(check_gram(&g, Method::Rtn).is_ok());
    assert!(check_gram(&g, Method::SmoothQuant).is_ok());
    let sample =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_models/resnet20.safetensors");
    assert!(check_gram(&load(&sample).expect("sample"), Method::Gptq).is_ok());
}
