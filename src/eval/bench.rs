//! Latency at batch 1 (median, p90 and best over many runs) and throughput at batch
//! N, on a dedicated thread pool of the requested size.
use crate::engine::Tensor;
use crate::model::{forward, Graph};
use crate::util::Rng;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub images_per_s: f64,
    pub latency_ms_median: f64,
    pub latency_ms_p90: f64,
    /// The fastest single run: on a shared (noisy) machine, the figure
    /// least disturbed by other tenants, so the one to compare builds by.
    #[serde(default)]
    pub latency_ms_min: f64,
    pub batch: usize,
    pub threads: usize,
    /// Useful (model) FLOPs per second at batch N: 2·MACs·images/s.
    pub gflops: f64,
    /// Which kernels ran.
    pub path: String,
    /// Weights held in memory after the runs (`Graph::resident_weight_bytes`).
    #[serde(default)]
    pub weight_bytes: usize,
    /// The process's resident memory after the runs (Linux; 0 elsewhere).
    #[serde(default)]
    pub rss_bytes: usize,
}

/// Resident memory of this process (`VmRSS`), or 0 where /proc is missing.
pub fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

fn random_input(g: &Graph, n: usize) -> Tensor {
    let s = g.meta.input_size;
    let c = g.meta.input_channels;
    let mut rng = Rng::new(1);
    Tensor::from_shape_fn((n, c, s, s), |_| rng.normal() as f32)
}

/// Time `graph` (call on a fused graph). `budget` bounds each of the two phases.
pub fn bench(graph: &Graph, batch: usize, threads: usize, budget: Duration) -> Result<BenchReport> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| Error::Invalid(format!("thread pool: {e}")))?;
    pool.install(|| {
        let one = random_input(graph, 1);
        for _ in 0..5 {
            forward(graph, one.clone())?;
        }
        let mut lat = Vec::new();
        let start = Instant::now();
        while (lat.len() < 30 || start.elapsed() < budget) && lat.len() < 2000 {
            let input = one.clone();
            let t = Instant::now();
            forward(graph, input)?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        lat.sort_by(f64::total_cmp);
        let many = random_input(graph, batch.max(1));
        forward(graph, many.clone())?;
        let mut runs = 0usize;
        let mut busy = Duration::ZERO;
        let start = Instant::now();
        while runs < 3 || start.elapsed() < budget {
            // The input copy is the caller's, not the model's: not timed.
            let input = many.clone();
            let t = Instant::now();
            forward(graph, input)?;
            busy += t.elapsed();
            runs += 1;
        }
        let ips = (runs * batch.max(1)) as f64 / busy.as_secs_f64();
        Ok(BenchReport {
            images_per_s: ips,
            latency_ms_median: lat[lat.len() / 2],
            latency_ms_p90: lat[lat.len() * 9 / 10],
            latency_ms_min: lat[0],
            batch: batch.max(1),
            threads: threads.max(1),
            gflops: 2.0 * graph.macs_per_image() as f64 * ips / 1e9,
            path: format!(
                "{}; {}",
                crate::model::exec::path_summary(graph),
                cpu_features()
            ),
            weight_bytes: graph.resident_weight_bytes(),
            rss_bytes: rss_bytes(),
        })
    })
}

/// SIMD features detected at run time (never assumed at build time).
pub fn cpu_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let mut f = Vec::new();
        if std::arch::is_x86_feature_detected!("avx512f") {
            f.push("avx512f");
        }
        if std::arch::is_x86_feature_detected!("avx512vnni") {
            f.push("avx512vnni");
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            f.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            f.push("fma");
        }
        if f.is_empty() {
            return "portable".into();
        }
        let found = f.join("+");
        if crate::engine::kernels::direct_conv::avx2_forced() {
            // `--avx2`: say that the AVX-512 found is not what ran.
            return format!("{found}, kernels limited to avx2");
        }
        found
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "portable".into()
    }
}

/// Batch-1 median latency in ms on the current thread pool, for result tables.
pub fn latency_only(graph: &Graph, budget: Duration) -> Result<f64> {
    let one = random_input(graph, 1);
    forward(graph, one.clone())?;
    let mut lat = Vec::new();
    let start = Instant::now();
    while lat.len() < 10 || (start.elapsed() < budget && lat.len() < 500) {
        let t = Instant::now();
        forward(graph, one.clone())?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    Ok(lat[lat.len() / 2])
}
