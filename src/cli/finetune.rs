use super::progress::Progress;
use clap::Args;
use qscope::data::{parse_classes, DatasetRoot, Preprocess, SplitKind};
use qscope::eval::accuracy::eval_indices;
use qscope::quant::BitsMap;
use qscope::train::optim::{OptimKind, Schedule};
use qscope::train::{finetune, TrainConfig};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset root: trains on train/, evaluates on test/.
    #[arg(long)]
    pub data: PathBuf,
    /// Train on (and evaluate) this class subset only (LAQ's "FT").
    #[arg(long)]
    pub classes: Option<String>,
    #[arg(long, default_value_t = 1.0)]
    pub epochs: f64,
    #[arg(long, default_value_t = 128, value_parser = super::at_least_one)]
    pub batch: usize,
    /// Learning rate [default: 0.01; 0.002 with --qat-bits, as in the
    /// dashboard: the BN-folded network QAT trains has no normalisation to
    /// absorb a large step, and at 0.01 it diverged].
    #[arg(long)]
    pub lr: Option<f64>,
    /// sgd, adam or adamw.
    #[arg(long, default_value = "sgd")]
    pub optimizer: String,
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// cosine, step or constant.
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    #[arg(long)]
    pub no_augment: bool,
    /// Keep BatchNorm statistics frozen (eval-mode BN).
    #[arg(long)]
    pub frozen_bn: bool,
    /// Quantization-aware training at this many weight bits (per channel).
    #[arg(long)]
    pub qat_bits: Option<u8>,
    /// With --qat-bits: bit-map preset (uniform, 5+3, 3+5, 8-ends), as for `quantize`.
    #[arg(long, default_value = "uniform")]
    pub preset: String,
    /// With --qat-bits: per-layer overrides, e.g. `conv1=8,linear=8`.
    #[arg(long)]
    pub bits_map: Option<String>,
    /// With --qat-bits: also fake-quantize activations (e.g. 8 for W8A8).
    #[arg(long)]
    pub act_bits: Option<u8>,
    /// Limit the training images (balanced over classes).
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to save the trained model (safetensors, same tensor names).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

/// The dashboard's QAT learning rate (`app::setup`), shared so both agree.
const QAT_LR: f64 = qscope::train::qat::DEFAULT_LR;

pub fn run(a: FinetuneArgs) -> anyhow::Result<()> {
    let graph = qscope::model::load(&a.model)?;
    let root = DatasetRoot::open(&a.data)?;
    let train = root.split(SplitKind::Train)?;
    let test = root.split(SplitKind::Test)?;
    let classes = parse_classes(a.classes.as_deref().unwrap_or("all"), &train.class_names)?;
    let subset = a.classes.as_ref().map(|_| classes.clone());
    let idx = eval_indices(&train, &classes, a.limit);
    let pre = Preprocess::for_model(&graph.meta);
    let cfg = TrainConfig {
        epochs: a.epochs,
        batch: a.batch,
        lr: a
            .lr
            .unwrap_or(if a.qat_bits.is_some() { QAT_LR } else { 0.01 }),
        optimizer: match a.optimizer.as_str() {
            "sgd" => OptimKind::Sgd,
            "adam" => OptimKind::Adam,
            "adamw" => OptimKind::Adamw,
            o => anyhow::bail!("unknown optimizer `{o}` (sgd, adam, adamw)"),
        },
        momentum: 0.9,
        weight_decay: a.weight_decay,
        schedule: match a.schedule.as_str() {
            "cosine" => Schedule::Cosine,
            "step" => Schedule::Step,
            "constant" => Schedule::Constant,
            s => anyhow::bail!("unknown schedule `{s}` (cosine, step, constant)"),
        },
        augment: !a.no_augment,
        seed: a.seed,
        bn_train: !a.frozen_bn && a.qat_bits.is_none(),
    };
    let (mut model, mut fq) = match a.qat_bits {
        Some(b) => {
            let overrides = a
                .bits_map
                .as_deref()
                .map(BitsMap::parse_overrides)
                .transpose()?
                .unwrap_or_default();
            let map = BitsMap {
                bits: b,
                preset: a.preset.clone(),
                overrides,
            };
            let (g, f) = qscope::train::qat::prepare(&graph, &map, a.act_bits)?;
            (g, Some(f))
        }
        None => (graph.clone(), None),
    };
    let mut progress = Progress::new("training");
    let mut last = None;
    let report = finetune(
        &mut model,
        &train,
        &idx,
        &pre,
        &cfg,
        fq.as_mut(),
        &AtomicBool::new(false),
        &mut |e| {
            progress.update(e.step, e.steps);
            last = Some(e.clone());
        },
    )?;
    drop(progress);
    let packed = match fq.as_ref() {
        Some(f) => qscope::train::qat::finish(&mut model, f),
        None => vec![],
    };
    let fused = model.fused();
    let tidx = eval_indices(&test, &classes, None);
    let eval = qscope::eval::evaluate(
        &fused,
        &test,
        &tidx,
        &Preprocess::for_model(&fused.meta),
        subset.as_deref(),
        256,
        &AtomicBool::new(false),
        &mut |_, _| {},
    )?;
    if let Some(out) = &a.out {
        qscope::model::export::save(&model, &packed, out)?;
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "top1_all": eval.top1_all, "top1_sub": eval.top1_sub, "images": eval.images,
                "train_images_per_s": report.images_per_s, "train_seconds": report.seconds, "steps": report.steps,
                "final_loss": report.final_loss, "qat_bits": a.qat_bits, "act_bits": a.act_bits,
            })
        );
    } else {
        let l = last.map_or(String::new(), |e| {
            format!(
                "last loss {:.3}, batch accuracy {:.1} %",
                e.loss,
                100.0 * e.accuracy
            )
        });
        println!(
            "{} trained {} steps ({} images, {:.0} images/s, {:.0} s); {l}\ntest top-1 All {:.2} %{}",
            graph.meta.arch,
            report.steps,
            report.images,
            report.images_per_s,
            report.seconds,
            eval.top1_all,
            eval.top1_sub.map_or(String::new(), |s| format!(", Sub {s:.2} %"))
        );
    }
    Ok(())
}
