//! CoRa: per-layer ranks against the maximum rank, the selected layer's
//! residual spectrum with the Butterworth cut-off, budget use, search loss.
use crate::app::state::State;
use crate::jobs::CoraTrace;
use crate::quant::cora::butterworth;
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, Gauge, GraphType, Paragraph};
use ratatui::Frame;

pub fn render(f: &mut Frame, area: Rect, s: &State, t: &Theme) {
    let Some(c) = s.current_run().and_then(|r| r.trace.cora.as_ref()) else {
        // A CoRa run saved before results kept their CoRa trace: its figures.
        let saved = s.current_run().and_then(|r| {
            r.spec.cora.as_ref()?;
            let res = r.result.as_ref()?;
            Some(format!(
                "{}: test top-1 {:.2} %, {:.1} KiB with its adapters. This result was saved without its ranks and spectra (by an earlier qscope); run it again from Setup to see them (`qscope info` on an exported model lists each layer's rank).",
                r.label,
                res.eval.top1_all,
                res.size_bytes as f64 / 1024.0
            ))
        });
        super::empty_state(
            f,
            area,
            " CoRa ",
            saved.as_deref().unwrap_or(
                "No CoRa run yet. On Setup choose a quantizer `rtn+cora` or `gptq+cora` (CoRa-O, the rank search) or `…+cora-h` (CoRa-H, the closed-form rules), set the CoRa budget, and press Enter.",
            ),
            t,
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
    let state = if c.ranks.is_some() {
        "ranks (final)"
    } else {
        "ranks (searching: r̃·R)"
    };
    let title = super::fit_title(&[state.into(), "↑/↓ layer".into()], left.width);
    // Scrolled so the selected layer stays in view (ResNet-56 has 55 convs).
    let visible = left.height.saturating_sub(2) as usize;
    let scroll = (sel + 1).saturating_sub(visible) as u16;
    f.render_widget(
        Paragraph::new(lines)
            .scroll((scroll, 0))
            .block(super::block(title, t)),
        left,
    );

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
        // CoRa-O's relaxed cut-off while (and after) it searches; a
        // closed-form rule has only its integer rank: a hard truncation.
        let (cut, kernel, cut_title): (Vec<(f64, f64)>, _, _) =
            match (c.relaxed.get(sel), c.ranks.as_ref()) {
                (None, Some(ranks)) => {
                    let r = ranks.get(sel).copied().unwrap_or(0);
                    let step = (0..sv.len())
                        .map(|i| (i as f64, if i < r { 1.0 } else { 0.0 }))
                        .collect();
                    (step, "kept", format!("rank {r}"))
                }
                (rt, _) => {
                    let rt = rt.copied().unwrap_or(1.0);
                    let (t2, _) = butterworth(sv.len(), rt, 4);
                    let k = t2.iter().enumerate().map(|(i, v)| (i as f64, *v)).collect();
                    (k, "T² kernel", format!("cut-off r̃ = {rt:.2}"))
                }
            };
        let n = sv.len() as f64;
        let chart = Chart::new(vec![
            Dataset::default()
                .name("σ_i / σ_0")
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(t.fp))
                .data(&pts),
            Dataset::default()
                .name(kernel)
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(t.quant))
                .data(&cut),
        ])
        .block(super::block(
            super::fit_title(
                &[format!("{name}: residual spectrum"), cut_title],
                spec.width,
            ),
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
    let method = s
        .current_run()
        .and_then(|r| r.spec.cora.as_ref())
        .map_or("optimal", |c| c.method.as_str());
    if method != "optimal" {
        render_rule_choice(f, hist, c, method, t);
        return;
    }
    let pts: Vec<(f64, f64)> = c
        .history
        .iter()
        .enumerate()
        .map(|(i, h)| (i as f64 + 1.0, h.0))
        .collect();
    // The loss carries the budget penalty's constant (γ·e⁰ while under
    // budget), so an axis from 0 would flatten the search into one line.
    let [ylo, yhi] = loss_bounds(pts.iter().map(|p| p.1));
    let iters = pts.len().max(1) as f64;
    // Each iteration sees one mini-batch, so the raw loss is noisy; the
    // moving average is what shows whether the search is converging.
    let trend = smoothed(&pts, 0.1);
    f.render_widget(
        Chart::new(vec![
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(t.muted))
                .data(&pts),
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(t.bad))
                .data(&trend),
        ])
        .block(super::block(
            super::fit_title(
                &["search loss".into(), "bright: average".into()],
                hist.width,
            ),
            t,
        ))
        .x_axis(
            Axis::default()
                .bounds([0.0, iters])
                .labels(vec![Line::from("0"), Line::from(format!("{iters:.0}"))])
                .style(Style::default().fg(t.muted)),
        )
        .y_axis(
            Axis::default()
                .bounds([ylo, yhi])
                .labels(vec![
                    Line::from(format!("{ylo:.2}")),
                    Line::from(format!("{yhi:.2}")),
                ])
                .style(Style::default().fg(t.muted)),
        ),
        hist,
    );
}

