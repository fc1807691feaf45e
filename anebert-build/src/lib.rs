//! anebert-build: turns HuggingFace encoder checkpoints into ANE-optimized Core ML ML Programs.
//!
//! This crate holds the converter pipeline (source → checkpoint → IR → transforms → graph →
//! package). [`mil`] is the program builder the graph stage writes through.

pub mod mil;
