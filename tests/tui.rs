//! Dashboard tests: every screen rendered with ratatui's TestBackend and
//! compared with a reviewed snapshot (insta); state updates driven by actions.
//! The fixture state comes from real jobs on the bundled sample (RTN and
//! GPTQ, small calibration), with timings fixed so snapshots are stable.
use qscope::app::path_complete::{complete, erase_component, Entry};
use qscope::app::{update, Action, Effect, Key, ModelInfo, Screen, SetupForm, State};
use qscope::jobs::{run, JobEvent, JobSpec, RunResult};
use qscope::quant::{Method, QuantConfig};
use qscope::tui::{view, Theme};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

fn sample(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sample_models")
        .join(rel)
}

fn job(method: Option<(Method, u8)>) -> JobSpec {
    let mut s = JobSpec::new(
        PathBuf::from("sample_models/resnet20.safetensors"),
        PathBuf::from("sample_models/cifar10"),
    );
    s.quant = method.map(|(m, b)| QuantConfig::new(m, b));
    s.calib = 32;
    s.eval_limit = Some(200);
    s
}

/// Run a job on the real sample, then pin its timings for stable snapshots.
/// RTN only: its weights do not depend on GEMM summation order, so the
/// snapshots are the same on AVX2 and AVX-512 machines.
fn real_result(method: Option<(Method, u8)>, t: f64) -> RunResult {
    let mut spec = job(method);
    spec.model = sample("resnet20.safetensors");
    spec.data = sample("cifar10");
    let mut r = run(&spec, &AtomicBool::new(false), &mut |_| {}).expect("job");
    r.spec = job(method);
    r.latency_ms = 1.25;
    // The kernel differs between CPUs (AVX-512 or not): check it was named,
    // then pin it like the timings.
    let counted: usize = r
        .latency_path
        .split(", ")
        .filter_map(|p| p.rsplit(" ×").next()?.parse::<usize>().ok())
        .sum();
    // 19 convs, and a 4-bit model's classifier on its own kernel.
    let layers = if method.is_some() { 20 } else { 19 };
    assert_eq!(counted, layers, "{}", r.latency_path);
    r.latency_path = match method {
        None => "fp32 direct avx512 ×19".into(),
        Some(_) => "w4 weight-only (direct avx512) ×19".into(),
    };
    r.finished_unix = t;
    r.total_seconds = 1.0;
    r.quantize_seconds = 0.5;
    r.eval.seconds = 0.1;
    for l in &mut r.layers {
        l.seconds = 0.01;
    }
    r
}

fn results() -> &'static [RunResult] {
    static R: OnceLock<Vec<RunResult>> = OnceLock::new();
    R.get_or_init(|| {
        vec![
            real_result(None, 1.0),
            real_result(Some((Method::Rtn, 4)), 2.0),
            real_result(Some((Method::Rtn, 3)), 3.0),
        ]
    })
}

fn theme() -> Theme {
    Theme::load_all(None).0.remove(0)
}

fn state() -> State {
    let mut setup = SetupForm::new(
        vec![PathBuf::from("sample_models/resnet20.safetensors")],
        vec![PathBuf::from("sample_models/cifar10")],
    );
    setup.calib = 3;
    let mut s = State::new(
        setup,
        results().to_vec(),
        vec!["dark".into(), "light".into(), "high-contrast".into()],
    );
    s.set_classes(
        [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ]
        .map(String::from)
        .to_vec(),
    );
    s
}

/// A broken theme file is reported on one line (it goes on the status bar)
/// naming the file and the line; the others still load.
#[test]
fn broken_theme_files_are_one_line_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("bad.toml"),
        "name = \"b\"\nthis is = not [valid",
    )
    .expect("w");
    std::fs::write(dir.path().join("partial.toml"), "name = \"p\"").expect("w");
    let mut ok =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("themes/dark.toml"))
            .expect("dark");
    ok = ok.replace("name = \"dark\"", "name = \"mine\"");
    std::fs::write(dir.path().join("mine.toml"), ok).expect("w");
    let (themes, errors) = Theme::load_all(Some(dir.path()));
    assert!(themes.iter().any(|t| t.name == "mine") && themes.len() == 4);
    assert_eq!(errors.len(), 2, "{errors:?}");
    for e in &errors {
        assert!(!e.contains('\n') && e.contains(".toml"), "{e}");
    }
    assert!(
        errors
            .iter()
            .any(|e| e.contains("bad.toml") && e.contains("(line 2)")),
        "{errors:?}"
    );
}

