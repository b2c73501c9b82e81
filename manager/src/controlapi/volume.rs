//! `volume ls|inspect|rm|prune`: asks the nodes' agents about their volumes through the
//! dispatcher's sessions (volumes live on nodes, not in the store).
//!
//! Only the leader holds sessions: on a follower these calls are forwarded to the leader (see
//! [`super::linearized`]). The answers are merged here by pure functions; a node that does not
//! answer is listed as unreachable rather than failing the whole call.

use std::collections::BTreeMap;

use shoal_proto::v1::*;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::{find_node, ControlApi};
use crate::auth::require_admin;
use crate::dispatcher::volumes::{VolumeError, NODE_ANSWER_TIMEOUT};
use crate::store::State;

/// One node's answer (or why none came).
type Answer = (String, Result<VolumeReply, VolumeError>);

/// The nodes a volume call asks (node id -> hostname): the one named (by id, hostname or id
/// prefix), or every node that runs an agent.
fn target_nodes(s: &State, node: &str) -> Result<BTreeMap<String, String>, Status> {
    let hostname = |n: &Node| {
        n.description
            .as_ref()
            .map(|d| d.hostname.clone())
            .unwrap_or_default()
    };
    if !node.is_empty() {
        let n = find_node(s, node)?;
        return Ok([(n.id.clone(), hostname(&n))].into());
    }
    Ok(s.nodes()
        .filter(|n| crate::node_record::runs_agent(n))
        .map(|n| (n.id.clone(), hostname(n)))
        .collect())
}

/// Asks the node named (or every node that runs an agent, `node` empty); the nodes asked (id to
/// hostname) and every answer, failures included.
async fn ask(
    api: &ControlApi,
    node: &str,
    request: VolumeRequest,
) -> Result<(BTreeMap<String, String>, Vec<Answer>), Status> {
    let nodes = api.store.read(|s| target_nodes(s, node))?;
    let ids: Vec<String> = nodes.keys().cloned().collect();
    let answers = api
        .logs
        .volumes()
        .ask_each(&ids, &request, NODE_ANSWER_TIMEOUT)
        .await;
    Ok((nodes, answers))
}

/// A call aimed at one node fails when that node gave no answer: there is nothing else to
/// report (a cluster-wide call goes on with the nodes that answered).
fn named_node_answered(node: &str, answers: &[Answer]) -> Result<(), Status> {
    match answers {
        [(_, Err(e))] if !node.is_empty() => Err(Status::unavailable(e.to_string())),
        _ => Ok(()),
    }
}

/// Volumes as their node gave them, marked with the node that answered (an agent cannot speak
/// for another).
fn from_node(node_id: &str, volumes: Vec<Volume>) -> impl Iterator<Item = Volume> + '_ {
    volumes.into_iter().map(move |mut v| {
        v.node_id = node_id.to_string();
        v
    })
}

/// Merges the answers to a LIST: volumes sorted by name then node, nodes that did not answer
/// (or answered with an error) in `unreachable`.
pub(crate) fn merge_list(
    answers: Vec<Answer>,
    node_names: BTreeMap<String, String>,
) -> ListVolumesResponse {
    let mut volumes = Vec::new();
    let mut unreachable = Vec::new();
    for (node_id, answer) in answers {
        match answer {
            Ok(reply) if reply.error.is_empty() => {
                volumes.extend(from_node(&node_id, reply.volumes))
            }
            Ok(reply) => {
                warn!(node.id = %node_id, error = %reply.error, "node could not list its volumes");
                unreachable.push(node_id);
            }
            Err(e) => {
                warn!(node.id = %node_id, error = %e, "no volume list from node");
                unreachable.push(node_id);
            }
        }
    }
    volumes.sort_by(|a, b| (&a.name, &a.node_id).cmp(&(&b.name, &b.node_id)));
    unreachable.sort();
    ListVolumesResponse {
        volumes,
        node_names: node_names.into_iter().collect(),
        unreachable,
    }
}

