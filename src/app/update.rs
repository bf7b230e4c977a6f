//! The only place state changes. Keys are documented in `HELP`.
use crate::app::action::{Action, Effect, Key};
use crate::app::setup::{set_entry, Field};
use crate::app::state::{LiveRun, RunStatus, Screen, SortKey, State};
use crate::jobs::{JobEvent, JobSpec};

/// Every key, for the help overlay (`?`).
pub const HELP: &[(&str, &str)] = &[
    ("1-8, Tab", "switch screen (the tabs at the top, in order)"),
    ("?", "this help"),
    ("t", "next theme"),
    ("x", "cancel the running job"),
    ("q", "quit (cancels a running job; saved results stay)"),
    ("Setup ↑/↓", "move between fields"),
    (
        "Setup ←/→",
        "change the value; on Classes move the class cursor",
    ),
    (
        "Setup space",
        "on Classes: select/deselect the class under the cursor",
    ),
    ("Setup a", "on Classes: clear the selection (all classes)"),
    (
        "Setup e",
        "on Model/Dataset: type a path; Enter accepts, Esc cancels",
    ),
    (
        "Setup Tab ^U ^W",
        "typing a path: complete it / clear it / erase a folder",
    ),
    ("Setup Enter", "queue the job (defaults: 4-bit GPTQ)"),
    ("Layers ↑/↓", "select a layer"),
    ("Layers Enter", "open the layer's histogram"),
    ("Layers +/-", "what-if: change the selected layer's bits"),
    ("Layers r", "re-run the shown job with the changed bits"),
    ("Histogram ←/→", "previous / next layer"),
    ("Histogram o", "overlay or stack FP and quantized"),
    ("Results ↑/↓", "select a run; Enter shows its layers"),
    ("Results s / S", "sort by the next column / reverse"),
    ("Results space", "mark for comparison (two marks, then c)"),
    ("Results c", "compare the two marked runs layer by layer"),
    ("Results e", "export the table to results/results.csv"),
    ("Compare ↑/↓", "move through the layers"),
    ("CoRa ↑/↓", "select a layer (its spectrum and cut-off)"),
    ("Subsets ↑/↓", "select a subset (bright in the embedding)"),
    ("Subsets Enter", "use the subset as the next job's classes"),
];

pub fn update(s: &mut State, action: Action) -> Vec<Effect> {
    match action {
        Action::Resize(w, h) => {
            s.size = (w, h);
            vec![]
        }
        Action::Tick => vec![],
        Action::Click(_, row) => click(s, row),
        Action::Job { job, event } => job_event(s, job, event),
        Action::Key(k) => key(s, k),
        Action::Classes(Ok(names)) => {
            s.set_classes(names);
            vec![]
        }
        Action::Classes(Err(e)) => {
            s.set_classes(vec![]);
            s.message = Some(e);
            vec![]
        }
        Action::PathCompleted { typed, completion } => {
            // Only if nothing was typed while the folder was listed.
            if s.setup.editing.as_deref() == Some(typed.as_str()) {
                s.setup.editing = Some(completion.text);
                if !completion.choices.is_empty() {
                    s.message = Some(completion.choices.join("  "));
                }
            }
            vec![]
        }
        Action::DatasetInfo { path, info } => {
            set_entry(&mut s.setup.dataset_info, path, info);
            vec![]
        }
        Action::ModelInfo { path, info } => {
            if let Err(e) = &info {
                if s.setup.models.get(s.setup.model) == Some(&path) {
                    s.message = Some(e.clone());
                }
            }
            s.setup.inspecting.retain(|p| *p != path);
            set_entry(&mut s.setup.model_info, path, info);
            vec![]
        }
    }
}

/// Load the chosen model's info unless it is there or on its way.
fn inspect_chosen(s: &mut State) -> Vec<Effect> {
    let f = &mut s.setup;
    match f.models.get(f.model).cloned() {
        Some(p) if f.chosen_model_info().is_none() && !f.inspecting.contains(&p) => {
            f.inspecting.push(p.clone());
            vec![Effect::InspectModel(p)]
        }
        _ => vec![],
    }
}

