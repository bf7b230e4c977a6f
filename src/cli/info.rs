use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Model file (safetensors).
    pub model: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: InfoArgs) -> anyhow::Result<()> {
    let g = qscope::model::load(&a.model)?;
    let layers = g.layers();
    if a.json {
        let rows: Vec<_> = layers
            .iter()
            .map(|l| serde_json::json!({"name": l.name, "op": l.kind, "shape": l.shape, "params": l.params, "macs": l.macs}))
            .collect();
        let out = serde_json::json!({
            "arch": g.meta.arch, "family": g.meta.family, "classes": g.meta.num_classes,
            "input": [g.meta.input_channels, g.meta.input_size, g.meta.input_size],
            "params": g.param_count(), "macs": g.macs_per_image(), "layers": rows,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "{}  ({:?}, {} classes, input {}x{}x{}, {} parameters, {:.1} MMACs/image)",
        g.meta.arch,
        g.meta.family,
        g.meta.num_classes,
        g.meta.input_channels,
        g.meta.input_size,
        g.meta.input_size,
        g.param_count(),
        g.macs_per_image() as f64 / 1e6
    );
    println!(
        "{:<28} {:<7} {:<18} {:>10} {:>12}",
        "layer", "op", "weight shape", "params", "MACs"
    );
    for l in &layers {
        let shape = format!(
            "{}x{}x{}x{}",
            l.shape[0], l.shape[1], l.shape[2], l.shape[3]
        );
        println!(
            "{:<28} {:<7} {:<18} {:>10} {:>12}",
            l.name, l.kind, shape, l.params, l.macs
        );
    }
    println!("{} quantizable layers", layers.len());
    Ok(())
}
