//! Shoal manager.

pub mod scheduler;
