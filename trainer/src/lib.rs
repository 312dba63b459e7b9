//! Crucible's trainer: data sets, candle models, the training loop, data-centric recipes and
//! safetensors artifacts.
//!
//! How it fits together:
//!
//! - [`data`] reads a task's files (CSV rows of numeric features with an integer label last, or
//!   UTF-8 text) with bounded sizes and errors that name file, line and column, and applies the
//!   task's preprocessing (standardization, or the character vocabulary).
//! - [`task`] turns a data file into a task: a seeded split into public training and held-out
//!   parts (stratified for classification, a contiguous tail for text), the preprocessing computed
//!   on the training part, optional label noise, and the held-out commitment; [`sealed`] seals
//!   the held-out part under a key the creator reveals on chain only after the commit deadline.
//! - [`model`] holds the two architectures, with the tensor names and exact forward passes that
//!   validators and other tools rely on: [`model::mlp`] for classification and [`model::charlm`]
//!   for the character language model.
//! - [`artifact`] reads and writes the safetensors files that trainers submit.
//! - [`recipe`] is the data-centric recipe (a TOML file): model size, data fraction, label-noise
//!   filtering, augmentation, early stopping, dropout, fine-tuning, pruning.
//! - [`train`] runs a recipe: seeded and deterministic for a given seed and thread count, with
//!   the fused AdamW of [`optim`].
//! - [`eval`] scores a model on data in a fixed order: accuracy, bits per character, and the
//!   unigram and bigram baselines.

pub mod artifact;
pub mod data;
pub mod eval;
pub mod model;
pub mod optim;
pub mod recipe;
pub mod rng;
pub mod sealed;
pub mod task;
pub mod train;

/// candle's error type, which every tensor operation can return.
pub use candle_core::Error as CandleError;
