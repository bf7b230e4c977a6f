//! Runs one `JobSpec`: load → (calibrate + quantize) → evaluate → size and
//! latency → result. Reports progress through `emit`; checks `cancel` between
//! layers and batches (a cancelled job saves nothing and touches nothing saved).
use crate::data::{parse_classes, sample_spread, DatasetRoot, Preprocess, SplitKind};
use crate::eval::accuracy::eval_indices;
use crate::eval::{size, EvalReport};
use crate::jobs::{JobEvent, JobSpec, Trace};
use crate::quant::{quantize_model, LayerReport, Method};
use crate::Result;
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    pub key: String,
    pub label: String,
    pub spec: JobSpec,
    pub arch: String,
    pub eval: EvalReport,
    pub layers: Vec<LayerReport>,
    /// Average bits per quantized weight (32 for FP).
    pub bits_avg: f64,
    /// Model size with weights bit-packed at their bit width, plus per-channel
    /// scales/zero points and the FP parameters (BN, biases).
    pub size_bytes: u64,
    pub fp32_bytes: u64,
    pub quantize_seconds: f64,
    pub total_seconds: f64,
    pub latency_ms: f64,
    /// Which kernel path the latency was measured on.
    pub latency_path: String,
    pub finished_unix: f64,
    /// The training curves and CoRa search as the job drew them (results
    /// saved before this field have none).
    #[serde(default)]
    pub trace: Trace,
}

/// The stage name of CoRa's rank search (what `qscope cora` times).
pub const CORA_STAGE: &str = "CoRa rank search";

pub fn run(
    spec: &JobSpec,
    cancel: &AtomicBool,
    emit: &mut dyn FnMut(JobEvent),
) -> Result<RunResult> {
    let mut trace = Trace::default();
    let mut result = run_job(spec, cancel, &mut |e| {
        trace.record(&e, spec);
        emit(e)
    })?;
    result.trace = trace;
    emit(JobEvent::Finished(Box::new(result.clone())));
    Ok(result)
}

