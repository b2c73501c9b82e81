//! The contract of a manager's data dir between `shoal-manager` and the agent that supervises
//! the manager it started for `node promote`: the state file whose presence marks a complete
//! data dir (a member that restarts with `shoal-manager run`), its shape, and the exit status of
//! a manager that was removed from the cluster's managers.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The state file of a manager's data dir, written last at `init` and `join`.
pub const STATE_FILE: &str = "manager.json";

/// Exit status of `shoal-manager` when it stopped because it was removed from the Raft group
/// (`node demote`, `node rm`), so a supervisor does not start it again.
pub const EXIT_REMOVED: u8 = 3;

/// The path of the state file in `data_dir`.
pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATE_FILE)
}

/// Whether `data_dir` holds a complete manager (a member, restarted with `shoal-manager run`)
/// rather than nothing or an unfinished join.
pub fn is_member(data_dir: &Path) -> bool {
    state_path(data_dir).exists()
}

/// What a manager keeps about itself in its state file ([`STATE_FILE`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerState {
    /// Cluster id.
    pub cluster_id: String,
    /// This manager's node id.
    pub node_id: String,
    /// This manager's Raft id.
    pub raft_id: u64,
    /// Address the gRPC server binds.
    pub listen_addr: String,
    /// Address other nodes use to reach this manager.
    pub advertise_addr: String,
    /// True for a manager that joined an existing cluster (it never bootstraps a Raft group).
    #[serde(default)]
    pub joined: bool,
    /// The managers known at join time, `(raft id, address)`, until the store knows them.
    #[serde(default)]
    pub peers: Vec<(u64, String)>,
    /// Manager certificate fingerprints trusted before the store has caught up.
    #[serde(default)]
    pub trusted_fingerprints: Vec<String>,
    /// Where the Docker Engine API is served over TLS (`--docker-api-addr`), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_api_addr: Option<String>,
    /// The unix socket the Docker Engine API is served on (`--docker-api-socket`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_api_socket: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_file_of_an_older_version_still_reads() {
        // Written before `joined`, `peers` and `trusted_fingerprints` existed.
        let old = r#"{"cluster_id":"c","node_id":"n","raft_id":1,
            "listen_addr":"0.0.0.0:4242","advertise_addr":"10.0.0.1:4242"}"#;
        let state: ManagerState = serde_json::from_str(old).expect("old manager.json");
        assert_eq!(state.raft_id, 1);
        assert!(!state.joined && state.peers.is_empty());
        assert_eq!(state.docker_api_addr, None);
        assert_eq!(state.docker_api_socket, None);
    }

    #[test]
    fn membership_is_the_state_files_presence() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!is_member(dir.path()));
        std::fs::write(state_path(dir.path()), "{}").expect("write");
        assert!(is_member(dir.path()));
    }
}
