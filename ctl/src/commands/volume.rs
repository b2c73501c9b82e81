//! `shoalctl volume ls|inspect|rm|prune`: the named volumes of the nodes, asked through the
//! managers (each node keeps its own; nodes that do not answer are named on stderr).

use std::collections::HashMap;
use std::io::{BufRead, Write};

use anyhow::Result;
use serde_json::{json, Value};
use shoal_proto::v1::{ListVolumesRequest, PruneVolumesRequest, RemoveVolumeRequest, Volume};

use crate::cli::{Format, VolumeInspectArgs, VolumeLsArgs, VolumePruneArgs, VolumeRmArgs};
use crate::client::{status, Control};
use crate::output::{self, json as js, table::Table};

/// Docker's `units.HumanSize`: decimal units, four significant digits ("12.3MB", "0B").
pub fn human_size(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    // %.4g: four significant digits, no trailing zeros.
    let int_digits = if value < 1.0 {
        1
    } else {
        value.log10().floor() as usize + 1
    };
    let decimals = 4usize.saturating_sub(int_digits);
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", UNITS[unit])
}

/// The hostname of a volume's node, else its short ID.
fn node_name(v: &Volume, names: &HashMap<String, String>) -> String {
    names
        .get(&v.node_id)
        .cloned()
        .unwrap_or_else(|| output::short_id(&v.node_id, false).to_string())
}

/// The `volume inspect` document (docker's shape, plus the node it lives on).
pub fn inspect_json(v: &Volume, names: &HashMap<String, String>) -> Value {
    json!({
        "CreatedAt": output::rfc3339(v.created_at),
        "Driver": v.driver,
        "Labels": v.labels,
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": v.options,
        "Scope": "local",
        "Node": node_name(v, names),
        "NodeID": v.node_id,
        "UsageData": {"RefCount": v.in_use_by.len(), "Size": v.size_bytes},
    })
}

/// The `volume ls --format json` line.
pub fn ls_json(v: &Volume, names: &HashMap<String, String>) -> Value {
    let mut labels: Vec<String> = v.labels.iter().map(|(k, l)| format!("{k}={l}")).collect();
    labels.sort();
    let size = if v.size_bytes < 0 {
        "N/A".to_string()
    } else {
        human_size(v.size_bytes.unsigned_abs())
    };
    json!({"Driver": v.driver, "Labels": labels.join(","), "Links": v.in_use_by.len().to_string(),
           "Mountpoint": v.mountpoint, "Name": v.name, "Node": node_name(v, names),
           "Scope": "local", "Size": size})
}

/// Says which nodes did not answer, on stderr.
fn warn_unreachable(unreachable: &[String], names: &HashMap<String, String>) {
    if unreachable.is_empty() {
        return;
    }
    let list: Vec<String> = unreachable
        .iter()
        .map(|n| names.get(n).cloned().unwrap_or_else(|| n.clone()))
        .collect();
    eprintln!(
        "WARNING: no answer from node(s) {}: their volumes are not listed",
        list.join(", ")
    );
}

async fn list(
    c: &mut Control,
    node: Option<&str>,
    name: &str,
) -> Result<(Vec<Volume>, HashMap<String, String>)> {
    let r = c
        .list_volumes(ListVolumesRequest {
            node: node.unwrap_or_default().to_string(),
            name: name.to_string(),
        })
        .await
        .map_err(status)?
        .into_inner();
    warn_unreachable(&r.unreachable, &r.node_names);
    let mut volumes = r.volumes;
    let names = r.node_names;
    volumes.sort_by(|a, b| {
        (a.name.as_str(), node_name(a, &names)).cmp(&(b.name.as_str(), node_name(b, &names)))
    });
    Ok((volumes, names))
}

/// `volume ls`: DRIVER, VOLUME NAME, NODE.
pub async fn ls(c: &mut Control, a: &VolumeLsArgs, format: Format) -> Result<()> {
    let (volumes, names) = list(c, a.node.as_deref(), "").await?;
    let mut out = String::new();
    if a.quiet {
        volumes
            .iter()
            .for_each(|v| out.push_str(&format!("{}\n", v.name)));
        return Ok(output::print(&out)?);
    }
    match format {
        Format::Json => volumes
            .iter()
            .for_each(|v| out.push_str(&js::line(&ls_json(v, &names)))),
        Format::Table => {
            let mut t = Table::new(&["DRIVER", "VOLUME NAME", "NODE"]);
            volumes
                .iter()
                .for_each(|v| t.row(vec![v.driver.clone(), v.name.clone(), node_name(v, &names)]));
            out = t.render();
        }
    }
    Ok(output::print(&out)?)
}