/// The text of a screen's `nth` bordered column (1: the left panel), its
/// lines trimmed and joined: what wrapped text says, wherever it broke.
fn column_text(screen: &str, nth: usize) -> String {
    screen
        .lines()
        .filter_map(|l| l.split('│').nth(nth))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

fn draw(s: &State, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).expect("terminal");
    let t = theme();
    term.draw(|f| view::render(f, s, &t)).expect("draw");
    let buf = term.backend().buffer().clone();
    (0..h)
        .map(|y| {
            (0..w)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Feed a finished job's events, as the event loop would, with job id `id`.
fn replay(s: &mut State, id: u64, r: &RunResult) {
    let names = r.layers.iter().map(|l| l.name.clone()).collect();
    update(
        s,
        Action::Job {
            job: id,
            event: JobEvent::Started { layers: names },
        },
    );
    let total = r.layers.len();
    for (i, l) in r.layers.iter().enumerate() {
        update(
            s,
            Action::Job {
                job: id,
                event: JobEvent::LayerDone {
                    report: Box::new(l.clone()),
                    done: i + 1,
                    total,
                },
            },
        );
    }
}

/// The sample model's info as the event loop reports it (a real load).
fn sample_model_info() -> Action {
    let g = qscope::model::load(&sample("resnet20.safetensors")).expect("sample model");
    Action::ModelInfo {
        path: PathBuf::from("sample_models/resnet20.safetensors"),
        info: Ok(ModelInfo {
            brief: g.brief(),
            classes: g.meta.num_classes,
        }),
    }
}

#[test]
fn setup_screen() {
    let mut s = state();
    update(&mut s, Action::Key(Key::Up));
    update(&mut s, Action::Key(Key::Up));
    update(&mut s, sample_model_info());
    insta::assert_snapshot!(draw(&s, 120, 40));
}

/// On 80×24 the form's column is narrow: a path shows its end (the file
/// name), not its first folders; the Start hint wraps instead of being cut.
#[test]
fn setup_on_80_columns_keeps_file_names_and_the_whole_hint() {
    let s = state();
    let screen = draw(&s, 80, 24);
    let line = |label: &str| {
        screen
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_default()
            .to_string()
    };
    let model = line("Model");
    assert!(
        model.contains("…") && model.contains("resnet20.safetensors"),
        "{screen}"
    );
    assert!(line("Dataset").contains("cifar10"), "{screen}");
    assert!(
        line("CoRa budget").contains("5 % of conv params"),
        "{screen}"
    );
    let hint = column_text(&screen, 1);
    assert!(
        hint.contains("Enter queues the job; it runs in the background"),
        "{screen}"
    );
}

/// An FP32 run opened from Results says what it is on the Layers screen,
/// not "0/20 layers" with every row pending.
#[test]
fn an_fp32_run_says_no_layer_was_quantized() {
    let mut s = state();
    update(&mut s, Action::Key(Key::Char('4')));
    let first = s.sorted_results()[0];
    assert!(
        s.results[first].spec.quant.is_none(),
        "the FP32 result sorts first"
    );
    update(&mut s, Action::Key(Key::Enter));
    assert_eq!(s.screen, Screen::Layers);
    let screen = draw(&s, 120, 30);
    assert!(
        screen.contains("FP32 baseline: no layer quantized")
            && !screen.contains("0/20 layers")
            && !screen.contains("calib")
            && !screen.contains('…'),
        "{screen}"
    );
}

/// A dataset that does not open says why under the form, where it stays
/// (the status line is soon overwritten, by the model's error for one).
#[test]
fn a_dataset_that_does_not_open_says_why_under_the_form() {
    let root = qscope::data::DatasetRoot::open(Path::new("/no/such/data"));
    let summary = |root: &qscope::Result<qscope::data::DatasetRoot>| {
        let names = qscope::tui::event_loop::class_names(root).map(|_| ());
        qscope::tui::event_loop::dataset_summary(root, names)
    };
    let info = summary(&root);
    assert_eq!(info, "cannot open: /no/such/data: does not exist");
    let ok = qscope::data::DatasetRoot::open(&sample("cifar10"));
    assert_eq!(summary(&ok), "image folders · train 500 · test 1000 images");
    let mut s = state();
    let path = s.setup.datasets[s.setup.dataset].clone();
    update(&mut s, Action::DatasetInfo { path, info });
    let screen = draw(&s, 80, 24);
    let form = column_text(&screen, 1);
    assert!(
        form.contains("data: cannot open: /no/such/data: does not exist"),
        "{screen}"
    );
}

/// A hundred classes (CIFAR-100) do not fit the class panel: it scrolls
/// with the cursor, so the class being selected is the one on screen.
#[test]
fn the_class_list_scrolls_to_the_cursor() {
    let mut s = state();
    s.set_classes((0..100).map(|i| format!("class{i:02}")).collect());
    while s.setup.field() != qscope::app::setup::Field::Classes {
        update(&mut s, Action::Key(Key::Up));
    }
    for _ in 0..60 {
        update(&mut s, Action::Key(Key::Right));
    }
    update(&mut s, Action::Key(Key::Char(' ')));
    let screen = draw(&s, 80, 24);
    assert!(screen.contains("[x] 60 class60"), "{screen}");
    assert!(screen.contains("Class subset: 1 of 100"), "{screen}");
}

#[test]
fn setup_shows_the_model_in_brief_its_load_error_and_a_class_mismatch() {
    let mut s = state();
    let screen = draw(&s, 120, 40);
    assert!(screen.contains("loading the model…"), "{screen}");
    update(&mut s, sample_model_info());
    let screen = draw(&s, 120, 40);
    // Computed from the file: 269 722 parameters, 40.6 M multiply-adds.
    assert!(
        screen.contains("resnet20 · 10 classes · 3×32×32 · 269.7 k params · 40.6 MMAC/image"),
        "{screen}"
    );
    assert!(screen.contains("f32 weights"), "{screen}");
    // The dataset's line arrives after its class names, from a real count.
    let root = qscope::data::DatasetRoot::open(&sample("cifar10")).expect("sample data");
    update(
        &mut s,
        Action::DatasetInfo {
            path: PathBuf::from("sample_models/cifar10"),
            info: root.describe(),
        },
    );
    let screen = draw(&s, 120, 40);
    assert!(
        screen.contains("data: image folders · train 500 · test 1000 images"),
        "{screen}"
    );
    assert!(!screen.contains("accuracy will not mean much"), "{screen}");
    // A 100-class dataset under a 10-class model is flagged before a job runs.
    s.set_classes((0..100).map(|i| format!("c{i}")).collect());
    let screen = draw(&s, 120, 40);
    assert!(
        screen.contains("the model has 10 classes, the dataset 100: jobs will fail"),
        "{screen}"
    );
    s.set_classes(vec!["airplane".into(), "automobile".into()]);
    let screen = draw(&s, 120, 40);
    assert!(
        screen.contains("the dataset 2: labels follow folder order"),
        "{screen}"
    );
    // A model that does not load: typed in, its error shown in the form
    // and on the status line, naming the file.
    for _ in 0..12 {
        update(&mut s, Action::Key(Key::Up));
    }
    assert_eq!(s.setup.field(), qscope::app::Field::Model);
    update(&mut s, Action::Key(Key::Char('e')));
    update(&mut s, Action::Key(Key::Ctrl('u')));
    for c in "/m/bad.safetensors".chars() {
        update(&mut s, Action::Key(Key::Char(c)));
    }
    let fx = update(&mut s, Action::Key(Key::Enter));
    let bad = PathBuf::from("/m/bad.safetensors");
    assert_eq!(fx, vec![Effect::InspectModel(bad.clone())]);
    // Passing over a model still loading does not load it again.
    update(&mut s, Action::Key(Key::Left));
    let fx = update(&mut s, Action::Key(Key::Right));
    assert_eq!(s.setup.models[s.setup.model], bad);
    assert!(fx.is_empty(), "{fx:?}");
    let err = "/m/bad.safetensors: not a valid safetensors file: truncated".to_string();
    update(
        &mut s,
        Action::ModelInfo {
            path: bad,
            info: Err(err.clone()),
        },
    );
    assert_eq!(s.message.as_deref(), Some(err.as_str()));
    let screen = draw(&s, 120, 40);
    assert!(
        screen.contains("cannot load: /m/bad.safetensors"),
        "{screen}"
    );
    // Back to the sample: its info is still known, nothing to load again.
    let fx = update(&mut s, Action::Key(Key::Left));
    assert_eq!(
        s.setup.models[s.setup.model],
        PathBuf::from("sample_models/resnet20.safetensors")
    );
    assert!(fx.is_empty(), "{fx:?}");
    // Typing a path already on the list chooses it rather than adding it.
    update(&mut s, Action::Key(Key::Char('e')));
    update(&mut s, Action::Key(Key::Ctrl('u')));
    for c in "/m/bad.safetensors".chars() {
        update(&mut s, Action::Key(Key::Char(c)));
    }
    update(&mut s, Action::Key(Key::Enter));
    assert_eq!(s.setup.models.len(), 2);
    assert_eq!(s.setup.model, 1);
}

#[test]
fn typing_a_path_completes_it_clears_it_and_erases_folders() {
    let mut s = state();
    for _ in 0..11 {
        update(&mut s, Action::Key(Key::Up));
    }
    assert_eq!(s.setup.field(), qscope::app::Field::Data);
    update(&mut s, Action::Key(Key::Char('e')));
    assert_eq!(s.setup.editing.as_deref(), Some("sample_models/cifar10"));
    update(&mut s, Action::Key(Key::Ctrl('w')));
    assert_eq!(s.setup.editing.as_deref(), Some("sample_models/"));
    update(&mut s, Action::Key(Key::Ctrl('w')));
    assert_eq!(s.setup.editing.as_deref(), Some(""));
    for c in "sample_models/ci".chars() {
        update(&mut s, Action::Key(Key::Char(c)));
    }
    // Tab asks the loop to list the folder (datasets: folders only)…
    let fx = update(&mut s, Action::Key(Key::Tab));
    assert_eq!(
        fx,
        vec![Effect::CompletePath {
            typed: "sample_models/ci".into(),
            models: false
        }]
    );
    assert_eq!(
        s.screen,
        Screen::Setup,
        "Tab while typing is not a tab switch"
    );
    // …and takes its answer only if nothing was typed meanwhile.
    let entries = [Entry {
        name: "cifar10".into(),
        is_dir: true,
    }];
    let answer = |typed: &str| Action::PathCompleted {
        typed: typed.into(),
        completion: complete(typed, &entries),
    };
    update(&mut s, answer("sample_models/c"));
    assert_eq!(s.setup.editing.as_deref(), Some("sample_models/ci"));
    update(&mut s, answer("sample_models/ci"));
    assert_eq!(s.setup.editing.as_deref(), Some("sample_models/cifar10/"));
    // Ctrl letters never act as the letter: Ctrl-Q does not quit.
    update(&mut s, Action::Key(Key::Esc));
    update(&mut s, Action::Key(Key::Ctrl('q')));
    assert!(!s.quit);
}

#[test]
fn path_completion_is_a_shells() {
    let e = |name: &str, is_dir: bool| Entry {
        name: name.into(),
        is_dir,
    };
    let dir = [
        e("resnet20.safetensors", false),
        e("resnet56.safetensors", false),
        e("cifar10", true),
        e(".hidden", true),
    ];
    // One match: the whole name, and `/` after a folder.
    let c = complete("m/ci", &dir);
    assert_eq!((c.text.as_str(), c.choices.len()), ("m/cifar10/", 0));
    let c = complete("resnet2", &dir);
    assert_eq!(c.text, "resnet20.safetensors");
    // Several: their longest common prefix, and the choices listed.
    let c = complete("m/r", &dir);
    assert_eq!(c.text, "m/resnet");
    assert_eq!(c.choices, ["resnet20.safetensors", "resnet56.safetensors"]);
    // An empty name lists all but hidden entries; a dot reaches those.
    let c = complete("m/", &dir);
    assert_eq!(c.text, "m/");
    assert_eq!(c.choices.len(), 3);
    assert_eq!(complete("m/.h", &dir).text, "m/.hidden/");
    // No match: unchanged. Common prefixes respect UTF-8.
    assert_eq!(complete("m/x", &dir).text, "m/x");
    let c = complete("é", &[e("éa", false), e("éb", false)]);
    assert_eq!(c.text, "é");
    let c = complete("", &[e("ñaa", false), e("ñab", false)]);
    assert_eq!(c.text, "ña");
    assert_eq!(erase_component("a/b/c.safetensors"), "a/b/");
    assert_eq!(erase_component("a/b/"), "a/");
    assert_eq!(erase_component("/"), "");
    assert_eq!(erase_component("abc"), "");
}

#[test]
fn layers_screen_fills_in_live() {
    let mut s = state();
    let fx = update(&mut s, Action::Key(Key::Enter));
    let Some(Effect::StartJob { id, .. }) = fx.first() else {
        panic!("Enter must start a job: {fx:?}")
    };
    let r = &results()[2];
    let names = r.layers.iter().map(|l| l.name.clone()).collect();
    update(
        &mut s,
        Action::Job {
            job: *id,
            event: JobEvent::Started { layers: names },
        },
    );
    for (i, l) in r.layers.iter().take(7).enumerate() {
        update(
            &mut s,
            Action::Job {
                job: *id,
                event: JobEvent::LayerDone {
                    report: Box::new(l.clone()),
                    done: i + 1,
                    total: 20,
                },
            },
        );
    }
    assert_eq!(s.screen, Screen::Layers);
    insta::assert_snapshot!("layers_partial", draw(&s, 120, 40));
    replay(&mut s, *id, r);
    let fx = update(
        &mut s,
        Action::Job {
            job: *id,
            event: JobEvent::Finished(Box::new(r.clone())),
        },
    );
    assert_eq!(fx, vec![Effect::SaveResult(*id)]);
    insta::assert_snapshot!("layers_done", draw(&s, 120, 40));
}

#[test]
fn histogram_screen_overlay_and_stacked() {
    let mut s = state();
    let fx = update(&mut s, Action::Key(Key::Enter));
    let Some(Effect::StartJob { id, .. }) = fx.first() else {
        panic!()
    };
    replay(&mut s, *id, &results()[1]);
    s.layer_cursor = 3;
    update(&mut s, Action::Key(Key::Enter));
    assert_eq!(s.screen, Screen::Histogram);
    insta::assert_snapshot!("histogram_overlay", draw(&s, 120, 40));
    update(&mut s, Action::Key(Key::Char('o')));
    update(&mut s, Action::Key(Key::Right));
    insta::assert_snapshot!("histogram_stacked", draw(&s, 120, 40));
}

#[test]
fn results_and_compare_screens() {
    let mut s = state();
    update(&mut s, Action::Key(Key::Char('4')));
    insta::assert_snapshot!("results", draw(&s, 120, 30));
    update(&mut s, Action::Key(Key::Down));
    update(&mut s, Action::Key(Key::Char(' ')));
    update(&mut s, Action::Key(Key::Down));
    update(&mut s, Action::Key(Key::Char(' ')));
    update(&mut s, Action::Key(Key::Char('c')));
    assert_eq!(s.screen, Screen::Compare);
    insta::assert_snapshot!("compare", draw(&s, 120, 30));
    // ↑/↓ move through the layers; the last one scrolls into view on 80×24.
    for _ in 0..30 {
        update(&mut s, Action::Key(Key::Down));
    }
    assert!(draw(&s, 80, 24).contains("linear"));
    // On 80 columns both runs' accuracies stay in the title, even with
    // labels as long as a CoRa run's.
    for r in &mut s.results {
        r.label = format!("{} +cora-optimal 5%", r.label);
    }
    let narrow = draw(&s, 80, 24);
    let title = narrow.lines().nth(1).unwrap_or_default();
    assert_eq!(title.matches(" %)").count(), 2, "{narrow}");
}

#[test]
fn help_overlay_and_too_small_message() {
    let mut s = state();
    update(&mut s, Action::Key(Key::Char('?')));
    insta::assert_snapshot!("help", draw(&s, 100, 30));
    // On the smallest supported terminal the list scrolls to its end.
    let last = qscope::app::update::HELP.last().expect("help").1;
    let first = draw(&s, 80, 24);
    assert!(
        first.contains("0 above,") && !first.contains(last),
        "{first}"
    );
    for _ in 0..40 {
        update(&mut s, Action::Key(Key::Down));
    }
    let end = draw(&s, 80, 24);
    assert!(end.contains(last) && end.contains(", 0 below"), "{end}");
    assert!(s.help, "scrolling keeps the help open");
    let small = draw(&state(), 60, 20);
    assert!(
        small.contains("Terminal too small: 60×20") && small.contains("80×24"),
        "{small}"
    );
}

#[test]
fn gptq_job_starts_in_one_keystroke_and_queue_runs_in_order() {
    let mut s = state();
    let fx = update(&mut s, Action::Key(Key::Enter));
    match &fx[..] {
        [Effect::StartJob { id: 1, spec }] => {
            let q = spec.quant.as_ref().expect("quantized");
            assert_eq!((q.method, q.bits.bits), (Method::Gptq, 4));
        }
        other => panic!("{other:?}"),
    }
    // A second job queues behind the first and starts when it finishes.
    update(&mut s, Action::Key(Key::Char('1')));
    assert!(update(&mut s, Action::Key(Key::Enter)).is_empty());
    let fx = update(
        &mut s,
        Action::Job {
            job: 1,
            event: JobEvent::Failed("boom".into()),
        },
    );
    assert!(
        matches!(&fx[..], [Effect::StartJob { id: 2, .. }]),
        "{fx:?}"
    );
    // The failure stays on the status line while the next job runs.
    assert!(
        s.message.as_deref().is_some_and(|m| m.contains("boom")),
        "{:?}",
        s.message
    );
    let fx = update(&mut s, Action::Key(Key::Char('x')));
    assert_eq!(fx, vec![Effect::CancelJob { id: 2 }]);
    update(
        &mut s,
        Action::Job {
            job: 2,
            event: JobEvent::Cancelled,
        },
    );
    assert!(s.running().is_none());
}

#[test]
fn what_if_bits_change_reruns_with_an_override() {
    let mut s = state();
    let fx = update(&mut s, Action::Key(Key::Enter));
    let Some(Effect::StartJob { id, .. }) = fx.first() else {
        panic!()
    };
    replay(&mut s, *id, &results()[2]);
    update(
        &mut s,
        Action::Job {
            job: *id,
            event: JobEvent::Finished(Box::new(results()[2].clone())),
        },
    );
    s.layer_cursor = 2;
    update(&mut s, Action::Key(Key::Char('-')));
    update(&mut s, Action::Key(Key::Char('-')));
    let fx = update(&mut s, Action::Key(Key::Char('r')));
    match &fx[..] {
        [Effect::StartJob { spec, .. }] => {
            assert_eq!(
                spec.quant.as_ref().expect("q").bits.overrides,
                vec![("layer1.0.conv2".to_string(), 2)]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn setup_form_edits_paths_selects_classes_and_sorts_results() {
    let mut s = state();
    // Focus Classes (3rd field): from Start, Up 10 times.
    for _ in 0..10 {
        update(&mut s, Action::Key(Key::Up));
    }
    assert_eq!(s.setup.field(), qscope::app::Field::Classes);
    update(&mut s, Action::Key(Key::Right));
    update(&mut s, Action::Key(Key::Char(' ')));
    update(&mut s, Action::Key(Key::Right));
    update(&mut s, Action::Key(Key::Char(' ')));
    assert_eq!(
        s.setup.chosen_classes(),
        Some(vec!["automobile".into(), "bird".into()])
    );
    update(&mut s, Action::Key(Key::Up));
    update(&mut s, Action::Key(Key::Char('e')));
    for _ in 0.."sample_models/cifar10".len() {
        update(&mut s, Action::Key(Key::Backspace));
    }
    for c in "/data/mnist".chars() {
        update(&mut s, Action::Key(Key::Char(c)));
    }
    let fx = update(&mut s, Action::Key(Key::Enter));
    assert_eq!(fx, vec![Effect::LoadClasses(PathBuf::from("/data/mnist"))]);
    update(
        &mut s,
        Action::Classes(Err("/data/mnist: does not exist".into())),
    );
    assert!(s
        .message
        .as_deref()
        .is_some_and(|m| m.contains("does not exist")));
    update(&mut s, Action::Key(Key::Char('4')));
    update(&mut s, Action::Key(Key::Char('s')));
    update(&mut s, Action::Key(Key::Char('s')));
    update(&mut s, Action::Key(Key::Char('s')));
    update(&mut s, Action::Key(Key::Char('s')));
    assert_eq!(s.sort.name(), "top-1 All");
    let order = s.sorted_results();
    let accs: Vec<f64> = order.iter().map(|&i| s.results[i].eval.top1_all).collect();
    assert!(accs.windows(2).all(|w| w[0] <= w[1]), "{accs:?}");
    let csv = qscope::tui::event_loop::results_csv(&s);
    assert_eq!(csv.lines().count(), 4);
    for (line, &i) in csv.lines().skip(1).zip(&order) {
        assert!(
            line.contains(&s.results[i].label)
                && line.contains(&format!("{:.2}", s.results[i].eval.top1_all)),
            "{line}"
        );
    }
}

/// The quantizer list offers CoRa-O (`+cora`) and CoRa-H (`+cora-h`) on
/// an RTN or GPTQ base; the spec says which.
#[test]
fn setup_builds_cora_o_and_cora_h_specs() {
    use qscope::app::setup::METHODS;
    let mut form = SetupForm::new(
        vec![sample("resnet20.safetensors")],
        vec![sample("cifar10")],
    );
    for (choice, base, cora) in [
        ("rtn+cora", Method::Rtn, "optimal"),
        ("gptq+cora", Method::Gptq, "optimal"),
        ("rtn+cora-h", Method::Rtn, "heuristic"),
        ("gptq+cora-h", Method::Gptq, "heuristic"),
    ] {
        form.method = METHODS.iter().position(|m| *m == choice).expect(choice);
        let spec = form.spec().expect("spec");
        assert_eq!(
            spec.quant.as_ref().map(|q| q.method),
            Some(base),
            "{choice}"
        );
        assert_eq!(spec.cora.as_ref().map(|c| c.method.as_str()), Some(cora));
    }
    form.method = METHODS.iter().position(|m| *m == "gptq").expect("gptq");
    assert!(form.spec().expect("spec").cora.is_none());
}

/// A result as the dashboard reloads it: saved to a results folder and read back.
fn round_trip(r: RunResult) -> RunResult {
    let dir = tempfile::tempdir().expect("tmp");
    let store = qscope::jobs::ResultsStore::new(dir.path());
    store.save(&r).expect("save");
    let (mut all, errors) = store.load_all();
    assert!(errors.is_empty() && all.len() == 1, "{errors:?}");
    all.remove(0)
}

#[test]
fn training_and_cora_screens_show_live_curves_ranks_and_budget() {
    use qscope::jobs::spec::TrainSpec;
    use qscope::train::cora_job::CoraSpec;
    let mut s = state();
    // A real (tiny) fine-tune job: 4 steps of 16 images.
    let mut ft = job(None);
    ft.model = sample("resnet20.safetensors");
    ft.data = sample("cifar10");
    ft.train = Some(TrainSpec {
        config: qscope::train::TrainConfig {
            epochs: 4.0 * 16.0 / 500.0,
            batch: 16,
            ..Default::default()
        },
        qat_bits: None,
        act_bits: None,
    });
    let id = s.next_job;
    qscope::app::update::enqueue(&mut s, ft.clone());
    let mut events = vec![];
    let saved = run(&ft, &AtomicBool::new(false), &mut |e| events.push(e)).expect("ft");
    for e in events {
        update(&mut s, Action::Job { job: id, event: e });
    }
    update(&mut s, Action::Key(Key::Char('6')));
    let screen = draw(&s, 120, 40);
    assert!(
        screen.contains("step 4/4")
            && screen.contains("loss (20-step mean)")
            && screen.contains("test top-1"),
        "{screen}"
    );
    // On 80 columns the figures wrap; none is cut off.
    let narrow = draw(&s, 80, 24);
    assert!(
        narrow.contains("test top-1") && narrow.contains("images/s") && narrow.contains("· lr "),
        "{narrow}"
    );
    // The saved result keeps the curve the dashboard drew, through a save
    // and a reload, so the run reopened from Results draws it again.
    let live = &s.current_run().expect("run").trace;
    assert_eq!(live.train.len(), 4);
    assert_eq!(&saved.trace, live);
    let saved = round_trip(saved);
    // A new session lists `run` in Results, opens it and shows Training.
    let reopen = |run: RunResult| {
        let mut reopened = state();
        reopened.results = vec![run];
        update(&mut reopened, Action::Key(Key::Char('4')));
        update(&mut reopened, Action::Key(Key::Enter));
        update(&mut reopened, Action::Key(Key::Char('6')));
        draw(&reopened, 120, 40)
    };
    let screen = reopen(saved.clone());
    assert!(
        screen.contains("step 4/4") && screen.contains("loss (20-step mean)"),
        "{screen}"
    );
    // One saved by an earlier qscope has no curve: its figures stand in.
    let mut old = saved;
    old.trace = Default::default();
    let screen = reopen(old);
    assert!(
        screen.contains("saved without its loss curve") && screen.contains("test top-1"),
        "{screen}"
    );
    // A real RTN + CoRa-H job: spectra and final ranks within the budget.
    let mut cj = job(Some((Method::Rtn, 3)));
    cj.model = sample("resnet20.safetensors");
    cj.data = sample("cifar10");
    cj.cora = Some(CoraSpec {
        budget: 0.1,
        method: "heuristic".into(),
        iterations: 0,
        batch: 16,
        loss: "ce".into(),
    });
    let id = s.next_job;
    qscope::app::update::enqueue(&mut s, cj.clone());
    let mut events = vec![];
    let r = run(&cj, &AtomicBool::new(false), &mut |e| events.push(e)).expect("cora");
    for e in events {
        update(&mut s, Action::Job { job: id, event: e });
    }
    update(&mut s, Action::Key(Key::Char('7')));
    let screen = draw(&s, 120, 40);
    assert!(
        screen.contains("ranks (final)")
            && screen.contains("residual spectrum")
            && screen.contains("% budget"),
        "{screen}"
    );
    let c = s
        .current_run()
        .and_then(|r| r.trace.cora.as_ref())
        .expect("cora state");
    assert_eq!(c.spectra.len(), 19, "every conv has a spectrum");
    assert!(c.extra_params as f64 <= 0.1 * c.conv_params as f64 + 1.0);
    assert!(r.label.contains("+cora-heuristic 10%"));
    let sel = s.layer_cursor.min(18);
    // CoRa-H has no search to plot: the panel lists the five rules by
    // calibration loss, the chosen one first; the spectrum shows its rank.
    assert_eq!(c.rules.len(), 5);
    assert!(
        c.rules.windows(2).all(|w| w[0].1 <= w[1].1),
        "{:?}",
        c.rules
    );
    let chosen = format!("▶ {}", c.rules[0].0);
    assert!(
        screen.contains("CoRa-H: rule")
            && screen.contains(&chosen)
            && screen.contains("  uniform ")
            && screen.contains(&format!("rank {}", c.ranks.as_ref().expect("ranks")[sel]))
            && screen.contains("top-1 vs budget · 1 run "),
        "{screen}"
    );
    // Reopened from Results (saved and reloaded), the run draws what it drew live.
    assert_eq!(r.trace.cora.as_ref(), Some(c));
    let mut reopened = state();
    reopened.results = vec![round_trip(r.clone())];
    update(&mut reopened, Action::Key(Key::Char('4')));
    update(&mut reopened, Action::Key(Key::Enter));
    update(&mut reopened, Action::Key(Key::Char('7')));
    reopened.layer_cursor = s.layer_cursor;
    // (The status line differs: the live state has the job's message.)
    let body = |screen: &str| {
        screen
            .lines()
            .skip(1)
            .take(37)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(body(&draw(&reopened, 120, 40)), body(&screen));
    let mut old = r.clone();
    old.trace = Default::default();
    reopened.results = vec![old];
    update(&mut reopened, Action::Key(Key::Char('4')));
    update(&mut reopened, Action::Key(Key::Enter));
    update(&mut reopened, Action::Key(Key::Char('7')));
    let screen = draw(&reopened, 120, 40);
    assert!(
        screen.contains("+cora-heuristic 10%: test top-1")
            && screen.contains("saved without its ranks"),
        "{screen}"
    );
    // A deeper network (as many convs as ResNet-56) runs past the ranks
    // panel; it scrolls so the selected layer stays in view.
    let run = s.current.expect("current");
    if let Some(c) = s.runs[run].trace.cora.as_mut() {
        let more: Vec<_> = (0..36)
            .map(|i| (format!("deep{i:02}"), c.spectra[i % 19].1.clone()))
            .collect();
        c.spectra.extend(more);
        c.ranks = Some(vec![1; 55]);
    }
    s.layer_cursor = 54;
    let narrow = draw(&s, 80, 24);
    // (The name is also the spectrum's title; the row is the ranks panel's.)
    assert!(
        narrow.lines().any(|l| l.starts_with("│deep35 ")),
        "{narrow}"
    );
}

#[test]
fn delta_vs_fp_uses_the_untrained_fp32_run_as_baseline() {
    let mut s = state();
    let fp = results()[0].clone();
    let mut ft = fp.clone();
    ft.spec.train = Some(qscope::jobs::spec::TrainSpec {
        config: Default::default(),
        qat_bits: None,
        act_bits: None,
    });
    ft.eval.top1_all = 90.0;
    ft.finished_unix = 10.0;
    s.results.push(ft);
    let q = &results()[1];
    let base = s.baseline_for(q).expect("baseline");
    assert!(
        base.spec.train.is_none() && base.eval.top1_all == fp.eval.top1_all,
        "a fine-tuned run is not the FP32 baseline"
    );
    // Without an FP32 run, the Results screen says how to get one.
    let hint = "Δ vs FP: run Quantizer fp32";
    update(&mut s, Action::Key(Key::Char('4')));
    assert!(!draw(&s, 120, 30).contains(hint));
    s.results.retain(|r| r.spec.quant.is_some());
    assert!(draw(&s, 120, 30).contains(hint));
    // On an 80-column terminal the hint still fits, and the table drops its
    // least needed columns instead of cutting every header to a stump.
    let narrow = draw(&s, 80, 24);
    assert!(
        narrow.contains("Δ vs FP: run Quantizer fp32 (Setup) on the same model, data and classes."),
        "{narrow}"
    );
    assert!(
        narrow.contains("top-1 All") && narrow.contains("size KiB") && narrow.contains("lat. ms"),
        "{narrow}"
    );
    assert!(
        !narrow.contains("kernels") && !narrow.contains("calib"),
        "{narrow}"
    );
    let tabs = narrow.lines().next().unwrap_or("");
    assert!(
        tabs.contains("8 Subsets") && tabs.contains("3 Hist"),
        "{tabs}"
    );
    // The status line keeps the job's message whole; the timings give way.
    s.message = Some("gptq w4 done: top-1 All 81.30 %".into());
    let status = draw(&s, 80, 24);
    let last = status.lines().last().unwrap_or("");
    assert!(
        last.contains("81.30 %") && !last.contains("key→draw"),
        "{last}"
    );
    assert!(draw(&s, 120, 30).contains("kernels"));
}

#[test]
fn subsets_screen_shows_embedding_and_heat_map_and_sets_the_calibration_subset() {
    // A real subsets file: features → UMAP → ICD on the bundled sample.
    let g = qscope::model::load(&sample("resnet20.safetensors")).expect("load");
    let train = qscope::data::DatasetRoot::open(&sample("cifar10"))
        .expect("data")
        .split(qscope::data::SplitKind::Train)
        .expect("train");
    let idx = qscope::data::sample_per_class(&train, &(0..10).collect::<Vec<_>>(), 20, 0)
        .expect("sample");
    let (f, d) = qscope::laq::features(&g, &train, &idx).expect("features");
    let xy = qscope::laq::umap_2d(
        &f,
        idx.len(),
        d,
        &qscope::laq::UmapConfig {
            epochs: Some(50),
            ..Default::default()
        },
    );
    let labels: Vec<u32> = idx.iter().map(|&i| train.labels[i]).collect();
    let icd = qscope::laq::icd_matrix(&qscope::laq::class_gaussians(&xy, &labels, 10));
    let subs = qscope::laq::select_subsets(&icd, 10, 4, 3, 0);
    let json = serde_json::json!({
        "class_names": train.class_names, "embedding": xy, "labels": labels, "icd": icd,
        "subsets": subs.iter().map(|s| serde_json::json!({"kind": s.kind, "median_icd": s.median_icd,
            "classes": s.classes.iter().map(|&c| train.class_names[c].clone()).collect::<Vec<_>>()})).collect::<Vec<_>>(),
    });
    let mut s = state();
    s.laq = Some(qscope::app::state::LaqView::from_json(&json.to_string()).expect("parse"));
    update(&mut s, Action::Key(Key::Char('8')));
    let screen = draw(&s, 120, 40);
    assert!(
        screen.contains("UMAP of penultimate features")
            && screen.contains("ICD heat map")
            && screen.contains("median ICD"),
        "{screen}"
    );
    // Shaded by quartile: each of the four shades marks a quarter of the pairs.
    for shade in ['░', '▒', '▓', '█'] {
        let cells = screen.matches(&format!("{shade}{shade}")).count();
        assert!(
            (15..=30).contains(&cells),
            "{shade}: {cells} cells\n{screen}"
        );
    }
    // On 80×24 each subset, once selected, shows every class name (they
    // wrap under one another), scrolled into view.
    for (i, sub) in subs.iter().enumerate() {
        s.subset_cursor = i;
        let narrow = draw(&s, 80, 24);
        let list: String = narrow
            .lines()
            .skip_while(|l| !l.contains("median ICD"))
            .filter_map(|l| l.rsplit('│').nth(1))
            .collect::<Vec<_>>()
            .join(" ");
        for &c in &sub.classes {
            assert!(list.contains(&train.class_names[c]), "subset {i}: {narrow}");
        }
    }
    s.subset_cursor = 0;
    // LAQ results from a real (tiny) experiment: the accuracy-vs-ICD chart.
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = qscope::laq::experiment::ExperimentConfig {
        subsets: vec![(subs[0].classes.clone(), subs[0].median_icd)],
        bits: vec!["4".into()],
        calib: 32,
        ft: qscope::train::TrainConfig {
            epochs: 0.25,
            batch: 50,
            ..Default::default()
        },
        seed: 0,
    };
    let cells = qscope::laq::experiment::run(
        &g,
        &sample("cifar10"),
        &cfg,
        dir.path(),
        &AtomicBool::new(false),
        &mut |_, _, _| {},
    )
    .expect("laq");
    if let Some(l) = s.laq.as_mut() {
        l.cells = cells;
    }
    let screen = draw(&s, 120, 40);
    assert!(
        screen.contains("LAQ top-1 All vs median ICD · 4 bits"),
        "{screen}"
    );
    update(&mut s, Action::Key(Key::Char('m')));
    assert!(draw(&s, 120, 40).contains("LAQ top-1 Sub"));
    update(&mut s, Action::Key(Key::Down));
    update(&mut s, Action::Key(Key::Enter));
    assert_eq!(s.screen, Screen::Setup);
    let want: Vec<String> = subs[1]
        .classes
        .iter()
        .map(|&c| train.class_names[c].clone())
        .collect();
    assert_eq!(s.setup.chosen_classes(), Some(want));
}
