//! LAQ subset generation (ALGORITHMS.md §12 LAQ checks).
use qscope::laq::icd::icd;
use qscope::laq::select::{greedy, SubsetKind};
use qscope::laq::{class_gaussians, icd_matrix, select_subsets, umap_2d, Gaussian2, UmapConfig};
use qscope::util::Rng;

#[test]
fn icd_is_symmetric_non_negative_and_matches_the_equal_covariance_form() {
    let g1 = Gaussian2 {
        mean: [0.0, 0.0],
        cov: [2.0, 0.3, 1.0],
    };
    let g2 = Gaussian2 {
        mean: [1.5, -0.5],
        cov: [2.0, 0.3, 1.0],
    };
    // Equal Σ: ICD = ½ Δμᵀ Σ⁻¹ Δμ.
    let det = 2.0 * 1.0 - 0.09;
    let inv = [1.0 / det, -0.3 / det, 2.0 / det];
    let dm = [1.5, -0.5];
    let want =
        0.5 * (inv[0] * dm[0] * dm[0] + 2.0 * inv[1] * dm[0] * dm[1] + inv[2] * dm[1] * dm[1]);
    assert!((icd(&g1, &g2) - want).abs() < 1e-12);
    let g3 = Gaussian2 {
        mean: [0.2, 0.1],
        cov: [0.5, -0.1, 3.0],
    };
    let m = icd_matrix(&[g1, g2, g3]);
    for i in 0..3 {
        assert_eq!(m[i * 3 + i], 0.0);
        for j in 0..3 {
            assert!((m[i * 3 + j] - m[j * 3 + i]).abs() < 1e-12 && m[i * 3 + j] >= 0.0);
        }
    }
}

#[test]
fn closed_form_matches_a_monte_carlo_kl_estimate() {
    // KL(P‖Q) by sampling P (10⁵ samples, within 2 %), symmetrised and halved.
    let p = Gaussian2 {
        mean: [0.0, 0.0],
        cov: [1.0, 0.2, 0.5],
    };
    let q = Gaussian2 {
        mean: [0.7, -0.4],
        cov: [0.8, -0.1, 1.2],
    };
    let logpdf = |g: &Gaussian2, x: [f64; 2]| {
        let [a, b, c] = g.cov;
        let det = a * c - b * b;
        let (dx, dy) = (x[0] - g.mean[0], x[1] - g.mean[1]);
        let qf = (c * dx * dx - 2.0 * b * dx * dy + a * dy * dy) / det;
        -0.5 * qf - 0.5 * det.ln() - (2.0 * std::f64::consts::PI).ln()
    };
    let mut rng = Rng::new(5);
    let kl = |p: &Gaussian2, q: &Gaussian2, rng: &mut Rng| {
        let [a, b, c] = p.cov;
        let l11 = a.sqrt();
        let l21 = b / l11;
        let l22 = (c - l21 * l21).sqrt();
        let n = 100_000;
        (0..n)
            .map(|_| {
                let (z1, z2) = (rng.normal(), rng.normal());
                let x = [p.mean[0] + l11 * z1, p.mean[1] + l21 * z1 + l22 * z2];
                logpdf(p, x) - logpdf(q, x)
            })
            .sum::<f64>()
            / n as f64
    };
    let mc = 0.5 * (kl(&p, &q, &mut rng) + kl(&q, &p, &mut rng));
    let cf = icd(&p, &q);
    assert!((mc - cf).abs() <= 0.02 * cf, "{mc} vs {cf}");
}

#[test]
fn umap_keeps_separated_clusters_apart_and_is_seeded() {
    // Three well-separated 8-D blobs of 60 points each.
    let mut rng = Rng::new(1);
    let (n, d) = (180, 8);
    let x: Vec<f32> = (0..n * d)
        .map(|k| ((k / d) / 60) as f32 * 10.0 + rng.normal() as f32 * 0.3)
        .collect();
    let labels: Vec<u32> = (0..n).map(|i| (i / 60) as u32).collect();
    let cfg = UmapConfig {
        epochs: Some(200),
        ..Default::default()
    };
    let y = umap_2d(&x, n, d, &cfg);
    assert_eq!(y, umap_2d(&x, n, d, &cfg), "same seed, same embedding");
    let g = class_gaussians(&y, &labels, 3);
    let m = icd_matrix(&g);
    assert!(
        m[1] > 5.0 && m[2] > 5.0 && m[5] > 5.0,
        "clusters must stay apart: {m:?}"
    );
}

#[test]
fn greedy_selection_is_deterministic_and_orders_similar_below_dissimilar() {
    let k = 8;
    let mut rng = Rng::new(3);
    let pts: Vec<f64> = (0..k).map(|_| rng.unit() * 10.0).collect();
    let m: Vec<f64> = (0..k * k)
        .map(|t| (pts[t / k] - pts[t % k]).abs())
        .collect();
    let a = greedy(&m, k, 4, SubsetKind::Similar, &mut Rng::new(9));
    assert_eq!(a, greedy(&m, k, 4, SubsetKind::Similar, &mut Rng::new(9)));
    let b = greedy(&m, k, 4, SubsetKind::Dissimilar, &mut Rng::new(9));
    assert!(a.median_icd < b.median_icd);
    let sweep = select_subsets(&m, k, 4, 5, 0);
    assert!(sweep.len() >= 3);
    assert!(sweep.windows(2).all(|w| w[0].median_icd <= w[1].median_icd));
}

#[test]
fn experiment_runs_all_variants_keeps_sub_at_least_all_and_resumes() {
    use qscope::laq::experiment::{run, ExperimentConfig};
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sample_models");
    let g = qscope::model::load(&base.join("resnet20.safetensors")).expect("load");
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = ExperimentConfig {
        subsets: vec![(vec![2, 3, 4, 5], 1.0)],
        bits: vec!["4".into()],
        calib: 32,
        ft: qscope::train::TrainConfig {
            epochs: 0.25,
            batch: 50,
            ..Default::default()
        },
        seed: 0,
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let cells = run(
        &g,
        &base.join("cifar10"),
        &cfg,
        dir.path(),
        &stop,
        &mut |_, _, _| {},
    )
    .expect("run");
    let variants: Vec<&str> = cells.iter().map(|c| c.variant.as_str()).collect();
    assert_eq!(variants, ["original", "ft", "quant", "ft+quant"]);
    assert!(
        cells.iter().all(|c| c.top1_sub >= c.top1_all),
        "Sub ≥ All for every model"
    );
    let mut called = 0;
    let again = run(
        &g,
        &base.join("cifar10"),
        &cfg,
        dir.path(),
        &stop,
        &mut |_, _, _| called += 1,
    )
    .expect("resume");
    assert_eq!(
        (again, called),
        (cells.clone(), 0),
        "finished cells are not recomputed"
    );
    // Another bit width into the same folder: progress counts this
    // configuration's cells (the 4-bit ones are not), so it ends at total.
    let three = ExperimentConfig {
        bits: vec!["3".into()],
        ..cfg.clone()
    };
    let mut progress = vec![];
    run(
        &g,
        &base.join("cifar10"),
        &three,
        dir.path(),
        &stop,
        &mut |_, done, total| progress.push((done, total)),
    )
    .expect("3 bits");
    assert_eq!(progress, [(3, 4), (4, 4)]);
    let svg = qscope::laq::chart::svg(&cells, "4", true);
    assert!(svg.starts_with("<svg") && svg.contains("polyline") && svg.ends_with("</svg>"));
}
