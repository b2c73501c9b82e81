//! Shoal agent.
pub mod network;