fn key(s: &mut State, k: Key) -> Vec<Effect> {
    if s.setup.editing.is_some() {
        return edit_key(s, k);
    }
    if s.help {
        match k {
            Key::Esc | Key::Char('?') | Key::Char('q') | Key::Enter => s.help = false,
            // The view clamps it to what the terminal's height leaves.
            Key::Down | Key::PageDown => s.help_scroll = (s.help_scroll + 1).min(HELP.len()),
            Key::Up | Key::PageUp => s.help_scroll = s.help_scroll.saturating_sub(1),
            _ => {}
        }
        return vec![];
    }
    match k {
        Key::Char('q') => {
            s.quit = true;
            let mut fx: Vec<Effect> = s
                .running()
                .map(|r| Effect::CancelJob { id: r.job })
                .into_iter()
                .collect();
            fx.push(Effect::Quit);
            return fx;
        }
        Key::Char('?') => {
            s.help = true;
            s.help_scroll = 0;
            return vec![];
        }
        Key::Char('t') => {
            s.theme = (s.theme + 1) % s.theme_names.len().max(1);
            s.message = s.theme_names.get(s.theme).map(|t| format!("theme: {t}"));
            return vec![];
        }
        Key::Char('x') => {
            return match s.running().map(|r| (r.job, r.label.clone())) {
                Some((job, label)) => {
                    s.message = Some(format!("cancelling {label}…"));
                    vec![Effect::CancelJob { id: job }]
                }
                None => {
                    s.message = Some("no job is running".into());
                    vec![]
                }
            };
        }
        Key::Char(c @ '1'..='8') => {
            s.screen = Screen::TABS[(c as u8 - b'1') as usize];
            return vec![];
        }
        Key::Tab | Key::BackTab => {
            let i = Screen::TABS
                .iter()
                .position(|t| *t == s.screen)
                .unwrap_or(0);
            let n = Screen::TABS.len();
            s.screen = Screen::TABS[if k == Key::Tab {
                (i + 1) % n
            } else {
                (i + n - 1) % n
            }];
            return vec![];
        }
        Key::Esc => {
            s.message = None;
            return vec![];
        }
        _ => {}
    }
    match s.screen {
        Screen::Setup => setup_key(s, k),
        Screen::Layers => layers_key(s, k),
        Screen::Histogram => histogram_key(s, k),
        Screen::Results => results_key(s, k),
        Screen::Compare => compare_key(s, k),
        Screen::Training => vec![],
        Screen::Cora => histogram_key(s, k),
        Screen::Subsets => subsets_key(s, k),
    }
}

fn edit_key(s: &mut State, k: Key) -> Vec<Effect> {
    let Some(text) = s.setup.editing.as_mut() else {
        return vec![];
    };
    match k {
        Key::Char(c) => text.push(c),
        Key::Backspace => {
            text.pop();
        }
        Key::Ctrl('u') => text.clear(),
        Key::Ctrl('w') => *text = crate::app::path_complete::erase_component(text),
        Key::Tab => {
            return vec![Effect::CompletePath {
                typed: text.clone(),
                models: s.setup.field() == Field::Model,
            }]
        }
        Key::Esc => s.setup.editing = None,
        Key::Enter => {
            let path = std::path::PathBuf::from(text.trim());
            s.setup.editing = None;
            if path.as_os_str().is_empty() {
                return vec![];
            }
            // A path already on the list is chosen, not added twice.
            let pick = |list: &mut Vec<std::path::PathBuf>| {
                list.iter().position(|p| *p == path).unwrap_or_else(|| {
                    list.push(path.clone());
                    list.len() - 1
                })
            };
            return match s.setup.field() {
                Field::Model => {
                    s.setup.model = pick(&mut s.setup.models);
                    // Typed anew: load it again (the file may have changed).
                    s.setup.model_info.retain(|(p, _)| *p != path);
                    inspect_chosen(s)
                }
                _ => {
                    s.setup.dataset = pick(&mut s.setup.datasets);
                    vec![Effect::LoadClasses(path)]
                }
            };
        }
        _ => {}
    }
    vec![]
}

