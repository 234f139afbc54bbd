//! Training end to end: the trainer, CNNs, checkpoints, data loading, metrics and
//! run logs.

#[path = "../common/models.rs"]
mod common_models;

mod checkpoint;
mod cnn;
mod data;
mod data_parallel;
mod layers;
mod metrics;
mod runlog;
mod sequence;
mod text;
mod training;
mod trajectories;
mod vision;
mod vocabulary;