/// Merges the answers to a REMOVE of `name`: the nodes it was removed from, or the error the
/// user sees. A volume in use anywhere is a failed precondition naming the task.
pub(crate) fn merge_remove(
    name: &str,
    force: bool,
    answers: Vec<Answer>,
) -> Result<RemoveVolumeResponse, Status> {
    let mut nodes = Vec::new();
    let mut unreachable = Vec::new();
    let mut in_use: Option<String> = None;
    let mut failed: Option<String> = None;
    for (node_id, answer) in answers {
        match answer {
            Ok(reply) if reply.error.is_empty() => {
                if !reply.not_found {
                    nodes.push(node_id);
                }
            }
            Ok(reply) if reply.error.contains("in use") => {
                in_use.get_or_insert(reply.error);
            }
            Ok(reply) => {
                failed.get_or_insert(format!("node {node_id}: {}", reply.error));
            }
            Err(e) => unreachable.push(e.to_string()),
        }
    }
    nodes.sort();
    if let Some(msg) = in_use {
        return Err(Status::failed_precondition(msg));
    }
    if let Some(msg) = failed {
        return Err(Status::internal(format!("removing volume {name}: {msg}")));
    }
    if nodes.is_empty() && !force {
        let mut msg = format!("volume {name} not found");
        if !unreachable.is_empty() {
            msg.push_str(&format!(" ({})", unreachable.join("; ")));
        }
        return Err(Status::not_found(msg));
    }
    Ok(RemoveVolumeResponse { nodes })
}

/// Merges the answers to a PRUNE: every volume removed, and the bytes that freed.
pub(crate) fn merge_prune(answers: Vec<Answer>) -> PruneVolumesResponse {
    let mut out = PruneVolumesResponse::default();
    for (node_id, answer) in answers {
        match answer {
            Ok(reply) => {
                if !reply.error.is_empty() {
                    // What a node removed before failing still counts.
                    warn!(node.id = %node_id, error = %reply.error, "volume prune failed on node");
                }
                out.reclaimed_bytes = out.reclaimed_bytes.saturating_add(reply.reclaimed_bytes);
                out.removed.extend(from_node(&node_id, reply.volumes));
            }
            Err(e) => warn!(node.id = %node_id, error = %e, "volume prune skipped node"),
        }
    }
    out.removed
        .sort_by(|a, b| (&a.name, &a.node_id).cmp(&(&b.name, &b.node_id)));
    out
}

/// `volume ls` and `volume inspect`: every node's volumes (or one node's, or one name's).
pub(super) async fn list_volumes(
    api: &ControlApi,
    request: Request<ListVolumesRequest>,
) -> Result<Response<ListVolumesResponse>, Status> {
    require_admin(&api.store, &request)?;
    let req = request.into_inner();
    let (nodes, answers) = ask(
        api,
        &req.node,
        VolumeRequest {
            op: VolumeOp::VolumeList as i32,
            name: req.name,
            ..Default::default()
        },
    )
    .await?;
    Ok(Response::new(merge_list(answers, nodes)))
}

/// `volume rm`: removes a volume from the node named, or from every node that has it.
pub(super) async fn remove_volume(
    api: &ControlApi,
    request: Request<RemoveVolumeRequest>,
) -> Result<Response<RemoveVolumeResponse>, Status> {
    require_admin(&api.store, &request)?;
    let req = request.into_inner();
    if req.name.is_empty() {
        return Err(Status::invalid_argument("volume name: missing"));
    }
    let (_, answers) = ask(
        api,
        &req.node,
        VolumeRequest {
            op: VolumeOp::VolumeRemove as i32,
            name: req.name.clone(),
            force: req.force,
            ..Default::default()
        },
    )
    .await?;
    named_node_answered(&req.node, &answers)?;
    let removed = merge_remove(&req.name, req.force, answers)?;
    if !removed.nodes.is_empty() {
        info!(volume.name = %req.name, nodes = ?removed.nodes, "volume removed");
    }
    Ok(Response::new(removed))
}

