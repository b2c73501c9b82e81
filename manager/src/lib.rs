//! Shoal manager: the Raft-replicated cluster store, the control API, and (on the leader) the
//! orchestrator, scheduler and dispatcher.

pub mod allocator;
pub mod auth;
pub mod ca;
pub mod certs;
pub mod controlapi;
pub mod dispatcher;
pub mod dockerapi;
pub mod error;
pub mod leader;
pub mod lock;
pub mod manager;
pub mod membership;
pub mod node_record;
pub mod orchestrator;
pub mod raft;
pub mod scheduler;
pub mod seal;
pub mod serve;
pub mod store;
#[cfg(test)]
mod test_support;
