//! `shoalctl cluster ...`: join tokens, admin credentials, settings, the CA, autolock.

use clap::{Args, Subcommand, ValueEnum};

use super::parse::parse_duration;

/// `shoalctl cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Print (or rotate) the token a new worker or manager joins with.
    JoinToken(JoinTokenArgs),
    /// Show every manager: Raft id, address, leader, term, commit and applied indexes.
    #[command(alias = "inspect")]
    Status,
    /// List, renew or revoke the admin credentials (admin.conf certificates) the cluster accepts.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Change cluster-wide settings: the lifetime of certificates, autolock.
    Update(ClusterUpdateArgs),
    /// Show the cluster's root CA (fingerprint, certificate lifetime, a rotation under way), or
    /// rotate it with --rotate.
    Ca(CaArgs),
    /// Unlock the managers restarted while autolock is on; the unlock key is read from stdin (or
    /// --key-file), never from the command line.
    Unlock(UnlockArgs),
    /// Print the key that unlocks managers under autolock, or replace it with --rotate.
    UnlockKey(UnlockKeyArgs),
    /// Point the docker CLI at the cluster: write admin.conf's CA, certificate and key for it,
    /// and print the `export DOCKER_HOST=… DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=…` lines to
    /// `eval "$(shoalctl cluster docker-env)"`. Needs managers started with --docker-api-addr.
    DockerEnv(DockerEnvArgs),
}

/// Arguments of `cluster docker-env`.
#[derive(Debug, Args)]
pub struct DockerEnvArgs {
    /// Where to write ca.pem, cert.pem and key.pem (an owner-only directory; key.pem 0600).
    /// Default: a `docker` directory beside admin.conf (~/.shoal/docker for ~/.shoal/admin.conf);
    /// for a configuration file not named admin.conf, `FILE.docker` beside it.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

/// Arguments of `cluster update`.
#[derive(Debug, Args)]
pub struct ClusterUpdateArgs {
    /// Lifetime of the node and admin certificates issued from now on (e.g. 90d, 12h, 30m; at
    /// least 1m). Nodes renew at a random point between 50 % and 80 % of it.
    #[arg(long, value_parser = parse_cert_expiry)]
    pub cert_expiry: Option<i64>,
    /// Keep every manager's data key sealed under an unlock key (printed once): a restarted
    /// manager then waits for `shoalctl cluster unlock`. `--autolock=false` turns it off.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub autolock: Option<bool>,
}

/// Arguments of `cluster ca`.
#[derive(Debug, Args)]
pub struct CaArgs {
    /// Replace the root CA: every node gets a certificate from a new one, then the old one is
    /// trusted nowhere. The admin.conf in use is renewed in place.
    #[arg(long)]
    pub rotate: bool,
    /// With --rotate: return once the rotation started instead of showing its progress.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Print only the CA fingerprint.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Arguments of `cluster unlock`.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Unlock only the manager at this address ("IP:PORT"); by default every manager of the
    /// admin configuration that is locked.
    #[arg(long, value_name = "ADDR")]
    pub manager: Option<String>,
    /// Read the unlock key from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<std::path::PathBuf>,
}

/// Arguments of `cluster unlock-key`.
#[derive(Debug, Args)]
pub struct UnlockKeyArgs {
    /// Make a new unlock key; the old one stops working once every manager re-sealed its key.
    #[arg(long)]
    pub rotate: bool,
    /// Print only the key.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Parses a certificate lifetime: a duration of at least one minute, in nanoseconds.
pub fn parse_cert_expiry(s: &str) -> Result<i64, String> {
    let ns = parse_duration(s)?;
    shoal_proto::limits::check_cert_expiry(ns).map_err(|e| e.to_string())?;
    Ok(ns)
}

/// `shoalctl cluster admin ...`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List admin credentials: short fingerprint, holder ("init", or the manager node it was
    /// issued to at join) and when it was issued; `*` marks the one this call uses.
    #[command(visible_alias = "list")]
    Ls,
    /// Revoke an admin credential: every manager refuses it as soon as it applies the change.
    Revoke(AdminRevokeArgs),
    /// Get a new certificate for the admin configuration in use (a new key, from the current
    /// CA) and write it into that file in place.
    Renew,
}

/// Arguments of `cluster admin revoke`.
#[derive(Debug, Args)]
pub struct AdminRevokeArgs {
    /// Fingerprint of the credential, or a prefix naming only one (as `cluster admin ls` shows).
    pub fingerprint_prefix: String,
    /// Revoke it even if it is the credential this shoalctl uses (you lose admin access).
    #[arg(long)]
    pub force: bool,
}

/// Which join token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The token a worker joins with.
    Worker,
    /// The token a manager joins with.
    Manager,
}

/// Arguments of `cluster join-token`.
#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    /// Which token.
    #[arg(value_enum)]
    pub role: Role,
    /// Replace the token with a new one; the old one stops working.
    #[arg(long)]
    pub rotate: bool,
    /// Print only the token.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}
