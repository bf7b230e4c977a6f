//! Jobs: a serialisable `JobSpec` in, `JobEvent`s out, a `RunResult` saved
//! atomically. The dashboard and the CLI build the same spec and call the same
//! `run`; nothing here knows about terminals.
pub mod calib_memory;
pub mod event;
pub mod runner;
pub mod spec;
pub mod store;
pub mod trace;

pub use event::JobEvent;
pub use runner::{run, RunResult};
pub use spec::JobSpec;
pub use store::ResultsStore;
pub use trace::{CoraTrace, Trace};
