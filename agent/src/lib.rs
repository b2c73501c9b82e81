//! Shoal agent.

pub mod runtime;
