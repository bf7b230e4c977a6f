use crate::app::state::{RunStatus, State};
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Bar, BarChart, BarGroup, Gauge, Row, Table, TableState};
use ratatui::Frame;

pub fn render(f: &mut Frame, area: Rect, s: &State, t: &Theme) {
    let Some(run) = s.current_run() else {
        super::empty_state(
            f,
            area,
            " Layers ",
            "No job yet. Press 1 for Setup and Enter to start one, or 4 to open a saved result.",
            t,
        );
        return;
    };
    let [head, table_area, chart] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(5),
        Constraint::Length(8),
    ])
    .areas(area);
    let status = match &run.status {
        RunStatus::Queued => "queued".to_string(),
        RunStatus::Running => "running".into(),
        RunStatus::Done => "done".into(),
        RunStatus::Failed(m) => format!("failed: {m}"),
        RunStatus::Cancelled => "cancelled".into(),
    };
    let total = run.layers.len().max(1);
    // A finished job that quantized no layer after training (FP32, fine-tune
    // or QAT) has no per-layer report: say what it was, not "0/20 layers".
    let no_report = (run.status == RunStatus::Done && run.done_layers() == 0).then(|| {
        match (&run.spec.quant, &run.spec.train) {
            (_, Some(tr)) if tr.qat_bits.is_some() => {
                "done · QAT quantizes while training: no per-layer report"
            }
            (_, Some(_)) => "done · fine-tuned in FP32: no layer quantized",
            _ => "done · FP32 baseline: no layer quantized",
        }
    });
    let (label, ratio) = match &run.stage {
        Some((name, d, tot)) => (
            super::stage_label(name, *d, *tot),
            *d as f64 / (*tot).max(1) as f64,
        ),
        None => match no_report {
            Some(what) => (what.to_string(), 1.0),
            None => (
                format!(
                    "{status} · {}/{} layers",
                    run.done_layers(),
                    run.layers.len()
                ),
                run.done_layers() as f64 / total as f64,
            ),
        },
    };
    let model = run
        .spec
        .model
        .file_name()
        .map_or(String::new(), |n| n.to_string_lossy().into_owned());
    let subset = run
        .spec
        .classes
        .as_ref()
        .map_or("all classes".to_string(), |c| c.join(","));
    // Calibration images only where a quantizer used them.
    let calib = if run.spec.quant.is_some() {
        format!(" · calib {}", run.spec.calib)
    } else {
        String::new()
    };
    let title = format!(" {} · {model} · {subset}{calib} ", run.label);
    let acc = run.result.as_ref().map_or(String::new(), |r| {
        format!(
            " top-1 All {:.2} %{} ",
            r.eval.top1_all,
            r.eval
                .top1_sub
                .map_or(String::new(), |v| format!(" · Sub {v:.2} %"))
        )
    });
    f.render_widget(
        Gauge::default()
            .block(
                super::block(title, t)
                    .title_bottom(Line::from(acc).style(Style::default().fg(t.good))),
            )
            .gauge_style(Style::default().fg(t.accent).bg(t.highlight_bg))
            .ratio(ratio.clamp(0.0, 1.0))
            .label(label),
        head,
    );
    let header = Row::new([
        "#", "layer", "shape", "bits", "MSE", "rel.err", "SQNR dB", "time s",
    ])
    .style(Style::default().fg(t.accent).add_modifier(Modifier::BOLD));
    let rows: Vec<Row> = run
        .layer_names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let what_if = s
                .setup
                .overrides
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| *b);
            match run.layers.get(i).and_then(|l| l.as_ref()) {
                Some(l) => {
                    let bits = match what_if {
                        Some(b) if b != l.bits => format!("{}→{b}", l.bits),
                        _ => l.bits.to_string(),
                    };
                    Row::new(vec![
                        Line::from(i.to_string()),
                        Line::from(name.clone()),
                        Line::from(format!(
                            "{}x{}x{}x{}",
                            l.shape[0], l.shape[1], l.shape[2], l.shape[3]
                        )),
                        Line::from(bits),
                        Line::from(format!("{:.3e}", l.mse)),
                        Line::from(format!("{:.4}", l.rel_error)),
                        Line::from(Span::styled(
                            format!("{:.2}", l.sqnr_db),
                            Style::default().fg(super::sqnr_color(l.sqnr_db, t)),
                        )),
                        Line::from(format!("{:.3}", l.seconds)),
                    ])
                }
                None => Row::new(vec![
                    i.to_string(),
                    name.clone(),
                    "".into(),
                    what_if.map_or(String::new(), |b| format!("→{b}")),
                    // Pending, or (a finished job without reports) none.
                    if no_report.is_some() { "—" } else { "…" }.into(),
                ])
                .style(Style::default().fg(t.muted)),
            }
        })
        .collect();
    let widths = [
        Constraint::Length(3),
        Constraint::Min(18),
        Constraint::Length(12),
        Constraint::Length(5),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(7),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(super::block(
            " Layers (↑/↓ select · Enter histogram · +/- what-if bits · r re-run) ",
            t,
        ))
        .row_highlight_style(
            Style::default()
                .bg(t.highlight_bg)
                .add_modifier(Modifier::BOLD),
        );
    let mut ts = TableState::default().with_selected(Some(
        s.layer_cursor.min(run.layer_names.len().saturating_sub(1)),
    ));
    f.render_stateful_widget(table, table_area, &mut ts);

    let bars: Vec<Bar> = run
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let db = l.as_ref().map_or(0.0, |l| l.sqnr_db.max(0.0));
            let color = l
                .as_ref()
                .map_or(t.muted, |l| super::sqnr_color(l.sqnr_db, t));
            let color = if i == s.layer_cursor { t.accent } else { color };
            Bar::default()
                .value((db * 10.0) as u64)
                .text_value(String::new())
                .style(Style::default().fg(color))
        })
        .collect();
    let inner = chart.width.saturating_sub(2) as usize;
    let n = bars.len().max(1);
    let bar_width = ((inner + 1) / n).saturating_sub(1).clamp(1, 6) as u16;
    let gap = u16::from(inner >= n * 2);
    f.render_widget(
        BarChart::default()
            .block(super::block(" SQNR by depth (dB; taller is better) ", t))
            .data(BarGroup::default().bars(&bars))
            .bar_width(bar_width)
            .bar_gap(gap),
        chart,
    );
}
