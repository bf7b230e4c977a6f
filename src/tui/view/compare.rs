use crate::app::state::State;
use crate::tui::theme::Theme;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Row, Table, TableState};
use ratatui::Frame;

pub fn render(f: &mut Frame, area: Rect, s: &State, t: &Theme) {
    let (Some(a), Some(b)) = (
        s.marked.first().and_then(|&i| s.results.get(i)),
        s.marked.get(1).and_then(|&i| s.results.get(i)),
    ) else {
        super::empty_state(
            f,
            area,
            " Compare ",
            "Mark two runs on the Results screen (space), then press c.",
            t,
        );
        return;
    };
    let rows: Vec<Row> = a
        .layers
        .iter()
        .map(|la| {
            let lb = b.layers.iter().find(|l| l.name == la.name);
            let d = lb.map(|lb| lb.sqnr_db - la.sqnr_db);
            Row::new(vec![
                Line::from(la.name.clone()),
                Line::from(la.bits.to_string()),
                Line::from(format!("{:.2}", la.sqnr_db)),
                Line::from(lb.map_or("—".into(), |l| l.bits.to_string())),
                Line::from(lb.map_or("—".into(), |l| format!("{:.2}", l.sqnr_db))),
                Line::from(match d {
                    Some(d) => Span::styled(
                        format!("{d:+.2}"),
                        Style::default().fg(if d >= 0.0 { t.good } else { t.bad }),
                    ),
                    None => Span::raw("—"),
                }),
            ])
        })
        .collect();
    let full = format!(
        " A: {} {} ({:.2} %)   vs   B: {} {} ({:.2} %) ",
        a.arch, a.label, a.eval.top1_all, b.arch, b.label, b.eval.top1_all
    );
    // On a narrow terminal both accuracies matter more than the (usually
    // shared) architecture name and the spacing.
    let title = if full.chars().count() + 2 <= area.width as usize {
        full
    } else {
        format!(
            " A: {} ({:.2} %) vs B: {} ({:.2} %) ",
            a.label, a.eval.top1_all, b.label, b.eval.top1_all
        )
    };
    let widths = [
        Constraint::Min(20),
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Length(10),
    ];
    let mut at = TableState::default()
        .with_selected(Some(s.compare_cursor.min(a.layers.len().saturating_sub(1))));
    f.render_stateful_widget(
        Table::new(rows, widths)
            .header(
                Row::new(["layer", "bits A", "SQNR A", "bits B", "SQNR B", "Δ dB"])
                    .style(Style::default().fg(t.accent).add_modifier(Modifier::BOLD)),
            )
            .row_highlight_style(
                Style::default()
                    .bg(t.highlight_bg)
                    .add_modifier(Modifier::BOLD),
            )
            .block(super::block(title, t)),
        area,
        &mut at,
    );
}
