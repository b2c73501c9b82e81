//! The bounds of what a client may ask for and of what goes over the wire, in one place so the
//! manager, the agent, shoalctl and docs/cli.md agree. Each is far above what a real cluster
//! needs (close to what swarm and Kubernetes allow) and low enough that a typo or an abusive
//! client is refused with a clear error instead of making a manager allocate without bound.

/// Most replicas of one service (`--replicas`, `service scale`): the orchestrator plans one slot
/// per replica, so `scale web=100000000000` must be refused, not planned.
pub const MAX_REPLICAS: u64 = 100_000;

/// Most labels on one object (a service, a network, a node).
pub const MAX_LABELS: usize = 64;

/// Longest label key, in bytes (Kubernetes allows 63 plus a 253-byte prefix; keys are names).
pub const MAX_LABEL_KEY_BYTES: usize = 128;

/// Longest label value, in bytes (labels are matched by constraints, not used as storage).
pub const MAX_LABEL_VALUE_BYTES: usize = 4 * 1024;

/// Most driver options (`--opt`) of one network.
pub const MAX_NETWORK_OPTIONS: usize = 64;

/// Most environment entries (`--env`) of one service.
pub const MAX_ENV_ENTRIES: usize = 1_000;

/// Longest environment entry `KEY=VALUE`, in bytes (the kernel caps one string at 128 KiB).
pub const MAX_ENV_ENTRY_BYTES: usize = 32 * 1024;

/// Largest service or network spec, protobuf-encoded: every task carries a copy of its spec, so
/// the store, Raft log and each agent's assignments grow with it (a custom seccomp profile, the
/// largest part of a usual spec, is about 30 KiB).
pub const MAX_SPEC_BYTES: usize = 512 * 1024;

/// Largest secret (`secret create`), as docker: secrets are small (keys, passwords), and every
/// node running a task that mounts one holds it in memory.
pub const SECRET_MAX_BYTES: usize = 500 * 1024;

/// Largest config (`config create`), as docker's 1000 KiB.
pub const CONFIG_MAX_BYTES: usize = 1000 * 1024;

/// Largest request a manager's control API and cluster-admin service decode: a spec at its
/// limit fits many times over, and a config several times its limit still arrives whole, so
/// its size is refused by `config create` with a message naming the limit. Only something that
/// was never a valid request is cut off (with `OUT_OF_RANGE`, after reading the 5-byte frame
/// header and nothing more).
pub const MAX_CONTROL_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Largest reply of the control API (encoded by the manager, decoded by shoalctl): `task ls`
/// or `service ls` of a cluster at its limits (hundreds of thousands of tasks) still fits.
pub const MAX_CONTROL_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Largest certificate request or reply: a join token, a CSR and a hostname one way, two
/// certificates and the manager addresses the other. The callers are not authenticated yet, so
/// this is kept small: a stranger cannot make a manager buffer more than this.
pub const MAX_CA_MESSAGE_BYTES: usize = 64 * 1024;

/// Largest message an agent sends on its session: a batch of task status updates or a log chunk
/// (at most 1 MiB of log lines, one longer line alone).
pub const MAX_AGENT_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Largest message a manager sends an agent: its complete assignment set with the views of its
/// networks (every task address of every service on them), at the cluster's limits.
pub const MAX_ASSIGNMENTS_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Largest Raft message between managers: a whole store snapshot travels as one message.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// Largest request the Raft service reads from a caller that is not a manager (a manager
/// joining with a token, a status probe): like the CA's, small, because nobody vouched for it.
pub const MAX_UNAUTHENTICATED_RAFT_REQUEST_BYTES: usize = 64 * 1024;

/// Shortest certificate lifetime `--cert-expiry` accepts (short ones are for tests).
pub const MIN_CERT_EXPIRY_NS: i64 = 60 * 1_000_000_000;

/// Longest certificate lifetime `--cert-expiry` accepts: 10 years.
pub const MAX_CERT_EXPIRY_NS: i64 = 10 * 365 * 24 * 3600 * 1_000_000_000;

/// Lifetime of node and admin certificates when the cluster sets none: 90 days, as swarm.
pub const DEFAULT_CERT_EXPIRY_NS: i64 = 90 * 24 * 3600 * 1_000_000_000;

/// A certificate lifetime out of bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cert-expiry: {given_s} s is outside the accepted range of 1 minute to 10 years")]
pub struct CertExpiryError {
    /// The lifetime given, seconds.
    pub given_s: i64,
}

/// Checks a certificate lifetime (nanoseconds) against the bounds.
pub fn check_cert_expiry(ns: i64) -> Result<(), CertExpiryError> {
    if (MIN_CERT_EXPIRY_NS..=MAX_CERT_EXPIRY_NS).contains(&ns) {
        Ok(())
    } else {
        Err(CertExpiryError {
            given_s: ns / 1_000_000_000,
        })
    }
}

/// The certificate lifetime a cluster object's `cert_expiry_ns` stands for.
pub fn cert_expiry_or_default(ns: i64) -> i64 {
    if ns > 0 {
        ns
    } else {
        DEFAULT_CERT_EXPIRY_NS
    }
}
