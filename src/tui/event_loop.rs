//! The dashboard's loop on a tokio runtime: one channel carries every
//! `Action` (keys from an input thread, job events from job threads, ticks);
//! after draining it the loop redraws once, so bursts of events cost one
//! frame. Compute never runs here: jobs run on their own threads (rayon
//! inside), and the UI thread only updates state and draws.
use crate::app::{update, Action, Effect, Key, SetupForm, State};
use crate::jobs::{JobEvent, ResultsStore};
use crate::tui::terminal::TerminalGuard;
use crate::tui::theme::Theme;
use crate::tui::view;
use crate::util::write_atomic;
use crate::{Error, Result};
use crossterm::event::{
    self, Event, KeyCode, KeyEventKind, KeyModifiers, MouseButton, MouseEventKind,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

pub struct DashboardOptions {
    pub models: Vec<PathBuf>,
    pub datasets: Vec<PathBuf>,
    pub results_dir: PathBuf,
    pub theme: Option<String>,
    pub theme_dir: Option<PathBuf>,
    pub eval_limit: Option<usize>,
    /// A `qscope subsets --out` file for the Subsets screen.
    pub subsets: Option<PathBuf>,
    /// A `laq.csv` from `qscope laq`, charted on the Subsets screen.
    pub laq_results: Option<PathBuf>,
}

type Tx = UnboundedSender<(Action, Instant)>;

fn term_err(e: std::io::Error) -> Error {
    Error::io("terminal", e)
}

/// Build the initial state: saved results, themes, the setup form.
pub fn initial_state(opts: &DashboardOptions, themes: &[Theme], store: &ResultsStore) -> State {
    let (results, bad) = store.load_all();
    let mut setup = SetupForm::new(opts.models.clone(), opts.datasets.clone());
    setup.eval_limit = opts.eval_limit;
    // Default calibration: 256 images (fits the bundled 500-image train sample).
    setup.calib = 3;
    let mut s = State::new(
        setup,
        results,
        themes.iter().map(|t| t.name.clone()).collect(),
    );
    if let Some(name) = &opts.theme {
        match themes.iter().position(|t| &t.name == name) {
            Some(i) => s.theme = i,
            None => {
                s.message = Some(format!(
                    "unknown theme `{name}`; using {}",
                    themes.first().map_or("", |t| t.name.as_str())
                ))
            }
        }
    }
    if let Some(p) = &opts.subsets {
        match std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|t| crate::app::state::LaqView::from_json(&t))
        {
            Ok(mut v) => {
                if let Some(csv) = &opts.laq_results {
                    v.cells = crate::laq::experiment::read_cells(csv);
                }
                s.laq = Some(v)
            }
            Err(e) => s.message = Some(format!("{}: {e}", p.display())),
        }
    }
    if !bad.is_empty() {
        s.message = Some(format!(
            "{} unreadable result file(s) skipped: {}",
            bad.len(),
            bad[0]
        ));
    }
    s
}

pub fn run_dashboard(opts: DashboardOptions) -> Result<()> {
    let (themes, theme_errors) = Theme::load_all(opts.theme_dir.as_deref());
    if themes.is_empty() {
        return Err(Error::Invalid("no usable theme".into()));
    }
    let store = ResultsStore::new(&opts.results_dir);
    let mut state = initial_state(&opts, &themes, &store);
    if let Some(e) = theme_errors.first() {
        let more = match theme_errors.len() {
            1 => String::new(),
            n => format!(" (and {} more theme files)", n - 1),
        };
        state.message = Some(format!("{e}{more}"));
    }
    let (w, h) = crossterm::terminal::size().map_err(term_err)?;
    state.size = (w, h);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(term_err)?;
    let mut guard = TerminalGuard::enter().map_err(term_err)?;
    let out = rt.block_on(event_loop(&mut guard, state, &themes, &store));
    drop(guard);
    out
}

fn map_event(ev: Event) -> Option<Action> {
    match ev {
        Event::Key(k) if k.kind != KeyEventKind::Release => {
            if k.modifiers.contains(KeyModifiers::CONTROL) {
                // Ctrl-C quits; other Ctrl letters edit a typed path, and
                // must not act as the plain letter (Ctrl-Q is not `q`).
                return match k.code {
                    KeyCode::Char('c') => Some(Action::Key(Key::Char('q'))),
                    KeyCode::Char(c) => Some(Action::Key(Key::Ctrl(c.to_ascii_lowercase()))),
                    _ => None,
                };
            }
            Some(Action::Key(match k.code {
                KeyCode::Char(c) => Key::Char(c),
                KeyCode::Enter => Key::Enter,
                KeyCode::Esc => Key::Esc,
                KeyCode::Up => Key::Up,
                KeyCode::Down => Key::Down,
                KeyCode::Left => Key::Left,
                KeyCode::Right => Key::Right,
                KeyCode::Tab => Key::Tab,
                KeyCode::BackTab => Key::BackTab,
                KeyCode::Backspace => Key::Backspace,
                KeyCode::PageUp => Key::PageUp,
                KeyCode::PageDown => Key::PageDown,
                KeyCode::Home => Key::Home,
                KeyCode::End => Key::End,
                _ => return None,
            }))
        }
        Event::Mouse(m) if m.kind == MouseEventKind::Down(MouseButton::Left) => {
            Some(Action::Click(m.column, m.row))
        }
        Event::Resize(w, h) => Some(Action::Resize(w, h)),
        _ => None,
    }
}

