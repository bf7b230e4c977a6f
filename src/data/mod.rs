//! Datasets: image folders, CIFAR binaries, MNIST IDX; preprocessing; class
//! subsets; seeded per-class sampling; a process-wide decode cache so the
//! 50,000-image train split is decoded once per process, not once per job.
pub mod formats;
pub mod preprocess;
pub mod root;
pub mod split;
pub mod subset;

pub use preprocess::Preprocess;
pub use root::{DatasetRoot, SplitKind};
pub use split::{Image, Split};
pub use subset::{default_calib, parse_classes, sample_per_class, sample_spread, spread};
