//! The LAQ experiment: for each class subset, Original / Quant (GPFQ
//! calibrated on the subset's train split) / FT (fine-tuned on it) /
//! FT+Quant, evaluated on the subset's test images with All and Sub top-1,
//! at several bit widths and the 5+3 / 3+5 mixed presets. Resumable: every
//! finished cell is in the CSV (rewritten atomically after each cell) and
//! fine-tuned models are kept as checkpoints, so a re-run skips done work.
use crate::data::{default_calib, sample_spread, DatasetRoot, Preprocess, SplitKind};
use crate::eval::accuracy::eval_indices;
use crate::model::Graph;
use crate::quant::{quantize_model, BitsMap, Method, QuantConfig};
use crate::train::{finetune, TrainConfig};
use crate::util::write_atomic;
use crate::{Error, Result};
use std::path::Path;
use std::sync::atomic::AtomicBool;

#[derive(Clone, Debug)]
pub struct ExperimentConfig {
    /// Subsets as class indices, with their median ICD.
    pub subsets: Vec<(Vec<usize>, f64)>,
    /// Bit settings: "4", "3", "2", "5+3", "3+5".
    pub bits: Vec<String>,
    /// GPFQ calibration images per subset: at most this many (a subset
    /// with fewer train images, as in a small dataset, uses all of them).
    pub calib: usize,
    pub ft: TrainConfig,
    pub seed: u64,
}

/// A subset's name in the CSV: its class names joined by `+`.
fn subset_name(classes: &[usize], test: &crate::data::Split) -> String {
    classes
        .iter()
        .map(|&c| test.class_names[c].as_str())
        .collect::<Vec<_>>()
        .join("+")
}

#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub subset: String,
    pub median_icd: f64,
    pub variant: String,
    pub bits: String,
    pub top1_all: f64,
    pub top1_sub: f64,
}

const HEADER: &str = "subset,median_icd,variant,bits,top1_all,top1_sub";

/// The cells of a `laq.csv` (empty if missing or unreadable).
pub fn read_cells(csv: &Path) -> Vec<Cell> {
    let Ok(text) = std::fs::read_to_string(csv) else {
        return vec![];
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f.len() == 6).then(|| Cell {
                subset: f[0].to_string(),
                median_icd: f[1].parse().unwrap_or(0.0),
                variant: f[2].to_string(),
                bits: f[3].to_string(),
                top1_all: f[4].parse().unwrap_or(0.0),
                top1_sub: f[5].parse().unwrap_or(0.0),
            })
        })
        .collect()
}

fn write_cells(csv: &Path, cells: &[Cell]) -> Result<()> {
    let mut s = String::from(HEADER);
    s.push('\n');
    for c in cells {
        s.push_str(&format!(
            "{},{:.4},{},{},{:.2},{:.2}\n",
            c.subset, c.median_icd, c.variant, c.bits, c.top1_all, c.top1_sub
        ));
    }
    write_atomic(csv, s.as_bytes())
}

fn bits_map(b: &str) -> Result<BitsMap> {
    Ok(match b {
        "5+3" | "3+5" => BitsMap {
            bits: 4,
            preset: b.into(),
            overrides: vec![],
        },
        _ => BitsMap::uniform(
            b.parse()
                .map_err(|_| Error::Invalid(format!("bit setting `{b}` is not 2–8, 5+3 or 3+5")))?,
        ),
    })
}