/// `volume prune`: removes unused volumes (anonymous ones, or all with `all`) on the node
/// named or on every node.
pub(super) async fn prune_volumes(
    api: &ControlApi,
    request: Request<PruneVolumesRequest>,
) -> Result<Response<PruneVolumesResponse>, Status> {
    require_admin(&api.store, &request)?;
    let req = request.into_inner();
    let (_, answers) = ask(
        api,
        &req.node,
        VolumeRequest {
            op: VolumeOp::VolumePrune as i32,
            all: req.all,
            ..Default::default()
        },
    )
    .await?;
    named_node_answered(&req.node, &answers)?;
    let pruned = merge_prune(answers);
    for v in &pruned.removed {
        info!(volume.name = %v.name, node.id = %v.node_id, "volume pruned");
    }
    Ok(Response::new(pruned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tonic::Code;

    fn vol(name: &str) -> Volume {
        Volume {
            name: name.into(),
            // The manager marks the node that answered, whatever the agent wrote.
            node_id: "someone-else".into(),
            ..Default::default()
        }
    }

    fn ok(node: &str, reply: VolumeReply) -> Answer {
        (node.into(), Ok(reply))
    }

    fn timeout(node: &str) -> Answer {
        (
            node.into(),
            Err(VolumeError::Timeout {
                node_id: node.into(),
                after: Duration::from_secs(5),
            }),
        )
    }

    #[test]
    fn a_list_merges_the_nodes_and_names_the_silent_ones() {
        let answers = vec![
            ok(
                "n2",
                VolumeReply {
                    volumes: vec![vol("db"), vol("cache")],
                    ..Default::default()
                },
            ),
            ok(
                "n1",
                VolumeReply {
                    volumes: vec![vol("db")],
                    ..Default::default()
                },
            ),
            timeout("n3"),
            (
                "n4".into(),
                Err(VolumeError::NotConnected {
                    node_id: "n4".into(),
                }),
            ),
        ];
        let names: BTreeMap<String, String> =
            [("n1", "h1"), ("n2", "h2"), ("n3", "h3"), ("n4", "h4")]
                .into_iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
        let out = merge_list(answers, names);
        let got: Vec<(&str, &str)> = out
            .volumes
            .iter()
            .map(|v| (v.name.as_str(), v.node_id.as_str()))
            .collect();
        assert_eq!(got, [("cache", "n2"), ("db", "n1"), ("db", "n2")]);
        assert_eq!(out.unreachable, ["n3", "n4"]);
        assert_eq!(out.node_names.get("n3").map(String::as_str), Some("h3"));
    }

    #[test]
    fn a_remove_names_the_nodes_it_was_removed_from() {
        let answers = vec![
            ok(
                "n2",
                VolumeReply {
                    volumes: vec![vol("db")],
                    ..Default::default()
                },
            ),
            ok(
                "n1",
                VolumeReply {
                    not_found: true,
                    ..Default::default()
                },
            ),
            timeout("n3"),
        ];
        let out = merge_remove("db", false, answers).unwrap();
        assert_eq!(out.nodes, ["n2"]);
    }

    #[test]
    fn a_remove_nobody_could_do_is_not_found_unless_forced() {
        let answers = || {
            vec![
                ok(
                    "n1",
                    VolumeReply {
                        not_found: true,
                        ..Default::default()
                    },
                ),
                ok(
                    "n2",
                    VolumeReply {
                        not_found: true,
                        ..Default::default()
                    },
                ),
            ]
        };
        let err = merge_remove("db", false, answers()).unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(err.message(), "volume db not found");
        assert!(merge_remove("db", true, answers())
            .unwrap()
            .nodes
            .is_empty());
    }

    #[test]
    fn a_volume_in_use_is_a_failed_precondition_naming_the_task() {
        let answers = vec![
            ok(
                "n1",
                VolumeReply {
                    error: "volume db is in use by task t1".into(),
                    ..Default::default()
                },
            ),
            ok(
                "n2",
                VolumeReply {
                    not_found: true,
                    ..Default::default()
                },
            ),
        ];
        let err = merge_remove("db", true, answers).unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(err.message(), "volume db is in use by task t1");
    }

    #[test]
    fn a_call_aimed_at_a_silent_node_is_unavailable() {
        let err = named_node_answered("h3", &[timeout("n3")]).unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(named_node_answered("", &[timeout("n3")]).is_ok());
    }

    #[test]
    fn a_prune_sums_what_every_node_reclaimed() {
        let answers = vec![
            ok(
                "n1",
                VolumeReply {
                    volumes: vec![vol("a")],
                    reclaimed_bytes: 100,
                    ..Default::default()
                },
            ),
            ok(
                "n2",
                VolumeReply {
                    volumes: vec![vol("b"), vol("c")],
                    reclaimed_bytes: 23,
                    ..Default::default()
                },
            ),
            timeout("n3"),
        ];
        let out = merge_prune(answers);
        assert_eq!(out.reclaimed_bytes, 123);
        let got: Vec<(&str, &str)> = out
            .removed
            .iter()
            .map(|v| (v.name.as_str(), v.node_id.as_str()))
            .collect();
        assert_eq!(got, [("a", "n1"), ("b", "n2"), ("c", "n2")]);
    }
}
