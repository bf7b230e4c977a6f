//! Full-frame render time of every dashboard screen at 120×40, for a
//! ResNet-56-shaped model (56 quantizable layers) whose layer metrics come from
//! a real RTN run on random weights. Target: < 2 ms per frame.
#[path = "../tests/common/mod.rs"]
mod common;

use qscope::app::{update, Action, Key, SetupForm, State};
use qscope::jobs::JobEvent;
use qscope::quant::{quantize_model, Method, QuantConfig};
use qscope::tui::{view, Theme};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::sync::atomic::AtomicBool;

fn main() {
    divan::main();
}

fn state() -> State {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("r56.safetensors");
    common::cifar_resnet(9, &[16, 32, 64], 10, common::Shortcut::OptionA, 1).write(&p, None);
    let g = qscope::model::load(&p).expect("load");
    let calib = common::random_input(8, 3, 32, 2);
    let out = quantize_model(
        &g,
        &calib,
        &QuantConfig::new(Method::Rtn, 4),
        &AtomicBool::new(false),
        &mut |_, _, _| {},
    )
    .expect("rtn");
    let mut s = State::new(
        SetupForm::new(vec![p.clone()], vec![]),
        vec![],
        vec!["dark".into()],
    );
    update(&mut s, Action::Key(Key::Enter));
    let names = out.layers.iter().map(|l| l.name.clone()).collect();
    update(
        &mut s,
        Action::Job {
            job: 1,
            event: JobEvent::Started { layers: names },
        },
    );
    let n = out.layers.len();
    for (i, l) in out.layers.into_iter().enumerate() {
        update(
            &mut s,
            Action::Job {
                job: 1,
                event: JobEvent::LayerDone {
                    report: Box::new(l),
                    done: i + 1,
                    total: n,
                },
            },
        );
    }
    s
}

#[divan::bench(args = ["1", "2", "3"])]
fn frame_120x40(bencher: divan::Bencher, screen: &str) {
    let mut s = state();
    update(
        &mut s,
        Action::Key(Key::Char(screen.chars().next().unwrap_or('2'))),
    );
    let theme = Theme::load_all(None).0.remove(0);
    let mut term = Terminal::new(TestBackend::new(120, 40)).expect("terminal");
    bencher.bench_local(|| {
        term.draw(|f| view::render(f, &s, &theme)).expect("draw");
    });
}
