//! Shoal agent.

pub mod image;
