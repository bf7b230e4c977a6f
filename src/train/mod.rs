//! Training: a taped forward pass over the (unfused) graph with BatchNorm in
//! training mode, the backward pass of every op, optimisers and schedules,
//! fine-tuning and quantization-aware training.
pub mod augment;
pub mod backward;
pub mod cora_job;
pub mod cora_rules;
pub mod cora_search;
pub mod finetune;
pub mod optim;
pub mod qat;
pub mod tape;

pub use finetune::{finetune, TrainConfig, TrainEvent, TrainReport};
