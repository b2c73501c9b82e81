//! `shoalctl service create|ls|ps|inspect|update|scale|rm|logs`: the verbs (this file), the
//! spec built from `create` flags (`spec`), `update` flags applied to a spec (`update`), the
//! `ls`/`ps` tables (`tables`) and `inspect --pretty` (`pretty`).

mod pretty;
mod rollout_spec;
mod spec;
mod tables;
mod update;

use std::collections::HashMap;
use std::io::Write;

use anyhow::{anyhow, Result};
use shoal_proto::v1::{
    CreateServiceRequest, GetNetworkRequest, GetServiceRequest, ListServicesRequest,
    ListTasksRequest, LogLine, RemoveServiceRequest, ScaleServiceRequest, Service,
    ServiceLogsRequest, ServiceSpec, ServiceSummary, UpdateServiceRequest,
};

use crate::cli::{
    CreateArgs, Format, InspectArgs, LogsArgs, LsArgs, PsArgs, RmArgs, RollbackArgs, ScaleArgs,
    UpdateArgs,
};
use crate::client::{status, Control};
use crate::commands::{converge, rollout};
use crate::output::{self, json as js};

pub use pretty::pretty;
pub use spec::build_spec;
pub use tables::{task_rows, ServiceRow, TaskRow};
pub use update::{apply_update, NetworkIds};

use tables::spec_name;

/// `service update`: reads the service, applies the flags, sends the new spec, prints the
/// service name and waits until the tasks run the new spec (unless `--detach`).
pub async fn update(c: &mut Control, a: &UpdateArgs) -> Result<()> {
    let svc = get_service(c, &a.service).await?;
    let mut ids = NetworkIds::new();
    for name in a.network_add.iter().map(|n| &n.target).chain(&a.network_rm) {
        match c
            .get_network(GetNetworkRequest {
                name_or_id: name.clone(),
            })
            .await
        {
            Ok(r) => {
                if let Some(n) = r.into_inner().network {
                    ids.insert(name.clone(), n.id);
                }
            }
            // A network that is gone can still be detached by the ID the spec holds.
            Err(s) if s.code() == tonic::Code::NotFound && a.network_rm.contains(name) => {}
            Err(s) => return Err(status(s).context(format!("network {name}"))),
        }
    }
    let mut spec = svc.spec.clone().unwrap_or_default();
    apply_update(&mut spec, a, &ids)?;
    if a.shared.with_registry_auth {
        attach_registry_auth(&mut spec)?;
    }
    let request = UpdateServiceRequest {
        name_or_id: svc.id.clone(),
        spec: Some(spec),
        // A read-modify-write: refused if someone changed the service since it was read.
        version: svc.meta.map_or(0, |m| m.version),
        rollback: String::new(),
    };
    send_update(c, request, &a.service).await?;
    output::print(&format!("{}\n", a.service))?;
    if a.detach {
        return Ok(());
    }
    rollout::follow(c, &svc.id, svc.update_status, false, a.timeout, a.quiet).await
}

/// `--with-registry-auth`: puts the credentials stored for the image's registry into the spec
/// (the manager keeps them encrypted and gives them only to the nodes that pull); with none
/// stored, says so and sends the spec without.
pub fn attach_registry_auth(spec: &mut ServiceSpec) -> Result<()> {
    let task = spec.task.get_or_insert_with(Default::default);
    let c = task.container.get_or_insert_with(Default::default);
    let registry = crate::docker_config::registry_of_image(&c.image);
    match crate::docker_config::registry_auth_for(&c.image)? {
        Some(auth) => c.registry_auth = Some(auth),
        None => eprintln!(
            "WARNING: no credentials stored for {registry} (shoalctl login {registry}); the image \
             is pulled without"
        ),
    }
    Ok(())
}

/// `service rollback` and `service update --rollback`: asks the manager to swap the spec with
/// the previous one, prints the service name, and follows the rollback unless `detach`.
pub async fn rollback(c: &mut Control, a: &RollbackArgs) -> Result<()> {
    let svc = get_service(c, &a.service).await?;
    let request = UpdateServiceRequest {
        name_or_id: svc.id.clone(),
        spec: svc.spec.clone(),
        version: svc.meta.map_or(0, |m| m.version),
        rollback: "previous".into(),
    };
    send_update(c, request, &a.service).await?;
    output::print(&format!("{}\n", a.service))?;
    if a.detach {
        return Ok(());
    }
    rollout::follow(c, &svc.id, svc.update_status, true, a.timeout, a.quiet).await
}

/// Sends an update; a lost read-modify-write race is said in the user's words.
async fn send_update(c: &mut Control, request: UpdateServiceRequest, name: &str) -> Result<()> {
    match c.update_service(request).await {
        Ok(_) => Ok(()),
        Err(s) if s.message().contains("out of sequence") => Err(anyhow!(
            "service {name} changed while this update was prepared (update out of sequence): \
             run the command again"
        )),
        Err(s) => Err(status(s)),
    }
}

