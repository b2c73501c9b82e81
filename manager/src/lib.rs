//! Shoal manager: the Raft-replicated cluster store, the control API, and (on the leader) the
//! orchestrator, scheduler and dispatcher.

pub mod allocator;
pub mod auth;
pub mod ca;
pub mod certs;
pub mod cluster;
pub mod controlapi;
pub mod dispatcher;
pub mod error;
pub mod leader;
pub mod lock;
pub mod manager;
pub mod orchestrator;
pub mod raft;
pub mod scheduler;
pub mod serve;
pub mod store;