/// CoRa-H and the named rules have no search to plot: CoRa-H's panel lists
/// each rule's calibration cross-entropy, the chosen (lowest) first.
fn render_rule_choice(f: &mut Frame, area: Rect, c: &CoraTrace, method: &str, t: &Theme) {
    let lines: Vec<Line> = if c.rules.is_empty() {
        vec![Line::from(if c.ranks.is_some() {
            format!("Ranks by the closed-form `{method}` rule: no search.")
        } else {
            format!("Computing the `{method}` rule's ranks…")
        })]
    } else {
        c.rules
            .iter()
            .enumerate()
            .map(|(i, (rule, loss))| {
                let style = if i == 0 {
                    Style::default().fg(t.good).add_modifier(Modifier::BOLD)
                } else {
                    Style::default()
                };
                Line::styled(
                    format!("{} {rule:<9} {loss:.4}", if i == 0 { "▶" } else { " " }),
                    style,
                )
            })
            .collect()
    };
    let title = if c.rules.is_empty() {
        vec![format!("CoRa-{method}")]
    } else {
        vec!["CoRa-H: rule".into(), "calibration CE".into()]
    };
    f.render_widget(
        Paragraph::new(lines)
            .wrap(ratatui::widgets::Wrap { trim: false })
            .block(super::block(super::fit_title(&title, area.width), t)),
        area,
    );
}

/// The loss axis: the values' range with 5 % margins (at least ±0.01).
fn loss_bounds(values: impl Iterator<Item = f64>) -> [f64; 2] {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if lo > hi {
        return [0.0, 1.0];
    }
    let pad = (0.05 * (hi - lo)).max(0.01);
    [lo - pad, hi + pad]
}

/// Exponential moving average of the points' values (weight `alpha` on
/// the newest), started at the first value.
fn smoothed(pts: &[(f64, f64)], alpha: f64) -> Vec<(f64, f64)> {
    let mut avg = None;
    pts.iter()
        .map(|&(x, y)| {
            let a = avg.map_or(y, |a: f64| a + alpha * (y - a));
            avg = Some(a);
            (x, a)
        })
        .collect()
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
            super::fit_title(
                &["top-1 vs budget".into(), super::count(pts.len(), "run")],
                area.width,
            ),
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

#[cfg(test)]
mod tests {
    use super::{loss_bounds, smoothed};

    #[test]
    fn loss_axis_spans_the_values_not_zero() {
        let [lo, hi] = loss_bounds([11.8, 12.3, 11.9].into_iter());
        assert!((lo - 11.775).abs() < 1e-9 && (hi - 12.325).abs() < 1e-9);
        // A flat or empty history still gets an axis of non-zero height.
        assert_eq!(loss_bounds([2.0, 2.0].into_iter()), [1.99, 2.01]);
        assert_eq!(loss_bounds(std::iter::empty()), [0.0, 1.0]);
        assert_eq!(loss_bounds([f64::NAN, 3.0].into_iter()), [2.99, 3.01]);
    }

    #[test]
    fn moving_average_starts_at_the_first_value_and_follows() {
        let s = smoothed(&[(1.0, 10.0), (2.0, 20.0), (3.0, 20.0)], 0.5);
        assert_eq!(s, vec![(1.0, 10.0), (2.0, 15.0), (3.0, 17.5)]);
        assert!(smoothed(&[], 0.5).is_empty());
    }
}
