//! Pure render functions: `(frame, area, &State, &Theme)`, no I/O, no compute.
pub mod compare;
pub mod cora;
pub mod help;
pub mod histogram;
pub mod layers;
pub mod results;
pub mod setup;
pub mod subsets;
pub mod training;

use crate::app::state::{RunStatus, Screen, State};
use crate::tui::theme::Theme;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Tabs, Wrap};
use ratatui::Frame;

pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

pub fn render(f: &mut Frame, s: &State, t: &Theme) {
    let area = f.area();
    f.render_widget(
        Block::default().style(Style::default().bg(t.bg).fg(t.fg)),
        area,
    );
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "Terminal too small: {}×{}.\nqscope needs at least {MIN_WIDTH}×{MIN_HEIGHT}.\nEnlarge the window, or press q to quit.",
            area.width, area.height
        );
        let y = area.height.saturating_sub(3) / 2;
        let r = Rect {
            x: area.x,
            y: area.y + y,
            width: area.width,
            height: area.height.min(3),
        };
        f.render_widget(
            Paragraph::new(msg)
                .alignment(Alignment::Center)
                .wrap(Wrap { trim: true })
                .style(Style::default().fg(t.warn)),
            r,
        );
        return;
    }
    let [tabs, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    // The eight tabs take 92 cells; on a narrower terminal (80 columns is
    // common) shorten two names and the padding so "8 Subsets" stays visible.
    let compact = tabs.width < 92;
    let titles: Vec<Line> = Screen::TABS
        .iter()
        .map(|s| match (compact, *s) {
            (true, Screen::Histogram) => Line::from("3 Hist"),
            (true, Screen::Training) => Line::from("6 Train"),
            _ => Line::from(s.title()),
        })
        .collect();
    let selected = Screen::TABS
        .iter()
        .position(|x| *x == s.screen)
        .unwrap_or(0);
    f.render_widget(
        Tabs::new(titles)
            .select(selected)
            .style(Style::default().fg(t.muted))
            .highlight_style(Style::default().fg(t.accent).add_modifier(Modifier::BOLD))
            .divider("│")
            .padding(if compact { "" } else { " " }, " "),
        tabs,
    );
    match s.screen {
        Screen::Setup => setup::render(f, body, s, t),
        Screen::Layers => layers::render(f, body, s, t),
        Screen::Histogram => histogram::render(f, body, s, t),
        Screen::Results => results::render(f, body, s, t),
        Screen::Compare => compare::render(f, body, s, t),
        Screen::Training => training::render(f, body, s, t),
        Screen::Cora => cora::render(f, body, s, t),
        Screen::Subsets => subsets::render(f, body, s, t),
    }
    render_status(f, status, s, t);
    if s.help {
        help::render(f, area, s.help_scroll, t);
    }
}

/// A block title of `parts` joined by ` · `, as many as fit a block `width`
/// wide (the rest are key hints, all listed under `?`).
pub(crate) fn fit_title(parts: &[String], width: u16) -> String {
    let room = (width as usize).saturating_sub(4);
    let mut title = String::new();
    for p in parts {
        let next = if title.is_empty() {
            p.clone()
        } else {
            format!("{title} · {p}")
        };
        if !title.is_empty() && next.chars().count() > room {
            break;
        }
        title = next;
    }
    format!(" {title} ")
}

/// `text` broken into lines of at most `width` characters at `sep` (a
/// part longer than `width` gets a line of its own).
pub(crate) fn fill(text: &str, sep: &str, width: usize) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for part in text.split(sep) {
        match out.last_mut() {
            Some(l) if l.chars().count() + sep.chars().count() + part.chars().count() <= width => {
                l.push_str(sep);
                l.push_str(part);
            }
            _ => out.push(part.to_string()),
        }
    }
    out
}

