//! Who the managers are and how that changes: manager joins (admitted on the leader), promotion
//! and demotion (on the leader, in one place each), the `Raft` and `ClusterAdmin` gRPC services,
//! and the managers' status kept in the store. The Raft group itself and its transport are in
//! [`crate::raft`]; the store records of manager nodes in [`crate::node_record`].

pub mod admin;
pub mod demote;
pub mod join;
pub mod promote;
pub mod service;
pub mod status;

pub use admin::ClusterAdminService;
pub use demote::check_demotion;
pub use promote::check_promotion;
pub use service::RaftService;
pub use status::{manager_view, run_manager_status};

#[cfg(test)]
mod tests;
