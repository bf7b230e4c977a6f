use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model file (safetensors).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value_t = 256, value_parser = super::at_least_one)]
    pub batch: usize,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seconds per phase (latency, throughput).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    #[arg(long)]
    pub json: bool,
    /// Run quantized layers as the f32 simulation instead of their integer kernels.
    #[arg(long)]
    pub simulate: bool,
    /// Use the AVX2 kernels (f32 direct and Winograd; int8 integer Winograd for 3×3
    /// stride-1 layers, else maddubs for ≤ 7-bit weights or 16-bit pairs) even on an
    /// AVX-512 CPU: what AVX2-only machines get.
    #[arg(long)]
    pub avx2: bool,
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let mut graph = qscope::model::load(&a.model)?.into_fused();
    qscope::model::exec::set_integer_paths(!a.simulate);
    qscope::engine::kernels::direct_conv::force_avx2(a.avx2);
    // After the path switches: they decide which layers run from codes.
    graph.release_f32_weights();
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let r = qscope::eval::bench(&graph, a.batch, threads, Duration::from_secs_f64(a.seconds))?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!("{} ({}), {} thread(s)", graph.meta.arch, r.path, r.threads);
    println!(
        "  batch 1:   median {:.3} ms, p90 {:.3} ms, best {:.3} ms",
        r.latency_ms_median, r.latency_ms_p90, r.latency_ms_min
    );
    println!(
        "  batch {}: {:.0} images/s, {:.1} GFLOP/s",
        r.batch, r.images_per_s, r.gflops
    );
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    println!(
        "  memory: weights {:.2} MiB (f32 copies, transforms and codes held), process {:.1} MiB",
        mib(r.weight_bytes),
        mib(r.rss_bytes)
    );
    Ok(())
}
