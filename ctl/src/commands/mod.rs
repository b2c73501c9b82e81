//! One module per noun, one function per verb; `run` dispatches a parsed command line.

pub mod ca;
pub mod cluster;
pub mod converge;
pub mod docker_env;
pub mod lock;
pub mod login;
pub mod network;
pub mod node;
pub mod resolve_image;
pub mod rollout;
pub mod secret;
pub mod service;
pub mod stack;
pub mod volume;

use anyhow::{anyhow, Result};

use crate::cli::{
    AdminCommand, Cli, ClusterCommand, Command, ConfigCommand, NetworkCommand, NodeCommand,
    SecretCommand, ServiceCommand, StackCommand, VolumeCommand,
};
use crate::client::{self, Connection};

/// Runs one command line against the cluster.
pub async fn run(cli: Cli) -> Result<()> {
    let format = cli.format;
    let config = cli.config.clone();
    // Check what can be checked before dialling a manager, so bad input fails fast and offline.
    let spec = match &cli.command {
        Command::Service(ServiceCommand::Create(args)) => {
            let mut spec = service::build_spec(args)?;
            if args.shared.with_registry_auth {
                service::attach_registry_auth(&mut spec)?;
            }
            Some(spec)
        }
        Command::Service(ServiceCommand::Update(args)) => {
            args.check().map_err(|e| anyhow!(e))?;
            None
        }
        Command::Node(NodeCommand::Update(args)) => {
            node::update_request(args)?;
            None
        }
        _ => None,
    };
    let network_spec = match &cli.command {
        Command::Network(NetworkCommand::Create(args)) => Some(network::build_spec(args)?),
        _ => None,
    };
    // Commands that need no manager, or check their input before dialling one.
    match &cli.command {
        Command::Login(args) => return login::login(args).await,
        Command::Logout(args) => return login::logout(args),
        Command::Stack(StackCommand::Config(args)) => return stack::config(args),
        _ => {}
    }
    // Secret and config data is read (and its size checked) before dialling, too.
    let data = match &cli.command {
        Command::Secret(SecretCommand::Create(a)) => {
            Some(secret::read_data(secret::Kind::Secret, &a.file)?)
        }
        Command::ConfigObj(ConfigCommand::Create(a)) => {
            Some(secret::read_data(secret::Kind::Config, &a.file)?)
        }
        _ => None,
    };
    let stack_plan = match &cli.command {
        Command::Stack(StackCommand::Deploy(args)) => Some(stack::load_plan(args)?),
        _ => None,
    };
    // A locked manager answers nothing but Unlock: this one dials the managers itself.
    if let Command::Cluster(ClusterCommand::Unlock(args)) = &cli.command {
        return lock::unlock(config.as_deref(), args).await;
    }
    let mut connection = client::connect(config.as_deref()).await?;
    // An admin certificate near its expiry is renewed in place first (the connection is then
    // made again with the new one); `cluster ca` and `admin renew` renew it themselves.
    let renews_itself = matches!(
        &cli.command,
        Command::Cluster(ClusterCommand::Ca(_))
            | Command::Cluster(ClusterCommand::Admin(AdminCommand::Renew))
    );
    if !renews_itself && ca::renew_if_due(config.as_deref(), connection.channel.clone()).await {
        connection = client::connect(config.as_deref()).await?;
    }
    let Connection {
        mut control,
        manager_addr,
        channel,
    } = connection;
    let c = &mut control;
    match cli.command {
        Command::Service(cmd) => match cmd {
            ServiceCommand::Create(args) => {
                let spec = match spec {
                    Some(spec) => spec,
                    None => service::build_spec(&args)?,
                };
                service::create(c, spec, &args).await
            }
            ServiceCommand::Ls(args) => service::ls(c, &args, format).await,
            ServiceCommand::Ps(args) => service::ps(c, &args, format).await,
            ServiceCommand::Inspect(args) => service::inspect(c, &args).await,
            ServiceCommand::Update(args) if args.rollback => {
                let rollback = crate::cli::RollbackArgs {
                    detach: args.detach,
                    quiet: args.quiet,
                    timeout: args.timeout,
                    service: args.service.clone(),
                };
                service::rollback(c, &rollback).await
            }
            ServiceCommand::Update(args) => service::update(c, &args).await,
            ServiceCommand::Rollback(args) => service::rollback(c, &args).await,
            ServiceCommand::Scale(args) => service::scale(c, &args).await,
            ServiceCommand::Rm(args) => service::rm(c, &args).await,
            ServiceCommand::Logs(args) => service::logs(c, &args).await,
        },
        Command::Network(cmd) => match cmd {
            NetworkCommand::Create(args) => {
                let spec = match network_spec {
                    Some(spec) => spec,
                    None => network::build_spec(&args)?,
                };
                network::create(c, spec).await
            }
            NetworkCommand::Ls(args) => network::ls(c, &args, format).await,
            NetworkCommand::Inspect(args) => network::inspect(c, &args).await,
            NetworkCommand::Rm(args) => network::rm(c, &args).await,
        },
        Command::Node(cmd) => match cmd {
            NodeCommand::Ls(args) => node::ls(c, &args, format).await,
            NodeCommand::Inspect(args) => node::inspect(c, &args).await,
            NodeCommand::Update(args) => node::update(c, &args).await,
            NodeCommand::Rm(args) => node::rm(c, channel, &args).await,
            NodeCommand::Demote(args) => cluster::demote(channel, &args.nodes).await,
            NodeCommand::Promote(args) => node::promote(c, channel, &args).await,
        },
        Command::Cluster(ClusterCommand::JoinToken(args)) => {
            cluster::join_token(c, &args, &manager_addr).await
        }
        Command::Cluster(ClusterCommand::Status) => cluster::status(channel, format).await,
        Command::Cluster(ClusterCommand::Admin(AdminCommand::Ls)) => {
            cluster::admin_ls(channel, format).await
        }
        Command::Cluster(ClusterCommand::Admin(AdminCommand::Revoke(args))) => {
            cluster::admin_revoke(channel, &args).await
        }
        Command::Cluster(ClusterCommand::Admin(AdminCommand::Renew)) => {
            ca::admin_renew(config.as_deref(), channel).await
        }
        Command::Cluster(ClusterCommand::Update(args)) => ca::update(channel, &args).await,
        Command::Cluster(ClusterCommand::Ca(args)) => {
            ca::ca(config.as_deref(), channel, &args, format).await
        }
        // Answered before any connection is made (above).
        Command::Cluster(ClusterCommand::Unlock(_)) | Command::Login(_) | Command::Logout(_) => {
            Ok(())
        }
        Command::Secret(cmd) => {
            let kind = secret::Kind::Secret;
            match cmd {
                SecretCommand::Create(args) => secret::create(c, kind, &args, data).await,
                SecretCommand::Ls(args) => secret::ls(c, kind, &args, format).await,
                SecretCommand::Inspect(args) => secret::inspect(c, kind, &args).await,
                SecretCommand::Rm(args) => secret::rm(c, kind, &args).await,
            }
        }
        Command::ConfigObj(cmd) => {
            let kind = secret::Kind::Config;
            match cmd {
                ConfigCommand::Create(args) => secret::create(c, kind, &args, data).await,
                ConfigCommand::Ls(args) => secret::ls(c, kind, &args, format).await,
                ConfigCommand::Inspect(args) => secret::inspect(c, kind, &args).await,
                ConfigCommand::Rm(args) => secret::rm(c, kind, &args).await,
            }
        }
        Command::Volume(cmd) => match cmd {
            VolumeCommand::Ls(args) => volume::ls(c, &args, format).await,
            VolumeCommand::Inspect(args) => volume::inspect(c, &args).await,
            VolumeCommand::Rm(args) => volume::rm(c, &args).await,
            VolumeCommand::Prune(args) => volume::prune(c, &args).await,
        },
        Command::Stack(cmd) => match cmd {
            StackCommand::Deploy(args) => match stack_plan {
                Some(plan) => stack::deploy(c, plan, &args).await,
                None => stack::deploy(c, stack::load_plan(&args)?, &args).await,
            },
            StackCommand::Ls(_) => stack::ls(c, format).await,
            StackCommand::Services(args) => stack::services(c, &args, format).await,
            StackCommand::Ps(args) => stack::ps(c, &args, format).await,
            StackCommand::Rm(args) => stack::rm(c, &args).await,
            StackCommand::Config(_) => Ok(()),
        },
        Command::Cluster(ClusterCommand::UnlockKey(args)) => {
            lock::unlock_key(channel, &args, format).await
        }
        Command::Cluster(ClusterCommand::DockerEnv(args)) => {
            docker_env::docker_env(config.as_deref(), channel, &args, format).await
        }
    }
}

/// Ends a command that went on past failures: an error joining every failure, if any.
fn fail_if_any(errors: Vec<String>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("{}", errors.join("; ")))
    }
}

/// Removes each name in turn, printing it once removed; keeps going past failures, each
/// reported as `NAME: why`.
async fn remove_each(
    names: &[String],
    mut remove: impl AsyncFnMut(&str) -> Result<(), String>,
) -> Result<()> {
    let mut errors = Vec::new();
    for name in names {
        match remove(name).await {
            Ok(()) => crate::output::print(&format!("{name}\n"))?,
            Err(why) => errors.push(format!("{name}: {why}")),
        }
    }
    fail_if_any(errors)
}