/// `service create`: creates the service, prints its ID, and waits for convergence unless
/// `--detach`.
pub async fn create(c: &mut Control, spec: ServiceSpec, a: &CreateArgs) -> Result<()> {
    let svc = c
        .create_service(CreateServiceRequest { spec: Some(spec) })
        .await
        .map_err(status)?
        .into_inner()
        .service
        .ok_or_else(|| anyhow!("the manager answered without the created service"))?;
    output::print(&format!("{}\n", svc.id))?;
    if a.detach {
        return Ok(());
    }
    converge::wait(c, &svc, a.timeout).await
}

/// `service ls`.
pub async fn ls(c: &mut Control, a: &LsArgs, format: Format) -> Result<()> {
    let services = all_services(c).await?;
    print_services(&services, a.quiet, format)
}

/// Every service with its task counts, ordered by name.
pub async fn all_services(c: &mut Control) -> Result<Vec<ServiceSummary>> {
    let mut services = c
        .list_services(ListServicesRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .services;
    services.sort_by(|x, y| summary_name(x).cmp(summary_name(y)));
    Ok(services)
}

fn summary_name(s: &ServiceSummary) -> &str {
    s.service.as_ref().map_or("", spec_name)
}

/// Prints services as `service ls` does: their IDs only when `quiet`.
pub fn print_services(services: &[ServiceSummary], quiet: bool, format: Format) -> Result<()> {
    if quiet {
        let ids = services
            .iter()
            .filter_map(|s| s.service.as_ref())
            .map(|s| &s.id);
        return Ok(output::print_lines(ids)?);
    }
    let rows: Vec<ServiceRow> = services.iter().map(ServiceRow::of).collect();
    let headers = ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"];
    Ok(output::print_rows(
        &rows,
        format,
        &headers,
        ServiceRow::json,
        ServiceRow::cells,
    )?)
}

/// Reads one service by name or ID.
pub async fn get_service(c: &mut Control, name_or_id: &str) -> Result<Service> {
    c.get_service(GetServiceRequest {
        name_or_id: name_or_id.to_string(),
    })
    .await
    .map_err(status)?
    .into_inner()
    .service
    .ok_or_else(|| anyhow!("no such service: {name_or_id}"))
}

/// `service ps SERVICE`.
pub async fn ps(c: &mut Control, a: &PsArgs, format: Format) -> Result<()> {
    let svc = get_service(c, &a.service).await?;
    let rows = tasks_of(c, &svc, shoal_proto::now_ns(), a.no_trunc).await?;
    print_tasks(&rows, a.quiet, a.no_trunc, format)
}

/// The rows `service ps` shows for one service's tasks.
pub async fn tasks_of(
    c: &mut Control,
    svc: &Service,
    now_ns: i64,
    no_trunc: bool,
) -> Result<Vec<TaskRow>> {
    let resp = converge::service_tasks(c, &svc.id).await?;
    Ok(task_rows(
        spec_name(svc),
        &resp.tasks,
        &resp.node_names,
        now_ns,
        no_trunc,
    ))
}

/// Prints task rows as `service ps` does: their IDs only when `quiet`.
pub fn print_tasks(rows: &[TaskRow], quiet: bool, no_trunc: bool, format: Format) -> Result<()> {
    if quiet {
        return Ok(output::print_lines(rows.iter().map(|r| &r.id))?);
    }
    let headers = [
        "ID",
        "NAME",
        "IMAGE",
        "NODE",
        "DESIRED STATE",
        "CURRENT STATE",
        "ERROR",
    ];
    Ok(output::print_rows(
        rows,
        format,
        &headers,
        TaskRow::json,
        |r| r.cells(no_trunc),
    )?)
}

/// `service inspect SERVICE...`: a JSON array of the services found; an error names the others.
pub async fn inspect(c: &mut Control, a: &InspectArgs) -> Result<()> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &a.services {
        match get_service(c, name).await {
            Ok(s) => found.push(s),
            Err(e) => errors.push(format!("{e}")),
        }
    }
    if a.pretty {
        let text: Vec<String> = found.iter().map(pretty).collect();
        if !text.is_empty() {
            output::print(&text.join("\n"))?;
        }
    } else {
        output::print(&js::pretty_array(found.iter().map(js::service).collect()))?;
    }
    super::fail_if_any(errors)
}

/// `service scale SERVICE=N...`: scales each service, then waits for each unless `--detach`.
pub async fn scale(c: &mut Control, a: &ScaleArgs) -> Result<()> {
    let mut errors = Vec::new();
    let mut scaled = Vec::new();
    for (name, replicas) in &a.targets {
        let res = c
            .scale_service(ScaleServiceRequest {
                name_or_id: name.clone(),
                replicas: *replicas,
            })
            .await;
        match res {
            Ok(r) => {
                output::print(&format!("{name} scaled to {replicas}\n"))?;
                if let Some(svc) = r.into_inner().service {
                    scaled.push(svc);
                }
            }
            Err(s) => errors.push(format!("{name}: {}", status(s))),
        }
    }
    if !a.detach {
        for svc in &scaled {
            if let Err(e) = converge::wait(c, svc, a.timeout).await {
                errors.push(crate::error_chain(&e));
            }
        }
    }
    super::fail_if_any(errors)
}