fn spawn_input(tx: Tx) {
    std::thread::Builder::new()
        .name("qscope-input".into())
        .spawn(move || loop {
            match event::poll(Duration::from_millis(100)) {
                Ok(true) => match event::read() {
                    Ok(ev) => {
                        if let Some(a) = map_event(ev) {
                            if tx.send((a, Instant::now())).is_err() {
                                break;
                            }
                        }
                    }
                    Err(_) => break,
                },
                Ok(false) if tx.is_closed() => break,
                Ok(false) => {}
                Err(_) => break,
            }
        })
        .ok();
}

fn spawn_job(id: u64, spec: crate::jobs::JobSpec, cancel: Arc<AtomicBool>, tx: Tx) {
    let send = move |event: JobEvent| {
        let _ = tx.send((Action::Job { job: id, event }, Instant::now()));
    };
    std::thread::Builder::new()
        .name(format!("qscope-job-{id}"))
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::jobs::run(&spec, &cancel, &mut |e| send(e.clone()))
            }));
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err(Error::Cancelled)) => send(JobEvent::Cancelled),
                Ok(Err(e)) => send(JobEvent::Failed(e.to_string())),
                Err(_) => send(JobEvent::Failed(
                    "internal error (panic) in the job; see the terminal log".into(),
                )),
            }
        })
        .ok();
}

fn spawn_model_info(path: PathBuf, tx: Tx) {
    std::thread::spawn(move || {
        let info = crate::model::load(&path)
            .map(|g| crate::app::ModelInfo {
                brief: g.brief(),
                classes: g.meta.num_classes,
            })
            .map_err(|e| e.to_string());
        let _ = tx.send((Action::ModelInfo { path, info }, Instant::now()));
    });
}

/// Tab on a typed path: list its folder (a local `read_dir`, quick enough
/// for the UI thread, as in a shell) and complete against it.
fn complete_path(typed: String, models: bool, tx: &Tx) {
    use crate::app::path_complete::{complete, split, Entry};
    let (dir, _) = split(&typed);
    let listed = if dir.is_empty() { "." } else { dir };
    let entries: Vec<Entry> = std::fs::read_dir(listed)
        .map(|rd| {
            rd.flatten()
                .map(|e| Entry {
                    name: e.file_name().to_string_lossy().into_owned(),
                    // Follows symlinks, so a linked folder completes with `/`.
                    is_dir: e.path().is_dir(),
                })
                // What the field can take: a model file, or a folder on
                // the way to one (datasets are folders).
                .filter(|e| e.is_dir || (models && e.name.ends_with(".safetensors")))
                .collect()
        })
        .unwrap_or_default();
    let completion = complete(&typed, &entries);
    let _ = tx.send((Action::PathCompleted { typed, completion }, Instant::now()));
}

fn spawn_classes(path: PathBuf, tx: Tx) {
    std::thread::spawn(move || {
        let root = crate::data::DatasetRoot::open(&path);
        let names = class_names(&root);
        let info_names = names.as_ref().map(|_| ()).map_err(Clone::clone);
        let _ = tx.send((Action::Classes(names), Instant::now()));
        // Counting files can take a moment on a big folder: after the names.
        let info = dataset_summary(&root, info_names);
        let _ = tx.send((Action::DatasetInfo { path, info }, Instant::now()));
    });
}

/// The class picker's names, or why the dataset does not give them.
pub fn class_names(
    root: &crate::Result<crate::data::DatasetRoot>,
) -> std::result::Result<Vec<String>, String> {
    root.as_ref()
        .map_err(|e| e.to_string())
        .and_then(|r| r.class_names().map_err(|e| e.to_string()))
}

/// The dataset line under the Setup form: its format and images per split,
/// or why it does not open (`names`: what [`class_names`] found, so the
/// folders are not listed twice), which stays there (the status line is
/// soon overwritten, e.g. by the model's error).
pub fn dataset_summary(
    root: &crate::Result<crate::data::DatasetRoot>,
    names: std::result::Result<(), String>,
) -> String {
    match (names, root) {
        (Err(e), _) => format!("{}{e}", crate::app::setup::DATASET_ERROR),
        (Ok(()), Ok(r)) => r.describe(),
        (Ok(()), Err(e)) => format!("{}{e}", crate::app::setup::DATASET_ERROR),
    }
}