/// `volume inspect NAME...`: every copy of each volume (one per node that has it).
pub async fn inspect(c: &mut Control, a: &VolumeInspectArgs) -> Result<()> {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for name in &a.names {
        let (volumes, names) = list(c, a.node.as_deref(), name).await?;
        let found: Vec<&Volume> = volumes.iter().filter(|v| &v.name == name).collect();
        if found.is_empty() {
            errors.push(format!("no such volume: {name}"));
        }
        docs.extend(found.iter().map(|v| inspect_json(v, &names)));
    }
    output::print(&js::pretty_array(docs))?;
    super::fail_if_any(errors)
}

/// `volume rm NAME...`: prints each name removed; keeps going past failures.
pub async fn rm(c: &mut Control, a: &VolumeRmArgs) -> Result<()> {
    super::remove_each(&a.names, async |name| {
        c.remove_volume(RemoveVolumeRequest {
            name: name.to_string(),
            node: a.node.clone().unwrap_or_default(),
            force: a.force,
        })
        .await
        .map(drop)
        .map_err(|s| status(s).to_string())
    })
    .await
}

/// Docker's prune warning for `--all` or not.
pub fn prune_warning(all: bool) -> &'static str {
    if all {
        "WARNING! This will remove all local volumes not used by at least one container."
    } else {
        "WARNING! This will remove anonymous local volumes not used by at least one container."
    }
}

/// Asks `question [y/N] ` on stderr and reads the answer from stdin.
pub fn confirm(question: &str) -> Result<bool> {
    let mut err = std::io::stderr().lock();
    write!(err, "{question} [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// The report of a prune: the names removed and the space reclaimed.
pub fn prune_report(removed: &[Volume], reclaimed: u64) -> String {
    let mut out = String::new();
    if !removed.is_empty() {
        out.push_str("Deleted Volumes:\n");
        removed
            .iter()
            .for_each(|v| out.push_str(&format!("{}\n", v.name)));
        out.push('\n');
    }
    out.push_str(&format!(
        "Total reclaimed space: {}\n",
        human_size(reclaimed)
    ));
    out
}

/// `volume prune`: asks first unless `-f`.
pub async fn prune(c: &mut Control, a: &VolumePruneArgs) -> Result<()> {
    if !a.force {
        let question = format!(
            "{}\nAre you sure you want to continue?",
            prune_warning(a.all)
        );
        if !confirm(&question)? {
            return Ok(());
        }
    }
    let r = c
        .prune_volumes(PruneVolumesRequest {
            node: a.node.clone().unwrap_or_default(),
            all: a.all,
        })
        .await
        .map_err(status)?
        .into_inner();
    output::print(&prune_report(&r.removed, r.reclaimed_bytes))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(12_300_000), "12.3MB");
        assert_eq!(human_size(12_345_678), "12.35MB");
        assert_eq!(human_size(1_500_000_000), "1.5GB");
    }

    #[test]
    fn rows_name_the_node() {
        let v = Volume {
            name: "data".into(),
            driver: "local".into(),
            node_id: "n1abcdefghijklmnop".into(),
            size_bytes: -1,
            ..Default::default()
        };
        let names: HashMap<String, String> =
            [("n1abcdefghijklmnop".to_string(), "host1".to_string())].into();
        assert_eq!(ls_json(&v, &names)["Node"], "host1");
        assert_eq!(ls_json(&v, &names)["Size"], "N/A");
        assert_eq!(ls_json(&v, &HashMap::new())["Node"], "n1abcdefghij");
        assert_eq!(inspect_json(&v, &names)["Scope"], "local");
        assert_eq!(
            prune_report(&[v], 12_300_000),
            "Deleted Volumes:\ndata\n\nTotal reclaimed space: 12.3MB\n"
        );
        assert_eq!(prune_report(&[], 0), "Total reclaimed space: 0B\n");
    }
}