/// Run (or resume) the experiment; results in `out_dir/laq.csv`.
pub fn run(
    graph: &Graph,
    data: &Path,
    cfg: &ExperimentConfig,
    out_dir: &Path,
    cancel: &AtomicBool,
    on_cell: &mut dyn FnMut(&Cell, usize, usize),
) -> Result<Vec<Cell>> {
    let root = DatasetRoot::open(data)?;
    let (train, test) = (root.split(SplitKind::Train)?, root.split(SplitKind::Test)?);
    let pre = Preprocess::for_model(&graph.meta);
    let csv = out_dir.join("laq.csv");
    let mut cells = read_cells(&csv);
    let per_subset = 2 + 2 * cfg.bits.len();
    let total = cfg.subsets.len() * per_subset;
    // Progress counts this configuration's cells only: the CSV may also hold
    // cells of other subsets or bit widths from earlier runs into the folder.
    let names: Vec<String> = cfg
        .subsets
        .iter()
        .map(|(c, _)| subset_name(c, &test))
        .collect();
    let ours = |cells: &[Cell]| {
        cells
            .iter()
            .filter(|c| names.contains(&c.subset) && (c.bits == "fp" || cfg.bits.contains(&c.bits)))
            .count()
    };
    for (classes, median) in &cfg.subsets {
        let name = subset_name(classes, &test);
        let tidx = eval_indices(&test, classes, None);
        let eval = |g: &Graph| -> Result<(f64, f64)> {
            let f = g.fused();
            let r = crate::eval::evaluate(
                &f,
                &test,
                &tidx,
                &Preprocess::for_model(&f.meta),
                Some(classes),
                256,
                cancel,
                &mut |_, _| {},
            )?;
            Ok((r.top1_all, r.top1_sub.unwrap_or(0.0)))
        };
        let done = |cells: &[Cell], v: &str, b: &str| {
            cells
                .iter()
                .any(|c| c.subset == name && c.variant == v && c.bits == b)
        };
        let mut record =
            |cells: &mut Vec<Cell>, v: &str, b: &str, (all, sub): (f64, f64)| -> Result<()> {
                let cell = Cell {
                    subset: name.clone(),
                    median_icd: *median,
                    variant: v.into(),
                    bits: b.into(),
                    top1_all: all,
                    top1_sub: sub,
                };
                cells.push(cell.clone());
                write_cells(&csv, cells)?;
                on_cell(&cell, ours(cells), total);
                Ok(())
            };
        if !done(&cells, "original", "fp") {
            let r = eval(graph)?;
            record(&mut cells, "original", "fp", r)?;
        }
        // Fine-tuned model: reuse the checkpoint when a previous run made it.
        let ck = out_dir.join(format!("ft_{name}.safetensors"));
        let needs_ft =
            !done(&cells, "ft", "fp") || cfg.bits.iter().any(|b| !done(&cells, "ft+quant", b));
        let ft = if needs_ft {
            Some(if ck.exists() {
                crate::model::load(&ck)?
            } else {
                let mut g = graph.clone();
                let idx = eval_indices(&train, classes, None);
                finetune(
                    &mut g,
                    &train,
                    &idx,
                    &pre,
                    &cfg.ft,
                    None,
                    cancel,
                    &mut |_| {},
                )?;
                crate::model::export::save(&g, &[], &ck)?;
                g
            })
        } else {
            None
        };
        if let (Some(g), false) = (&ft, done(&cells, "ft", "fp")) {
            let r = eval(g)?;
            record(&mut cells, "ft", "fp", r)?;
        }
        let n = default_calib(&train, classes, cfg.calib);
        crate::jobs::calib_memory::check(graph, n)?;
        crate::jobs::calib_memory::check_gram(graph, crate::quant::Method::Gpfq)?;
        let cidx = sample_spread(&train, classes, n, cfg.seed)?;
        let calib = pre.batch(&train, &cidx);
        for b in &cfg.bits {
            for (variant, base) in [("quant", Some(graph)), ("ft+quant", ft.as_ref())] {
                if done(&cells, variant, b) {
                    continue;
                }
                let Some(base) = base else { continue };
                let mut q = QuantConfig::new(Method::Gpfq, 4);
                q.bits = bits_map(b)?;
                q.seed = cfg.seed;
                let out = quantize_model(base, &calib, &q, cancel, &mut |_, _, _| {})?;
                let r = eval(&out.graph)?;
                record(&mut cells, variant, b, r)?;
            }
        }
    }
    Ok(cells)
}
