//! The terminal dashboard: the only module that imports ratatui/crossterm.
//! `event_loop` turns terminal events and job events into `app::Action`s and
//! carries out `app::Effect`s; `view` draws `app::State` with pure functions.
pub mod event_loop;
pub mod terminal;
pub mod theme;
pub mod view;

pub use event_loop::{run_dashboard, DashboardOptions};
pub use theme::Theme;
