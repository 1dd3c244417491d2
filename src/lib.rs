//! bertcls: fine-tune BERT for text classification and serve its predictions.
//!
//! The library holds everything; the `bertcls` binary is a thin command line over it
//! ([`cli`]). Start from [`train::train`] to fine-tune, [`infer::Classifier`] to load a model
//! and score texts, and its front ends [`eval::evaluate_file`], [`predict::predict_file`] and
//! [`serve::serve`].

pub mod atomic;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod eval;
pub mod infer;
pub mod interrupt;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod panics;
pub mod predict;
pub mod report;
pub mod rng;
pub mod serve;
pub mod source;
pub mod task;
pub mod terminal;
pub mod testing;
pub mod tokenize;
pub mod train;
