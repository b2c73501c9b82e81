//! Shoal manager.

pub mod raft;
pub mod store;