fn setup_key(s: &mut State, k: Key) -> Vec<Effect> {
    let f = &mut s.setup;
    let n = Field::ALL.len();
    match k {
        Key::Up => f.focus = (f.focus + n - 1) % n,
        Key::Down => f.focus = (f.focus + 1) % n,
        Key::Left | Key::Right => {
            let before = f.dataset;
            f.adjust(if k == Key::Left { -1 } else { 1 });
            if f.field() == Field::Data && f.dataset != before {
                if let Some(p) = f.datasets.get(f.dataset) {
                    return vec![Effect::LoadClasses(p.clone())];
                }
            }
            if f.field() == Field::Model {
                return inspect_chosen(s);
            }
        }
        Key::Char(' ') if f.field() == Field::Classes => {
            if let Some(sel) = f.selected.get_mut(f.class_cursor) {
                *sel = !*sel;
            }
        }
        Key::Char('a') if f.field() == Field::Classes => {
            f.selected.iter_mut().for_each(|v| *v = false)
        }
        Key::Char('e') if matches!(f.field(), Field::Model | Field::Data) => {
            let current = if f.field() == Field::Model {
                f.models.get(f.model)
            } else {
                f.datasets.get(f.dataset)
            };
            f.editing = Some(current.map(|p| p.display().to_string()).unwrap_or_default());
        }
        Key::Enter => {
            return match s.setup.spec() {
                Ok(spec) => enqueue(s, spec),
                Err(e) => {
                    s.message = Some(e);
                    vec![]
                }
            }
        }
        _ => {}
    }
    vec![]
}

/// Queue a job; start it now if nothing is running. Shows its Layers screen.
pub fn enqueue(s: &mut State, spec: JobSpec) -> Vec<Effect> {
    let id = s.next_job;
    s.next_job += 1;
    let label = spec.label();
    s.runs.push(LiveRun {
        job: id,
        spec,
        label: label.clone(),
        layer_names: vec![],
        layers: vec![],
        stage: None,
        status: RunStatus::Queued,
        result: None,
        trace: Default::default(),
    });
    s.current = Some(s.runs.len() - 1);
    s.layer_cursor = 0;
    s.screen = Screen::Layers;
    if s.running().is_some() {
        s.message = Some(format!("queued {label} (job {id})"));
        return vec![];
    }
    start_next(s)
}

fn start_next(s: &mut State) -> Vec<Effect> {
    if s.running().is_some() {
        return vec![];
    }
    match s.runs.iter_mut().find(|r| r.status == RunStatus::Queued) {
        Some(r) => {
            r.status = RunStatus::Running;
            // The status bar shows the running job and its stage, so the
            // message is left as it was: a "running …" message only repeated
            // it (and on 80 columns pushed the stage off), and replacing the
            // previous job's "failed: …" hid why it failed.
            vec![Effect::StartJob {
                id: r.job,
                spec: Box::new(r.spec.clone()),
            }]
        }
        None => vec![],
    }
}

fn layers_key(s: &mut State, k: Key) -> Vec<Effect> {
    let n = s.current_run().map_or(0, |r| r.layer_names.len());
    match k {
        Key::Up => s.layer_cursor = s.layer_cursor.saturating_sub(1),
        Key::Down if n > 0 => s.layer_cursor = (s.layer_cursor + 1).min(n - 1),
        Key::PageUp => s.layer_cursor = s.layer_cursor.saturating_sub(10),
        Key::PageDown if n > 0 => s.layer_cursor = (s.layer_cursor + 10).min(n - 1),
        Key::Enter if n > 0 => s.screen = Screen::Histogram,
        Key::Char(c @ ('+' | '-' | '=')) => {
            let Some(run) = s.current_run() else {
                return vec![];
            };
            let Some(name) = run.layer_names.get(s.layer_cursor).cloned() else {
                return vec![];
            };
            let base = run
                .layers
                .get(s.layer_cursor)
                .and_then(|l| l.as_ref())
                .map_or(s.setup.bits, |l| l.bits);
            let ov = &mut s.setup.overrides;
            let cur = ov
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(base, |(_, b)| *b);
            let new = if c == '-' {
                cur.saturating_sub(1).max(2)
            } else {
                (cur + 1).min(8)
            };
            ov.retain(|(n, _)| *n != name);
            ov.push((name.clone(), new));
            s.message = Some(format!("what-if: {name} at {new} bits — press r to re-run"));
        }
        Key::Char('r') => {
            let Some(run) = s.current_run() else {
                return vec![];
            };
            let mut spec = run.spec.clone();
            if let Some(q) = &mut spec.quant {
                for (name, b) in &s.setup.overrides {
                    q.bits.overrides.retain(|(n, _)| n != name);
                    q.bits.overrides.push((name.clone(), *b));
                }
            }
            return enqueue(s, spec);
        }
        _ => {}
    }
    vec![]
}