/// `1 run`, `3 runs`: a count with its noun.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A job stage as shown: `evaluating 2304/10000`, or just its name for a
/// single step (`loading train images`, not `… 0/1`).
pub(crate) fn stage_label(name: &str, done: usize, total: usize) -> String {
    if total <= 1 {
        name.to_string()
    } else {
        format!("{name} {done}/{total}")
    }
}

fn render_status(f: &mut Frame, area: Rect, s: &State, t: &Theme) {
    let mut spans = vec![];
    if let Some(r) = s.running() {
        let stage = r
            .stage
            .as_ref()
            .map_or("starting".to_string(), |(n, d, tot)| {
                stage_label(n, *d, *tot)
            });
        spans.push(Span::styled(
            format!(" ● {} — {stage} ", r.label),
            Style::default().fg(t.bg).bg(t.accent),
        ));
        let queued = s
            .runs
            .iter()
            .filter(|r| r.status == RunStatus::Queued)
            .count();
        if queued > 0 {
            spans.push(Span::styled(
                format!(" +{queued} queued "),
                Style::default().fg(t.muted),
            ));
        }
    } else {
        spans.push(Span::styled(" idle ", Style::default().fg(t.muted)));
    }
    if let Some(m) = &s.message {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(m.clone(), Style::default().fg(t.warn)));
    }
    let theme = s.theme_names.get(s.theme).map_or("", String::as_str);
    // The timings are for the curious; on a narrow terminal the job's status
    // message needs the room.
    // (and a message that would not fit beside them makes way too).
    let left: usize = spans.iter().map(|sp| sp.content.chars().count()).sum();
    let fits = |r: &str| left + r.chars().count() <= area.width as usize;
    let full = format!(
        "render {:.1} ms · key→draw {:.0} ms · {theme} · ? help ",
        s.perf.render_ms, s.perf.key_to_draw_ms,
    );
    let short = format!("{theme} · ? help ");
    let right = if area.width >= 100 && fits(&full) {
        full
    } else if fits(&short) || s.message.is_none() {
        short
    } else {
        "? help ".to_string()
    };
    let [l, r] = Layout::horizontal([
        Constraint::Min(0),
        Constraint::Length(right.chars().count() as u16),
    ])
    .areas(area);
    f.render_widget(Paragraph::new(Line::from(spans)), l);
    f.render_widget(
        Paragraph::new(right)
            .style(Style::default().fg(t.muted))
            .alignment(Alignment::Right),
        r,
    );
}

/// A screen with nothing to show yet: what to do, wrapped to the width (an
/// 80-column terminal cut these sentences off mid-word).
pub fn empty_state(f: &mut Frame, area: Rect, title: &str, text: &str, t: &Theme) {
    f.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .block(block(title, t)),
        area,
    );
}

/// A bordered block in the theme's colours.
pub fn block<'a>(title: impl Into<Line<'a>>, t: &Theme) -> Block<'a> {
    Block::bordered()
        .title(title)
        .border_style(Style::default().fg(t.muted))
        .title_style(Style::default().fg(t.accent))
}

/// Colour for an SQNR figure: green above 20 dB, yellow above 10, red below.
pub fn sqnr_color(db: f64, t: &Theme) -> ratatui::style::Color {
    if db >= 20.0 {
        t.good
    } else if db >= 10.0 {
        t.warn
    } else {
        t.bad
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_title_keeps_the_parts_that_fit() {
        let parts = ["Results: 3 runs", "s sort", "e export CSV"].map(String::from);
        assert_eq!(
            super::fit_title(&parts, 80),
            " Results: 3 runs · s sort · e export CSV "
        );
        assert_eq!(super::fit_title(&parts, 30), " Results: 3 runs · s sort ");
        assert_eq!(super::fit_title(&parts, 10), " Results: 3 runs ");
    }

    #[test]
    fn a_single_step_stage_shows_no_count() {
        assert_eq!(
            super::stage_label("loading train images", 0, 1),
            "loading train images"
        );
        assert_eq!(
            super::stage_label("evaluating", 2304, 10000),
            "evaluating 2304/10000"
        );
    }
}
