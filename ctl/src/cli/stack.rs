//! `shoalctl stack ...`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Subcommand, ValueEnum};

use super::parse::parse_timeout;

/// `shoalctl stack ...`
#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Deploy a new stack or update an existing one from compose files.
    #[command(visible_alias = "up")]
    Deploy(StackDeployArgs),
    /// List stacks.
    #[command(visible_alias = "list")]
    Ls(StackLsArgs),
    /// List the services of a stack.
    Services(StackServicesArgs),
    /// List the tasks of a stack.
    Ps(StackPsArgs),
    /// Remove stacks: their services, then their secrets, configs and networks (never volumes).
    #[command(visible_alias = "remove", visible_alias = "down")]
    Rm(StackRmArgs),
    /// Print the merged, interpolated compose file (or the first error).
    Config(StackConfigArgs),
}

/// `--resolve-image`: when to ask the registry for an image's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum ResolveImage {
    /// Always: each image is pinned to the digest its registry serves now (`repo:tag@sha256:…`).
    #[default]
    Always,
    /// Only new or changed images; an unchanged one keeps the digest it was pinned to.
    Changed,
    /// Never: images are sent as given.
    Never,
}

/// `--compose-file`, as `stack deploy` and `stack config` take it.
#[derive(Debug, Args)]
pub struct ComposeFiles {
    /// Compose file ("-" for standard input); later files override earlier ones (repeatable).
    #[arg(
        long = "compose-file",
        short = 'c',
        value_name = "FILE",
        required = true
    )]
    pub compose_files: Vec<PathBuf>,
}

/// Arguments of `stack deploy`.
#[derive(Debug, Args)]
pub struct StackDeployArgs {
    /// The compose files.
    #[command(flatten)]
    pub files: ComposeFiles,
    /// Remove the stack's services that are no longer in the compose files.
    #[arg(long)]
    pub prune: bool,
    /// When to pin images to the digest their registry serves (a registry that cannot be asked
    /// is a warning: the image then goes as given).
    #[arg(long, value_enum, default_value_t = ResolveImage::Always)]
    pub resolve_image: ResolveImage,
    /// Send the credentials `shoalctl login` stored for each image's registry to the nodes.
    #[arg(long)]
    pub with_registry_auth: bool,
    /// Return without waiting for the services to converge (docker's default); --detach=false
    /// waits for each service created or updated, as `service create`/`update` do.
    #[arg(long, short = 'd', value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value_t = true, action = ArgAction::Set)]
    pub detach: bool,
    /// How long to wait for each service (with --detach=false).
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Print no "Creating ..."/"Updating ..." lines.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Stack name.
    #[arg(value_name = "STACK")]
    pub stack: String,
}

/// Arguments of `stack ls`.
#[derive(Debug, Args)]
pub struct StackLsArgs {}

/// Arguments of `stack services`.
#[derive(Debug, Args)]
pub struct StackServicesArgs {
    /// Print only the service IDs.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Stack name.
    #[arg(value_name = "STACK")]
    pub stack: String,
}

/// Arguments of `stack ps`.
#[derive(Debug, Args)]
pub struct StackPsArgs {
    /// Do not truncate IDs and errors.
    #[arg(long)]
    pub no_trunc: bool,
    /// Print only the task IDs.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Stack name.
    #[arg(value_name = "STACK")]
    pub stack: String,
}

/// Arguments of `stack rm`.
#[derive(Debug, Args)]
pub struct StackRmArgs {
    /// Stack names.
    #[arg(value_name = "STACK", required = true)]
    pub stacks: Vec<String>,
}

/// Arguments of `stack config`.
#[derive(Debug, Args)]
pub struct StackConfigArgs {
    /// The compose files.
    #[command(flatten)]
    pub files: ComposeFiles,
}