/// `service rm SERVICE...`: removes each, printing its name; keeps going past failures.
pub async fn rm(c: &mut Control, a: &RmArgs) -> Result<()> {
    super::remove_each(&a.services, async |name| {
        c.remove_service(RemoveServiceRequest {
            name_or_id: name.to_string(),
        })
        .await
        .map(drop)
        .map_err(|s| status(s).to_string())
    })
    .await
}

/// The `web.1.abcdef123456@host1` part of a log line, padded so slot numbers of different widths
/// line up (`slot_width` is the width of the largest slot number).
pub fn log_prefix(
    line: &LogLine,
    service_name: &str,
    hostname: &str,
    slot_width: usize,
    no_trunc: bool,
) -> String {
    let short = output::short_id(&line.task_id, no_trunc);
    let task_name = if line.task_name.is_empty() {
        format!("{service_name}.{short}")
    } else if !line.task_id.is_empty() && line.task_name.ends_with(&line.task_id) {
        let head = &line.task_name[..line.task_name.len() - line.task_id.len()];
        format!("{head}{short}")
    } else {
        line.task_name.clone()
    };
    // "web.12.xxx" -> slot "12"; global tasks have no numeric slot.
    let slot_len = task_name
        .strip_prefix(service_name)
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.split('.').next())
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .map(str::len)
        .unwrap_or(slot_width);
    let pad = " ".repeat(slot_width.saturating_sub(slot_len));
    format!("{task_name}@{hostname}{pad}")
}

/// One printed log line, without the trailing newline of the data.
pub fn log_text(prefix: &str, line: &LogLine, timestamps: bool) -> String {
    let data = String::from_utf8_lossy(&line.data);
    let data = data.strip_suffix('\n').unwrap_or(&data);
    let data = data.strip_suffix('\r').unwrap_or(data);
    if timestamps {
        format!("{} {prefix}    | {data}", output::rfc3339(line.timestamp))
    } else {
        format!("{prefix}    | {data}")
    }
}

/// `service logs SERVICE`: streams the tasks' output; stderr lines go to stderr.
pub async fn logs(c: &mut Control, a: &LogsArgs) -> Result<()> {
    let svc = get_service(c, &a.service).await?;
    let name = spec_name(&svc).to_string();
    let tasks = converge::service_tasks(c, &svc.id).await?;
    let mut node_names = tasks.node_names;
    let max_slot = tasks
        .tasks
        .iter()
        .map(|t| t.slot)
        .max()
        .unwrap_or(1)
        .max(svc.spec.as_ref().map(|s| s.replicas).unwrap_or(1));
    let slot_width = max_slot.to_string().len();
    let mut stream = c
        .service_logs(ServiceLogsRequest {
            service: svc.id.clone(),
            follow: a.follow,
            tail: a.tail,
            timestamps: a.timestamps,
        })
        .await
        .map_err(status)?
        .into_inner();
    while let Some(resp) = stream.message().await.map_err(status)? {
        for line in &resp.lines {
            if !line.node_id.is_empty() && !node_names.contains_key(&line.node_id) {
                learn_node_name(c, &svc.id, &line.node_id, &mut node_names).await;
            }
            let host = node_names
                .get(&line.node_id)
                .map(String::as_str)
                .unwrap_or("");
            let prefix = log_prefix(line, &name, host, slot_width, a.no_trunc);
            print_log_line(&log_text(&prefix, line, a.timestamps), &line.stream)?;
        }
    }
    Ok(())
}

/// A task on a node not seen yet (follow mode): refreshes the node names once, falling back to
/// the node's short ID.
async fn learn_node_name(
    c: &mut Control,
    service_id: &str,
    node_id: &str,
    node_names: &mut HashMap<String, String>,
) {
    let tasks = ListTasksRequest {
        service: service_id.to_string(),
        node: String::new(),
    };
    if let Ok(r) = c.list_tasks(tasks).await {
        node_names.extend(r.into_inner().node_names);
    }
    node_names
        .entry(node_id.to_string())
        .or_insert_with(|| output::short_id(node_id, false).to_string());
}

/// Writes a log line where the container wrote it: stderr lines to stderr, the rest to stdout.
fn print_log_line(text: &str, stream: &str) -> Result<()> {
    if stream == "stderr" {
        let mut err = std::io::stderr().lock();
        writeln!(err, "{text}")?;
    } else {
        output::print(&format!("{text}\n"))?;
    }
    Ok(())
}

#[cfg(test)]
mod confinement_tests;
#[cfg(test)]
mod rollout_tests;
#[cfg(test)]
mod tests;
