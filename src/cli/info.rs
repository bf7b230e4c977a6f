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
    // What each layer is stored as: its codes' bits, or f32; "+a8" when its
    // input is quantized to int8 too (W8A8), "+r11" with a rank-11 CoRa
    // adapter (added to its weight, so the layer runs in f32).
    let stored = |name: &str, node: usize| {
        let mut w = g
            .stored_bits(name)
            .map_or("f32".to_string(), |b| format!("w{b}"));
        if g.quantizes_input(node) {
            w += "+a8";
        }
        if let Some(r) = g.meta.adapter_ranks.get(name) {
            w += &format!("+r{r}");
        }
        w
    };
    // The kernels inference would run here (the fused graph decides).
    let kernels = qscope::model::exec::path_summary(&g.fused());
    if a.json {
        let rows: Vec<_> = layers
            .iter()
            .map(|l| serde_json::json!({"name": l.name, "op": l.kind, "shape": l.shape, "params": l.params, "macs": l.macs,
                "bits": g.stored_bits(&l.name), "int8_input": g.quantizes_input(l.node),
                "adapter_rank": g.meta.adapter_ranks.get(&l.name)}))
            .collect();
        let out = serde_json::json!({
            "arch": g.meta.arch, "family": g.meta.family, "classes": g.meta.num_classes,
            "input": [g.meta.input_channels, g.meta.input_size, g.meta.input_size],
            "params": g.param_count(), "macs": g.macs_per_image(), "kernels": kernels, "layers": rows,
        });
        println!("{out}");
        return Ok(());
    }
    println!("{}", g.brief());
    println!("kernels here: {kernels}");
    println!(
        "{:<28} {:<7} {:<18} {:>10} {:>12}  stored",
        "layer", "op", "weight shape", "params", "MACs"
    );
    for l in &layers {
        let shape = format!(
            "{}x{}x{}x{}",
            l.shape[0], l.shape[1], l.shape[2], l.shape[3]
        );
        println!(
            "{:<28} {:<7} {:<18} {:>10} {:>12}  {}",
            l.name,
            l.kind,
            shape,
            l.params,
            l.macs,
            stored(&l.name, l.node)
        );
    }
    println!("{} quantizable layers", layers.len());
    Ok(())
}