/// The job itself; `run` adds what its events drew and reports it finished.
fn run_job(
    spec: &JobSpec,
    cancel: &AtomicBool,
    emit: &mut dyn FnMut(JobEvent),
) -> Result<RunResult> {
    let start = Instant::now();
    if let Some(c) = &spec.cora {
        check_cora(spec, c)?;
    }
    let graph = crate::model::load(&spec.model)?;
    emit(JobEvent::Started {
        layers: graph.layer_names(),
    });
    let root = DatasetRoot::open(&spec.data)?;
    emit(JobEvent::Stage {
        name: "loading test images".into(),
        done: 0,
        total: 1,
    });
    let test = root.split(SplitKind::Test)?;
    if spec
        .classes
        .as_ref()
        .is_some_and(|c| c.iter().all(|s| s.trim().is_empty()))
    {
        return Err(crate::Error::Invalid(
            "empty class subset: name at least one class, or leave the subset unset for all".into(),
        ));
    }
    let classes_spec = spec.classes.as_ref().map(|c| c.join(","));
    let classes = parse_classes(classes_spec.as_deref().unwrap_or("all"), &test.class_names)?;
    let subset = spec.classes.as_ref().map(|_| classes.clone());
    let pre = Preprocess::for_model(&graph.meta);
    let mut graph = graph;
    // 1. Training (FT, or QAT which also produces the quantized model).
    let mut trained_quant: Option<(
        crate::model::Graph,
        Vec<crate::quant::packing::QuantizedLayer>,
        Vec<u8>,
    )> = None;
    if let Some(t) = &spec.train {
        emit(JobEvent::Stage {
            name: "loading train images".into(),
            done: 0,
            total: 1,
        });
        let train = root.split(SplitKind::Train)?;
        let idx = eval_indices(&train, &classes, None);
        let (mut model, mut fq) = match t.qat_bits {
            Some(b) => {
                let bits = crate::quant::BitsMap::uniform(b);
                let (g, f) = crate::train::qat::prepare(&graph, &bits, t.act_bits)?;
                (g, Some((f, bits.resolve(&graph)?)))
            }
            None => (graph.clone(), None),
        };
        let mut cfg = t.config.clone();
        cfg.bn_train = cfg.bn_train && fq.is_none();
        let outcome = crate::train::finetune(
            &mut model,
            &train,
            &idx,
            &pre,
            &cfg,
            fq.as_mut().map(|f| &mut f.0),
            cancel,
            &mut |e| emit(JobEvent::TrainStep(e.clone())),
        );
        if let Err(crate::Error::Cancelled) = &outcome {
            // Keep what was trained so far.
            if let Some(path) = &spec.export {
                crate::model::export::save(&model, &[], path)?;
            }
        }
        outcome?;
        match fq {
            Some((f, bits)) => {
                let packed = crate::train::qat::finish(&mut model, &f);
                trained_quant = Some((model, packed, bits));
            }
            None => graph = model,
        }
    }
    // 2. Post-training quantization (and CoRa on top of it).
    let mut cora_export: Option<(crate::model::Graph, Vec<crate::train::cora_job::Adapter>)> = None;
    let (model, layers, bits_avg, size_bytes, qsecs, packed) = match (trained_quant, &spec.quant) {
        (Some((model, packed, bits)), _) => {
            let avg = crate::quant::BitsMap::average(&graph, &bits);
            let bytes = packed.iter().map(|p| p.stored_bytes()).sum::<usize>() as u64;
            (model, vec![], avg, bytes, 0.0, packed)
        }
        (None, None) => {
            let s = size::SizeReport::of(&graph);
            (
                graph.clone(),
                vec![],
                32.0,
                s.memory_bytes as u64,
                0.0,
                vec![],
            )
        }
        (None, Some(cfg)) => {
            if spec.calib == 0 {
                return Err(crate::Error::Invalid(
                    "calibration size must be at least 1 image".into(),
                ));
            }
            emit(JobEvent::Stage {
                name: "loading train images".into(),
                done: 0,
                total: 1,
            });
            let train = root.split(SplitKind::Train)?;
            let idx = sample_spread(&train, &classes, spec.calib, spec.seed)?;
            // Before the batch and the pipeline's activations are allocated.
            super::calib_memory::check(&graph, idx.len())?;
            super::calib_memory::check_gram(&graph, cfg.method)?;
            let calib = pre.batch(&train, &idx);
            let mut cfg = cfg.clone();
            cfg.seed = spec.seed;
            let out = quantize_model(&graph, &calib, &cfg, cancel, &mut |r, done, total| {
                emit(JobEvent::LayerDone {
                    report: Box::new(r.clone()),
                    done,
                    total,
                });
            })?;
            let avg = crate::quant::BitsMap::average(&graph, &out.bits);
            let mut bytes = out.stored_bytes();
            let mut model = out.graph;
            if let Some(c) = &spec.cora {
                emit(JobEvent::Stage {
                    name: CORA_STAGE.into(),
                    done: 0,
                    total: c.iterations,
                });
                let iterations = c.iterations;
                let sink = std::cell::RefCell::new(&mut *emit);
                let co = crate::train::cora_job::apply(
                    &graph,
                    &model,
                    c,
                    &train,
                    &idx,
                    spec.seed,
                    cancel,
                    &mut |sp| (sink.borrow_mut())(JobEvent::CoraSpectra(sp.to_vec())),
                    &mut |st| {
                        let mut e = sink.borrow_mut();
                        e(JobEvent::Stage {
                            name: CORA_STAGE.into(),
                            done: st.iteration,
                            total: iterations,
                        });
                        e(JobEvent::CoraStep(st.clone()));
                    },
                )?;
                emit(JobEvent::CoraRanks {
                    ranks: co.ranks.clone(),
                    rank_max: co.rank_max.clone(),
                    extra_params: co.extra_params,
                    conv_params: co.conv_params,
                    candidates: co.candidates.clone(),
                });
                bytes += (co.extra_params * 4) as u64;
                cora_export = Some((model.clone(), co.adapters));
                model = co.graph;
            }
            (model, out.layers, avg, bytes, out.seconds, out.packed)
        }
    };
    let mut fused = model.fused();
    // Evaluated and timed as deployed: integer layers keep only their codes.
    fused.release_f32_weights();
    let idx = eval_indices(&test, &classes, spec.eval_limit);
    // The quantized model's own normalisation (SmoothQuant folds input scales into it).
    let eval_pre = Preprocess::for_model(&fused.meta);
    let eval = crate::eval::evaluate(
        &fused,
        &test,
        &idx,
        &eval_pre,
        subset.as_deref(),
        256,
        cancel,
        &mut |d, t| {
            emit(JobEvent::Stage {
                name: "evaluating".into(),
                done: d,
                total: t,
            });
        },
    )?;
    emit(JobEvent::Evaluated(Box::new(eval.clone())));
    let lat = crate::eval::bench::latency_only(&fused, Duration::from_millis(300))?;
    if let Some(path) = &spec.export {
        match &cora_export {
            // The quantized model (packed) plus the adapters as their own tensors.
            Some((quantized, adapters)) => {
                crate::model::export::save_with_adapters(quantized, &packed, adapters, path)?
            }
            None => crate::model::export::save(&model, &packed, path)?,
        }
    }
    let result = RunResult {
        key: spec.key(),
        label: spec.label(),
        spec: spec.clone(),
        arch: graph.meta.arch.clone(),
        eval,
        layers,
        bits_avg,
        size_bytes,
        fp32_bytes: (graph.param_count() * 4) as u64,
        quantize_seconds: qsecs,
        total_seconds: start.elapsed().as_secs_f64(),
        latency_ms: lat,
        latency_path: crate::model::exec::path_summary(&fused),
        finished_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
        trace: Trace::default(),
    };
    Ok(result)
}

/// A CoRa spec that cannot run is refused before anything is loaded: the
/// rank search comes last, after the whole quantization.
fn check_cora(spec: &JobSpec, c: &crate::train::cora_job::CoraSpec) -> Result<()> {
    c.validate()?;
    let qat = spec.train.as_ref().is_some_and(|t| t.qat_bits.is_some());
    match &spec.quant {
        _ if qat => Err(crate::Error::Invalid(
            "CoRa adds adapters to a post-training quantization, not to a QAT model".into(),
        )),
        None => Err(crate::Error::Invalid(
            "CoRa needs a quantizer (rtn, gptq or gpfq) whose residual it reclaims".into(),
        )),
        Some(q) if !matches!(q.method, Method::Rtn | Method::Gptq | Method::Gpfq) => {
            Err(crate::Error::Invalid(format!(
                "CoRa needs an RTN, GPTQ or GPFQ base, not {}",
                q.method.name()
            )))
        }
        Some(_) => Ok(()),
    }
}
