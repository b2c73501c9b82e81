//! Shoal manager.

pub mod orchestrator;
pub mod scheduler;
