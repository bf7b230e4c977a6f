//! Loss and accuracy curves of the shown job's training steps.
use crate::app::state::State;
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

/// Moving average over `k` points, for readable curves from noisy batches.
fn smooth(v: &[(f64, f64)], k: usize) -> Vec<(f64, f64)> {
    (0..v.len())
        .map(|i| {
            let a = i.saturating_sub(k - 1);
            let s: f64 = v[a..=i].iter().map(|p| p.1).sum();
            (v[i].0, s / (i + 1 - a) as f64)
        })
        .collect()
}

fn chart<'a>(
    title: &'a str,
    pts: &'a [(f64, f64)],
    steps: f64,
    ymax: f64,
    color: ratatui::style::Color,
    t: &Theme,
) -> Chart<'a> {
    Chart::new(vec![Dataset::default()
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(Style::default().fg(color))
        .data(pts)])
    .block(super::block(title, t))
    .x_axis(
        Axis::default()
            .bounds([0.0, steps.max(1.0)])
            .labels(vec![
                Line::from("0"),
                Line::from(format!("{steps:.0} steps")),
            ])
            .style(Style::default().fg(t.muted)),
    )
    .y_axis(
        Axis::default()
            .bounds([0.0, ymax])
            .labels(vec![Line::from("0"), Line::from(format!("{ymax:.2}"))])
            .style(Style::default().fg(t.muted)),
    )
}

pub fn render(f: &mut Frame, area: Rect, s: &State, t: &Theme) {
    let Some(run) = s.current_run().filter(|r| !r.trace.train.is_empty()) else {
        // A trained run saved before results kept their curves: its figures.
        let saved_training = s.current_run().and_then(|r| {
            let tr = r.spec.train.as_ref()?;
            let acc = r.result.as_ref()?.eval.top1_all;
            Some(format!(
                "{} trained {} epoch{} (test top-1 {acc:.2} %). This result was saved without its loss curve (by an earlier qscope); run it again from Setup to see it.",
                r.label,
                tr.config.epochs,
                if tr.config.epochs == 1.0 { "" } else { "s" }
            ))
        });
        super::empty_state(
            f,
            area,
            " Training ",
            saved_training.as_deref().unwrap_or(
                "No training yet. On Setup choose the quantizer `finetune` or `qat`, set Epochs, and press Enter.",
            ),
            t,
        );
        return;
    };
    let last = run
        .trace
        .train
        .last()
        .cloned()
        .unwrap_or(crate::train::TrainEvent {
            step: 0,
            steps: 0,
            epoch: 0.0,
            loss: 0.0,
            accuracy: 0.0,
            images_per_s: 0.0,
            lr: 0.0,
        });
    // The test accuracy, once there, comes first: it is the result.
    let acc = run.result.as_ref().map_or(String::new(), |r| {
        format!("test top-1 {:.2} % · ", r.eval.top1_all)
    });
    let text = format!(
        "{acc}step {}/{} · epoch {:.2} · loss {:.4} · batch accuracy {:.1} % · {:.0} images/s · lr {:.2e}",
        last.step, last.steps, last.epoch, last.loss, 100.0 * last.accuracy, last.images_per_s, last.lr
    );
    // Wrapped at the separators, so a narrow terminal shows every figure.
    let lines = super::fill(&text, " · ", area.width.saturating_sub(2) as usize);
    let [head, curves] = Layout::vertical([
        Constraint::Length(lines.len() as u16 + 2),
        Constraint::Min(6),
    ])
    .areas(area);
    f.render_widget(
        Paragraph::new(lines.join("\n")).block(super::block(format!(" {} ", run.label), t)),
        head,
    );
    let [l, r] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(curves);
    // One figure of every step, by step, as a 20-step mean.
    let curve = |figure: fn(&crate::train::TrainEvent) -> f64| {
        let pts: Vec<(f64, f64)> = run
            .trace
            .train
            .iter()
            .map(|e| (e.step as f64, figure(e)))
            .collect();
        smooth(&pts, 20)
    };
    let (loss, acc) = (curve(|e| e.loss), curve(|e| e.accuracy));
    let ymax = loss.iter().fold(0f64, |m, p| m.max(p.1)).max(1e-3) * 1.1;
    let steps = last.steps as f64;
    f.render_widget(
        chart(" loss (20-step mean) ", &loss, steps, ymax, t.bad, t),
        l,
    );
    f.render_widget(
        chart(
            " batch accuracy (20-step mean) ",
            &acc,
            steps,
            1.0,
            t.good,
            t,
        ),
        r,
    );
}
