//! Shoal's wire protocol and the domain vocabulary every crate speaks.

/// Generated gRPC messages and services (package `shoal.v1`).
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("shoal.v1");
}

pub mod assignments;
pub mod config;
pub mod daemon;
pub mod host;
pub mod limits;
pub mod live_tls;
pub mod manager_dir;
pub mod pki;
pub mod registry;
pub mod resolve;
pub mod seccomp;
pub mod secure_file;
pub mod security;
pub mod spec;
pub mod state;
pub mod template;
pub mod token;
pub mod units;
pub mod wire;

/// A new random object id: 25 lower-case alphanumerics, as swarm's ids.
pub fn new_id() -> String {
    token::new_secret()
}

impl v1::Meta {
    /// The meta of an object first written at `now_ns`.
    pub fn new_at(now_ns: i64) -> Self {
        Self {
            version: 0,
            created_at: now_ns,
            updated_at: now_ns,
        }
    }
}

/// Unix time in nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
