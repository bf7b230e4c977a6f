//! CoRa: per-layer ranks against the maximum rank, the selected layer's
//! residual spectrum with the Butterworth cut-off, budget use, search loss.
use crate::app::state::State;
use crate::quant::cora::butterworth;
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, Gauge, GraphType, Paragraph};
use ratatui::Frame;

pub fn render(f: &mut Frame, area: Rect, s: &State, t: &Theme) {
    let Some(c) = s.current_run().and_then(|r| r.cora.as_ref()) else {
        f.render_widget(
            Paragraph::new("No CoRa run yet. On Setup choose a quantizer `rtn+cora` or `gptq+cora`, set the CoRa budget, and press Enter.").block(super::block(" CoRa ", t)),
            area,
        );
        return;
    };
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(area);
    let sel = s.layer_cursor.min(c.spectra.len().saturating_sub(1));
    let bar_w = left.width.saturating_sub(26) as usize;
    let lines: Vec<Line> = c
        .spectra
        .iter()
        .enumerate()
        .map(|(i, (name, sv))| {
            let rmax = sv.len().max(1);
            let r = match &c.ranks {
                Some(rk) => rk.get(i).copied().unwrap_or(0) as f64,
                None => c.relaxed.get(i).copied().unwrap_or(0.0) * rmax as f64,
            };
            let filled = ((r / rmax as f64) * bar_w as f64).round() as usize;
            let style = if i == sel {
                Style::default()
                    .add_modifier(Modifier::BOLD)
                    .bg(t.highlight_bg)
            } else {
                Style::default()
            };
            Line::from(vec![
                Span::styled(
                    format!("{:<16}", name.chars().take(16).collect::<String>()),
                    style,
                ),
                Span::styled("█".repeat(filled.min(bar_w)), Style::default().fg(t.accent)),
                Span::styled(
                    "░".repeat(bar_w.saturating_sub(filled)),
                    Style::default().fg(t.muted),
                ),
                Span::raw(format!(" {:>4.0}/{rmax}", r)),
            ])
        })
        .collect();
    let title = if c.ranks.is_some() {
        " ranks (final) · ↑/↓ layer "
    } else {
        " ranks (searching: r̃·R) · ↑/↓ layer "
    };
    f.render_widget(Paragraph::new(lines).block(super::block(title, t)), left);

    let [spec, budget, hist] = Layout::vertical([
        Constraint::Percentage(50),
        Constraint::Length(3),
        Constraint::Min(5),
    ])
    .areas(right);
    if let Some((name, sv)) = c.spectra.get(sel) {
        let smax = sv.first().copied().unwrap_or(1.0).max(1e-12);
        let pts: Vec<(f64, f64)> = sv
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64, v / smax))
            .collect();
        let rt = c.relaxed.get(sel).copied().unwrap_or(1.0);
        let (t2, _) = butterworth(sv.len(), rt, 4);
        let cut: Vec<(f64, f64)> = t2.iter().enumerate().map(|(i, v)| (i as f64, *v)).collect();
        let n = sv.len() as f64;
        let chart = Chart::new(vec![
            Dataset::default()
                .name("σ_i / σ_0")
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(t.fp))
                .data(&pts),
            Dataset::default()
                .name("T² kernel")
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(t.quant))
                .data(&cut),
        ])
        .block(super::block(
            format!(" {name}: residual spectrum, cut-off r̃ = {rt:.2} "),
            t,
        ))
        .x_axis(
            Axis::default()
                .bounds([0.0, n])
                .labels(vec![Line::from("0"), Line::from(format!("{n:.0}"))])
                .style(Style::default().fg(t.muted)),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, 1.0])
                .labels(vec![Line::from("0"), Line::from("1")])
                .style(Style::default().fg(t.muted)),
        );
        f.render_widget(chart, spec);
    }
    let used = match &c.ranks {
        Some(_) if c.conv_params > 0 => c.extra_params as f64 / c.conv_params as f64,
        _ => c.history.last().map_or(0.0, |h| h.1),
    };
    f.render_widget(
        Gauge::default()
            .block(super::block(" adapter parameters / conv parameters ", t))
            .gauge_style(
                Style::default()
                    .fg(if used <= c.budget * 1.001 {
                        t.good
                    } else {
                        t.warn
                    })
                    .bg(t.highlight_bg),
            )
            .ratio((used / (2.0 * c.budget.max(1e-6))).clamp(0.0, 1.0))
            .label(format!(
                "{:.2} % used of {:.0} % budget",
                100.0 * used,
                100.0 * c.budget
            )),
        budget,
    );
    let [hist, by_budget] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(hist);
    render_accuracy_vs_budget(f, by_budget, s, t);
    let pts: Vec<(f64, f64)> = c
        .history
        .iter()
        .enumerate()
        .map(|(i, h)| (i as f64 + 1.0, h.0))
        .collect();
    let ymax = pts.iter().fold(0f64, |m, p| m.max(p.1)).max(1e-3) * 1.1;
    let iters = pts.len().max(1) as f64;
    f.render_widget(
        Chart::new(vec![Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(t.bad))
            .data(&pts)])
        .block(super::block(" search loss by iteration ", t))
        .x_axis(
            Axis::default()
                .bounds([0.0, iters])
                .labels(vec![Line::from("0"), Line::from(format!("{iters:.0}"))])
                .style(Style::default().fg(t.muted)),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, ymax])
                .labels(vec![Line::from("0"), Line::from(format!("{ymax:.2}"))])
                .style(Style::default().fg(t.muted)),
        ),
        hist,
    );
}

/// Top-1 against adapter budget over the saved CoRa runs.
fn render_accuracy_vs_budget(f: &mut Frame, area: Rect, s: &State, t: &Theme) {
    let mut pts: Vec<(f64, f64)> = s
        .results
        .iter()
        .filter_map(|r| Some((100.0 * r.spec.cora.as_ref()?.budget, r.eval.top1_all)))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (lo, hi) = pts
        .iter()
        .fold((100.0f64, 0.0f64), |(l, h), p| (l.min(p.1), h.max(p.1)));
    let (lo, hi) = if pts.is_empty() {
        (0.0, 100.0)
    } else {
        ((lo - 2.0).max(0.0), (hi + 2.0).min(100.0))
    };
    f.render_widget(
        Chart::new(vec![Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Scatter)
            .style(Style::default().fg(t.good))
            .data(&pts)])
        .block(super::block(
            format!(" top-1 vs budget ({} runs) ", pts.len()),
            t,
        ))
        .x_axis(
            Axis::default()
                .bounds([0.0, 25.0])
                .labels(vec![Line::from("0 %"), Line::from("25 %")])
                .style(Style::default().fg(t.muted)),
        )
        .y_axis(
            Axis::default()
                .bounds([lo, hi])
                .labels(vec![
                    Line::from(format!("{lo:.0}")),
                    Line::from(format!("{hi:.0}")),
                ])
                .style(Style::default().fg(t.muted)),
        ),
        area,
    );
}
