//! Shoal agent: joins a cluster, pulls images and runs tasks as containers under per-container
//! shims, so containers outlive an agent restart.

pub mod agent;
pub mod certs;
pub mod executor;
pub mod image;
pub mod join;
pub mod logs;
pub mod manager_proc;
pub mod network;
pub mod runtime;
pub mod secrets;
pub mod session;
pub mod task;
pub mod volumes;
pub mod worker;
