use crate::app::update::HELP;
use crate::tui::theme::Theme;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};
use ratatui::Frame;

/// The key list, scrolled by `scroll` lines when the terminal is too short
/// for all of it (80×24 shows about 18 of them); the title says what is
/// hidden and how to see it.
pub fn render(f: &mut Frame, area: Rect, scroll: usize, t: &Theme) {
    let h = (HELP.len() as u16 + 2).min(area.height);
    let shown = (h as usize).saturating_sub(2);
    let scroll = scroll.min(HELP.len().saturating_sub(shown));
    let below = HELP.len().saturating_sub(scroll + shown);
    let w = 86.min(area.width);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let lines: Vec<Line> = HELP
        .iter()
        .skip(scroll)
        .map(|(k, d)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:>16}  "),
                    Style::default().fg(t.accent).add_modifier(Modifier::BOLD),
                ),
                Span::raw(*d),
            ])
        })
        .collect();
    let title = if scroll + below == 0 {
        " keys — Esc or ? to close ".to_string()
    } else {
        format!(" keys — Esc or ? to close · ↑/↓ scroll: {scroll} above, {below} below ")
    };
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .block(super::block(title, t))
            .style(Style::default().bg(t.bg).fg(t.fg)),
        r,
    );
}
