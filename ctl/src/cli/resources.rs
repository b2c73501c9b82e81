//! `shoalctl secret|config|volume ...`, `login` and `logout`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::parse::parse_label;

/// `shoalctl secret ...`
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create a secret from a file or standard input ("-") and print its ID.
    Create(DataCreateArgs),
    /// List secrets.
    #[command(visible_alias = "list")]
    Ls(DataLsArgs),
    /// Show secrets in detail (a JSON array like docker; the data is never shown).
    Inspect(DataInspectArgs),
    /// Remove secrets (refused while a service uses them).
    #[command(visible_alias = "remove")]
    Rm(DataRmArgs),
}

/// `shoalctl config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Create a config from a file or standard input ("-") and print its ID.
    Create(DataCreateArgs),
    /// List configs.
    #[command(visible_alias = "list")]
    Ls(DataLsArgs),
    /// Show configs in detail (a JSON array like docker, with the data in base64).
    Inspect(DataInspectArgs),
    /// Remove configs (refused while a service uses them).
    #[command(visible_alias = "remove")]
    Rm(DataRmArgs),
}

/// Arguments of `secret create` and `config create`.
#[derive(Debug, Args)]
pub struct DataCreateArgs {
    /// Label K=V (repeatable).
    #[arg(long, short = 'l', value_name = "K=V", value_parser = parse_label)]
    pub label: Vec<(String, String)>,
    /// Name (letters, digits, '-', '_' and '.').
    #[arg(value_name = "NAME")]
    pub name: String,
    /// File holding the data, or "-" for standard input.
    #[arg(value_name = "FILE|-")]
    pub file: PathBuf,
}

/// Arguments of `secret ls` and `config ls`.
#[derive(Debug, Args)]
pub struct DataLsArgs {
    /// Print only the IDs.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Arguments of `secret inspect` and `config inspect`.
#[derive(Debug, Args)]
pub struct DataInspectArgs {
    /// Names or IDs.
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

/// Arguments of `secret rm` and `config rm`.
#[derive(Debug, Args)]
pub struct DataRmArgs {
    /// Names or IDs.
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

/// `shoalctl volume ...`
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// List the volumes of every node (or of one, with --node).
    #[command(visible_alias = "list")]
    Ls(VolumeLsArgs),
    /// Show volumes in detail (a JSON array like docker, one entry per node that has it).
    Inspect(VolumeInspectArgs),
    /// Remove volumes from every node that has them (or from one, with --node); a volume in
    /// use is never removed.
    #[command(visible_alias = "remove")]
    Rm(VolumeRmArgs),
    /// Remove unused anonymous volumes (with --all, unused named ones too).
    Prune(VolumePruneArgs),
}

/// Arguments of `volume ls`.
#[derive(Debug, Args)]
pub struct VolumeLsArgs {
    /// Only the volumes of this node (ID or hostname).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Print only the volume names.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Arguments of `volume inspect`.
#[derive(Debug, Args)]
pub struct VolumeInspectArgs {
    /// Only the volume on this node (ID or hostname).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Volume names.
    #[arg(value_name = "VOLUME", required = true)]
    pub names: Vec<String>,
}

/// Arguments of `volume rm`.
#[derive(Debug, Args)]
pub struct VolumeRmArgs {
    /// No error when a volume does not exist.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Only from this node (ID or hostname).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
    /// Volume names.
    #[arg(value_name = "VOLUME", required = true)]
    pub names: Vec<String>,
}

/// Arguments of `volume prune`.
#[derive(Debug, Args)]
pub struct VolumePruneArgs {
    /// Remove unused named volumes too, not only anonymous ones.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Only on this node (ID or hostname).
    #[arg(long, value_name = "NODE")]
    pub node: Option<String>,
}

/// Arguments of `login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// User name (asked for when not given).
    #[arg(long, short = 'u', value_name = "USER")]
    pub username: Option<String>,
    /// Password (visible to every user of the host: prefer --password-stdin).
    #[arg(
        long,
        short = 'p',
        value_name = "PASSWORD",
        conflicts_with = "password_stdin"
    )]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Registry (HOST[:PORT]; http://HOST:PORT for a plain-HTTP registry) [default: Docker Hub].
    #[arg(value_name = "REGISTRY")]
    pub registry: Option<String>,
}

/// Arguments of `logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry [default: Docker Hub].
    #[arg(value_name = "REGISTRY")]
    pub registry: Option<String>,
}
