//! Shared fixtures: random ResNet checkpoints written as real safetensors files
//! in both naming conventions, so loader tests never depend on `../shared`.
#![allow(dead_code)]
use qscope::util::Rng;
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// A file of `tests/fixtures/` (written by the scripts in `tests/`).
pub fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub struct Tensors(pub Vec<(String, Vec<usize>, Vec<f32>)>);

impl Tensors {
    pub fn add(&mut self, rng: &mut Rng, name: &str, shape: &[usize], scale: f64) {
        let n: usize = shape.iter().product();
        self.0.push((
            name.into(),
            shape.to_vec(),
            (0..n).map(|_| (rng.normal() * scale) as f32).collect(),
        ));
    }
    pub fn bn(&mut self, rng: &mut Rng, prefix: &str, c: usize) {
        let mk = |rng: &mut Rng, base: f64, s: f64| -> Vec<f32> {
            (0..c).map(|_| (base + rng.normal() * s) as f32).collect()
        };
        let g = mk(rng, 1.0, 0.1);
        let b = mk(rng, 0.0, 0.1);
        let m = mk(rng, 0.0, 0.1);
        let v: Vec<f32> = mk(rng, 1.0, 0.1)
            .into_iter()
            .map(|x| x.abs() + 0.1)
            .collect();
        for (s, d) in [
            ("weight", g),
            ("bias", b),
            ("running_mean", m),
            ("running_var", v),
        ] {
            self.0.push((format!("{prefix}.{s}"), vec![c], d));
        }
    }
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _, _)| n != name);
    }
    pub fn write(&self, path: &Path, metadata: Option<HashMap<String, String>>) {
        self.write_as(path, metadata, Dtype::F32);
    }
    /// Every tensor as `dtype`: F32, F16 or BF16 (half checkpoints).
    pub fn write_as(&self, path: &Path, metadata: Option<HashMap<String, String>>, dtype: Dtype) {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .0
            .iter()
            .map(|(n, s, d)| {
                let b: Vec<u8> = match dtype {
                    Dtype::F32 => d.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    Dtype::F16 => d
                        .iter()
                        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                        .collect(),
                    Dtype::BF16 => d
                        .iter()
                        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                        .collect(),
                    other => panic!("write_as: {other:?}"),
                };
                (n.clone(), s.clone(), b)
            })
            .collect();
        let views: Vec<(String, TensorView)> = bytes
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    TensorView::new(dtype, s.clone(), b).expect("view"),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, &metadata, path).expect("write safetensors");
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Shortcut {
    /// akamaster: parameter-free option A, classifier `linear`.
    OptionA,
    /// torchvision-style `downsample.{0,1}`, classifier `fc`.
    Downsample,
}

/// A CIFAR ResNet with `n` basic blocks per stage and the given stage widths.
pub fn cifar_resnet(
    n: usize,
    widths: &[usize],
    classes: usize,
    shortcut: Shortcut,
    seed: u64,
) -> Tensors {
    let mut rng = Rng::new(seed);
    let mut t = Tensors(Vec::new());
    t.add(&mut rng, "conv1.weight", &[widths[0], 3, 3, 3], 0.3);
    t.bn(&mut rng, "bn1", widths[0]);
    let mut cin = widths[0];
    for (l, &w) in widths.iter().enumerate() {
        for i in 0..n {
            let p = format!("layer{}.{i}", l + 1);
            let s = (0.6 / ((cin * 9) as f64).sqrt()).max(0.05);
            t.add(&mut rng, &format!("{p}.conv1.weight"), &[w, cin, 3, 3], s);
            t.bn(&mut rng, &format!("{p}.bn1"), w);
            t.add(&mut rng, &format!("{p}.conv2.weight"), &[w, w, 3, 3], s);
            t.bn(&mut rng, &format!("{p}.bn2"), w);
            if shortcut == Shortcut::Downsample && (cin != w || (l > 0 && i == 0)) {
                t.add(
                    &mut rng,
                    &format!("{p}.downsample.0.weight"),
                    &[w, cin, 1, 1],
                    0.3,
                );
                t.bn(&mut rng, &format!("{p}.downsample.1"), w);
            }
            cin = w;
        }
    }
    let fc = if shortcut == Shortcut::OptionA {
        "linear"
    } else {
        "fc"
    };
    t.add(&mut rng, &format!("{fc}.weight"), &[classes, cin], 0.3);
    t.add(&mut rng, &format!("{fc}.bias"), &[classes], 0.1);
    t
}

pub fn random_input(n: usize, c: usize, s: usize, seed: u64) -> qscope::engine::Tensor {
    let mut rng = Rng::new(seed);
    qscope::engine::Tensor::from_shape_fn((n, c, s, s), |_| rng.normal() as f32)
}

/// Whether every pair of values is the same float, bit for bit (kernels
/// that must agree exactly: SIMD vs portable, split vs one thread).
pub fn same_bits<'a>(
    a: impl IntoIterator<Item = &'a f32>,
    b: impl IntoIterator<Item = &'a f32>,
) -> bool {
    a.into_iter()
        .zip(b)
        .all(|(x, y)| x.to_bits() == y.to_bits())
}

pub fn max_rel_diff(a: &qscope::engine::Tensor, b: &qscope::engine::Tensor) -> f32 {
    assert_eq!(a.dim(), b.dim());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter()
        .zip(b.iter())
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// A torchvision bottleneck ResNet, one block per stage: a `stem` (channels,
/// kernel) conv, then per stage (mid, out) widths: 1×1, 3×3, 1×1 convs with
/// a `downsample.{0,1}` shortcut, and an `fc` classifier.
pub fn bottleneck_resnet(
    stem: (usize, usize),
    stages: &[(usize, usize)],
    classes: usize,
    seed: u64,
) -> Tensors {
    let mut rng = Rng::new(seed);
    let mut t = Tensors(Vec::new());
    t.add(&mut rng, "conv1.weight", &[stem.0, 3, stem.1, stem.1], 0.1);
    t.bn(&mut rng, "bn1", stem.0);
    let mut cin = stem.0;
    for (l, &(mid, out)) in stages.iter().enumerate() {
        let p = format!("layer{}.0", l + 1);
        t.add(
            &mut rng,
            &format!("{p}.conv1.weight"),
            &[mid, cin, 1, 1],
            0.3,
        );
        t.bn(&mut rng, &format!("{p}.bn1"), mid);
        t.add(
            &mut rng,
            &format!("{p}.conv2.weight"),
            &[mid, mid, 3, 3],
            0.2,
        );
        t.bn(&mut rng, &format!("{p}.bn2"), mid);
        t.add(
            &mut rng,
            &format!("{p}.conv3.weight"),
            &[out, mid, 1, 1],
            0.3,
        );
        t.bn(&mut rng, &format!("{p}.bn3"), out);
        t.add(
            &mut rng,
            &format!("{p}.downsample.0.weight"),
            &[out, cin, 1, 1],
            0.3,
        );
        t.bn(&mut rng, &format!("{p}.downsample.1"), out);
        cin = out;
    }
    t.add(&mut rng, "fc.weight", &[classes, cin], 0.2);
    t.add(&mut rng, "fc.bias", &[classes], 0.1);
    t
}

/// `f` on a rayon pool of `t` threads.
pub fn on_threads<R: Send>(t: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(t)
        .build()
        .expect("pool")
        .install(f)
}
