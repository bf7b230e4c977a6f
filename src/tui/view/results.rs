use crate::app::state::State;
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table, TableState};
use ratatui::Frame;

pub const COLUMNS: [&str; 11] = [
    "",
    "model",
    "method",
    "bits",
    "classes",
    "calib",
    "top-1 All",
    "Δ vs FP",
    "top-1 Sub",
    "size KiB",
    "lat. ms",
];

pub fn render(f: &mut Frame, area: Rect, s: &State, t: &Theme) {
    if s.results.is_empty() {
        f.render_widget(
            Paragraph::new("No results yet: finished jobs appear here and are saved in results/.")
                .block(super::block(" Results ", t)),
            area,
        );
        return;
    }
    let order = s.sorted_results();
    let rows: Vec<Row> = order
        .iter()
        .map(|&i| {
            let r = &s.results[i];
            let delta = s
                .baseline_for(r)
                .filter(|_| r.spec.quant.is_some())
                .map(|b| r.eval.top1_all - b.eval.top1_all);
            let delta_cell = match delta {
                Some(d) => Span::styled(
                    format!("{d:+.2}"),
                    Style::default().fg(if d >= -1.0 {
                        t.good
                    } else if d >= -5.0 {
                        t.warn
                    } else {
                        t.bad
                    }),
                ),
                None => Span::raw("—"),
            };
            Row::new(vec![
                Line::from(if s.marked.contains(&i) { "◆" } else { " " }),
                Line::from(r.arch.clone()),
                Line::from(r.label.clone()),
                Line::from(format!("{:.2}", r.bits_avg)),
                Line::from(
                    r.spec
                        .classes
                        .as_ref()
                        .map_or("all".into(), |c| c.join(",")),
                ),
                Line::from(if r.spec.quant.is_some() {
                    r.spec.calib.to_string()
                } else {
                    "—".into()
                }),
                Line::from(format!("{:.2}", r.eval.top1_all)),
                Line::from(delta_cell),
                Line::from(r.eval.top1_sub.map_or("—".into(), |v| format!("{v:.2}"))),
                Line::from(format!("{:.1}", r.size_bytes as f64 / 1024.0)),
                Line::from(format!("{:.2}", r.latency_ms)),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(1),
        Constraint::Length(10),
        Constraint::Length(12),
        Constraint::Length(5),
        Constraint::Min(8),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(8),
    ];
    let title = format!(
        " Results: {} runs · sorted by {}{} · s sort · space mark · c compare · e export CSV · Enter layers ",
        s.results.len(),
        s.sort.name(),
        if s.sort_desc { " ↓" } else { " ↑" }
    );
    let table = Table::new(rows, widths)
        .header(Row::new(COLUMNS).style(Style::default().fg(t.accent).add_modifier(Modifier::BOLD)))
        .block(super::block(title, t))
        .row_highlight_style(
            Style::default()
                .bg(t.highlight_bg)
                .add_modifier(Modifier::BOLD),
        );
    let mut ts = TableState::default().with_selected(Some(s.result_cursor.min(order.len() - 1)));
    f.render_stateful_widget(table, area, &mut ts);
}
