//! The headless application: `State`, the `Action`s that change it, and
//! `update(&mut State, Action) -> Vec<Effect>`. No terminal, no threads, no
//! I/O here — effects are returned for the event loop to carry out, so every
//! behaviour can be unit-tested by feeding actions.
pub mod action;
pub mod path_complete;
pub mod setup;
pub mod state;
pub mod update;

pub use action::{Action, Effect, Key, ModelInfo};
pub use setup::{Field, SetupForm};
pub use state::{LiveRun, Screen, State};
pub use update::update;
