//! Colour themes from TOML: three built in (`themes/*.toml`, compiled in so
//! the binary works anywhere), plus any `*.toml` in a user theme folder.
use crate::{Error, Result};
use ratatui::style::Color;
use serde::Deserialize;
use std::path::Path;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq)]
pub struct Theme {
    pub name: String,
    pub bg: Color,
    pub fg: Color,
    pub muted: Color,
    pub accent: Color,
    pub highlight_bg: Color,
    pub good: Color,
    pub warn: Color,
    pub bad: Color,
    pub fp: Color,
    pub quant: Color,
}

#[derive(Deserialize)]
struct ThemeFile {
    name: String,
    bg: String,
    fg: String,
    muted: String,
    accent: String,
    highlight_bg: String,
    good: String,
    warn: String,
    bad: String,
    fp: String,
    quant: String,
}

const BUILT_IN: [(&str, &str); 3] = [
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.toml"),
    ),
];

impl Theme {
    pub fn parse(text: &str, origin: &str) -> Result<Theme> {
        // One line for the status bar: the message and its line number,
        // not the parser's multi-line excerpt.
        let f: ThemeFile = toml::from_str(text).map_err(|e: toml::de::Error| {
            let at = e.span().map_or(String::new(), |r| {
                let line = text[..r.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            });
            Error::Invalid(format!("theme {origin}: {}{at}", e.message().trim()))
        })?;
        let c = |field: &str, v: &str| {
            Color::from_str(v).map_err(|_| {
                Error::Invalid(format!(
                    "theme {origin}: `{field} = \"{v}\"` is not a colour"
                ))
            })
        };
        Ok(Theme {
            name: f.name.clone(),
            bg: c("bg", &f.bg)?,
            fg: c("fg", &f.fg)?,
            muted: c("muted", &f.muted)?,
            accent: c("accent", &f.accent)?,
            highlight_bg: c("highlight_bg", &f.highlight_bg)?,
            good: c("good", &f.good)?,
            warn: c("warn", &f.warn)?,
            bad: c("bad", &f.bad)?,
            fp: c("fp", &f.fp)?,
            quant: c("quant", &f.quant)?,
        })
    }

    /// Built-in themes, then user themes from `dir` (a user theme with a
    /// built-in's name replaces it).
    pub fn load_all(dir: Option<&Path>) -> (Vec<Theme>, Vec<String>) {
        let mut themes: Vec<Theme> = BUILT_IN
            .iter()
            .filter_map(|(n, t)| Theme::parse(t, n).ok())
            .collect();
        let mut errors = vec![];
        if let Some(entries) = dir.and_then(|d| std::fs::read_dir(d).ok()) {
            for p in entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            {
                match std::fs::read_to_string(&p)
                    .map_err(|e| Error::io(&p, e))
                    .and_then(|t| Theme::parse(&t, &p.display().to_string()))
                {
                    Ok(t) => {
                        themes.retain(|x| x.name != t.name);
                        themes.push(t);
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        (themes, errors)
    }
}