/// Results table as CSV, in the on-screen order.
pub fn results_csv(s: &State) -> String {
    let mut out = String::from("model,arch,method,bits_avg,classes,calib,top1_all,top5_all,top1_sub,delta_vs_fp,size_bytes,latency_ms,latency_kernels,quantize_seconds,key\n");
    for i in s.sorted_results() {
        let r = &s.results[i];
        let delta = s
            .baseline_for(r)
            .filter(|_| r.spec.quant.is_some())
            .map(|b| r.eval.top1_all - b.eval.top1_all);
        out.push_str(&format!(
            "{},{},{},{:.3},{},{},{:.2},{:.2},{},{},{},{:.3},\"{}\",{:.3},{}\n",
            r.spec.model.display(),
            r.arch,
            r.label,
            r.bits_avg,
            r.spec
                .classes
                .as_ref()
                .map_or("all".into(), |c| c.join(";")),
            r.spec.calib,
            r.eval.top1_all,
            r.eval.top5_all,
            r.eval.top1_sub.map_or(String::new(), |v| format!("{v:.2}")),
            delta.map_or(String::new(), |d| format!("{d:.2}")),
            r.size_bytes,
            r.latency_ms,
            r.latency_path.replace('"', "'"),
            r.quantize_seconds,
            r.key
        ));
    }
    out
}

fn apply(
    effects: Vec<Effect>,
    s: &mut State,
    tx: &Tx,
    cancels: &mut HashMap<u64, Arc<AtomicBool>>,
    store: &ResultsStore,
) {
    for e in effects {
        match e {
            Effect::StartJob { id, spec } => {
                let flag = Arc::new(AtomicBool::new(false));
                cancels.insert(id, flag.clone());
                spawn_job(id, *spec, flag, tx.clone());
            }
            Effect::CancelJob { id } => {
                if let Some(f) = cancels.get(&id) {
                    f.store(true, Ordering::Relaxed);
                }
            }
            Effect::SaveResult(job) => {
                if let Some(r) = s
                    .runs
                    .iter()
                    .find(|r| r.job == job)
                    .and_then(|r| r.result.clone())
                {
                    if let Err(e) = store.save(&r) {
                        s.message = Some(format!("could not save result: {e}"));
                    }
                }
            }
            Effect::ExportCsv(path) => {
                let path = store.dir.join(path.file_name().unwrap_or_default());
                s.message = Some(match write_atomic(&path, results_csv(s).as_bytes()) {
                    Ok(()) => format!(
                        "exported {} to {}",
                        crate::tui::view::count(s.results.len(), "run"),
                        path.display()
                    ),
                    Err(e) => format!("export failed: {e}"),
                });
            }
            Effect::LoadClasses(p) => spawn_classes(p, tx.clone()),
            Effect::InspectModel(p) => spawn_model_info(p, tx.clone()),
            Effect::CompletePath { typed, models } => complete_path(typed, models, tx),
            Effect::Quit => s.quit = true,
        }
    }
}

async fn event_loop(
    guard: &mut TerminalGuard,
    mut state: State,
    themes: &[Theme],
    store: &ResultsStore,
) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Action, Instant)>();
    spawn_input(tx.clone());
    let mut cancels = HashMap::new();
    let mut first = vec![];
    if let Some(p) = state.setup.datasets.get(state.setup.dataset).cloned() {
        first.push(Effect::LoadClasses(p));
    }
    if let Some(p) = state.setup.models.get(state.setup.model).cloned() {
        state.setup.inspecting.push(p.clone());
        first.push(Effect::InspectModel(p));
    }
    apply(first, &mut state, &tx, &mut cancels, store);
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        let draw_start = Instant::now();
        let theme = &themes[state.theme.min(themes.len() - 1)];
        guard
            .terminal
            .draw(|f| view::render(f, &state, theme))
            .map_err(term_err)?;
        state.perf.render_ms = draw_start.elapsed().as_secs_f64() * 1e3;
        if state.quit {
            break;
        }
        // Lets the test suite check that a UI panic restores the terminal.
        if std::env::var_os("QSCOPE_TEST_PANIC").is_some() {
            panic!("QSCOPE_TEST_PANIC is set: deliberate panic after the first frame");
        }
        let mut key_at: Option<Instant> = None;
        let first = tokio::select! {
            got = rx.recv() => got,
            _ = ticker.tick() => Some((Action::Tick, Instant::now())),
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for (action, at) in batch {
            if matches!(action, Action::Key(_)) {
                key_at.get_or_insert(at);
            }
            let fx = update(&mut state, action);
            apply(fx, &mut state, &tx, &mut cancels, store);
        }
        if let Some(t0) = key_at {
            // Includes the wait for the next draw below; recorded after it.
            let theme = &themes[state.theme.min(themes.len() - 1)];
            let d0 = Instant::now();
            guard
                .terminal
                .draw(|f| view::render(f, &state, theme))
                .map_err(term_err)?;
            state.perf.render_ms = d0.elapsed().as_secs_f64() * 1e3;
            state.perf.key_to_draw_ms = t0.elapsed().as_secs_f64() * 1e3;
        }
    }
    for f in cancels.values() {
        f.store(true, Ordering::Relaxed);
    }
    Ok(())
}
