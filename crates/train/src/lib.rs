//! Training and running the DDPM: datasets, the trainer (Adam, warmup, clipping, EMA,
//! NaN/Inf detection), atomic checkpoints with exact resume, sampling, and image output.

pub mod autoencoder;
pub mod checkpoint;
pub mod classifier;
pub mod compose;
pub mod contrastive;
pub mod data;
pub mod error;
pub mod images;
pub mod latent_diffusion;
pub mod metrics;
pub mod pipeline;
pub mod trainer;

pub use error::{Result, TrainError};
pub use trainer::{StepStats, TrainConfig, Trainer};
pub mod report;
pub mod run;
pub mod sampling;
pub mod stage;
pub mod tokenizer;