fn subsets_key(s: &mut State, k: Key) -> Vec<Effect> {
    if let Some(laq) = s.laq.as_mut() {
        match k {
            Key::Char('b') => {
                let n = laq.bit_settings().len().max(1);
                laq.chart_bits = (laq.chart_bits + 1) % n;
                return vec![];
            }
            Key::Char('m') => {
                laq.chart_sub = !laq.chart_sub;
                return vec![];
            }
            _ => {}
        }
    }
    let Some(laq) = &s.laq else { return vec![] };
    let n = laq.subsets.len();
    match k {
        Key::Up => s.subset_cursor = s.subset_cursor.saturating_sub(1),
        Key::Down if n > 0 => s.subset_cursor = (s.subset_cursor + 1).min(n - 1),
        Key::Enter => {
            if let Some((_, classes, median)) = laq.subsets.get(s.subset_cursor) {
                let names: Vec<&String> = classes
                    .iter()
                    .filter_map(|&c| laq.class_names.get(c))
                    .collect();
                let form = &mut s.setup;
                for (i, n) in form.class_names.iter().enumerate() {
                    if let Some(sel) = form.selected.get_mut(i) {
                        *sel = names.contains(&n);
                    }
                }
                s.message = Some(format!(
                    "calibration subset for the next job: {} (median ICD {median:.1})",
                    names
                        .iter()
                        .map(|n| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                s.screen = Screen::Setup;
            }
        }
        _ => {}
    }
    vec![]
}

fn histogram_key(s: &mut State, k: Key) -> Vec<Effect> {
    let n = s.current_run().map_or(0, |r| r.layer_names.len());
    match k {
        Key::Left | Key::Up => s.layer_cursor = s.layer_cursor.saturating_sub(1),
        Key::Right | Key::Down if n > 0 => s.layer_cursor = (s.layer_cursor + 1).min(n - 1),
        Key::Char('o') => s.overlay = !s.overlay,
        _ => {}
    }
    vec![]
}

/// ↑/↓ move through the compared layers (ResNet-56 has 55, more than a
/// screen holds).
fn compare_key(s: &mut State, k: Key) -> Vec<Effect> {
    let n = s
        .marked
        .first()
        .and_then(|&i| s.results.get(i))
        .map_or(0, |r| r.layers.len());
    match k {
        Key::Up => s.compare_cursor = s.compare_cursor.saturating_sub(1),
        Key::Down if n > 0 => s.compare_cursor = (s.compare_cursor + 1).min(n - 1),
        _ => {}
    }
    vec![]
}

fn results_key(s: &mut State, k: Key) -> Vec<Effect> {
    let order = s.sorted_results();
    let n = order.len();
    match k {
        Key::Up => s.result_cursor = s.result_cursor.saturating_sub(1),
        Key::Down if n > 0 => s.result_cursor = (s.result_cursor + 1).min(n - 1),
        Key::Char('s') => {
            let i = SortKey::ALL.iter().position(|x| *x == s.sort).unwrap_or(0);
            s.sort = SortKey::ALL[(i + 1) % SortKey::ALL.len()];
            s.message = Some(format!("sorted by {}", s.sort.name()));
        }
        Key::Char('S') => s.sort_desc = !s.sort_desc,
        Key::Char(' ') => {
            if let Some(&i) = order.get(s.result_cursor) {
                if let Some(p) = s.marked.iter().position(|&m| m == i) {
                    s.marked.remove(p);
                } else {
                    s.marked.push(i);
                    if s.marked.len() > 2 {
                        s.marked.remove(0);
                    }
                }
            }
        }
        Key::Char('c') => {
            if s.marked.len() == 2 {
                s.screen = Screen::Compare;
                s.compare_cursor = 0;
            } else {
                s.message = Some("mark two runs with space first".into());
            }
        }
        Key::Char('e') => {
            return vec![Effect::ExportCsv(std::path::PathBuf::from(
                "results/results.csv",
            ))]
        }
        Key::Enter => {
            if let Some(&i) = order.get(s.result_cursor) {
                let r = s.results[i].clone();
                let names = r.layers.iter().map(|l| l.name.clone()).collect();
                let layers = r.layers.iter().cloned().map(Some).collect();
                s.runs.push(LiveRun {
                    job: 0,
                    spec: r.spec.clone(),
                    label: r.label.clone(),
                    layer_names: names,
                    layers,
                    stage: None,
                    status: RunStatus::Done,
                    trace: r.trace.clone(),
                    result: Some(r),
                });
                s.current = Some(s.runs.len() - 1);
                s.layer_cursor = 0;
                s.screen = Screen::Layers;
            }
        }
        _ => {}
    }
    vec![]
}

fn click(s: &mut State, row: u16) -> Vec<Effect> {
    // Row 0 is the tab bar; tables start after a border and a header.
    if row == 0 {
        return vec![];
    }
    let line = row.saturating_sub(3) as usize;
    match s.screen {
        Screen::Layers => {
            let n = s.current_run().map_or(0, |r| r.layer_names.len());
            if line < n {
                s.layer_cursor = line;
            }
        }
        Screen::Results if line < s.results.len() => s.result_cursor = line,
        _ => {}
    }
    vec![]
}

fn job_event(s: &mut State, job: u64, event: JobEvent) -> Vec<Effect> {
    let Some(idx) = s.runs.iter().position(|r| r.job == job) else {
        return vec![];
    };
    let run = &mut s.runs[idx];
    // Curves and CoRa state, folded as the runner folds the saved ones.
    run.trace.record(&event, &run.spec);
    match event {
        JobEvent::Started { layers } => {
            run.layers = vec![None; layers.len()];
            run.layer_names = layers;
        }
        JobEvent::Stage { name, done, total } => run.stage = Some((name, done, total)),
        JobEvent::LayerDone { report, .. } => {
            let i = report.index;
            if i < run.layers.len() {
                run.layers[i] = Some(*report);
            }
            run.stage = Some(("quantizing".into(), i + 1, run.layers.len()));
            // Follow the job: keep the newest layer in view unless the user moved.
            if s.current == Some(idx) && s.layer_cursor + 1 == i {
                s.layer_cursor = i;
            }
        }
        JobEvent::TrainStep(e) => {
            run.stage = Some((format!("training (loss {:.3})", e.loss), e.step, e.steps));
        }
        JobEvent::Evaluated(_)
        | JobEvent::CoraSpectra(_)
        | JobEvent::CoraStep(_)
        | JobEvent::CoraRanks { .. } => {}
        JobEvent::Finished(result) => {
            run.status = RunStatus::Done;
            run.stage = None;
            s.message = Some(format!(
                "{} done: top-1 All {:.2} %{}",
                result.label,
                result.eval.top1_all,
                result
                    .eval
                    .top1_sub
                    .map_or(String::new(), |v| format!(", Sub {v:.2} %"))
            ));
            run.result = Some((*result).clone());
            s.results.retain(|r| r.key != result.key);
            s.results.push(*result);
            let mut fx = vec![Effect::SaveResult(job)];
            fx.extend(start_next(s));
            return fx;
        }
        JobEvent::Failed(msg) => {
            run.status = RunStatus::Failed(msg.clone());
            run.stage = None;
            s.message = Some(format!("job {job} failed: {msg}"));
            return start_next(s);
        }
        JobEvent::Cancelled => {
            run.status = RunStatus::Cancelled;
            run.stage = None;
            s.message = Some(format!("job {job} cancelled; saved results are untouched"));
            return start_next(s);
        }
    }
    vec![]
}
