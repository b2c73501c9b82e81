use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::{
    Endpoint, Meta, Network, NetworkAttachment, NetworkAttachmentConfig, NetworkSpec,
    NodeAllocation, PortConfig, ServiceEndpointUpdate, ServiceSpec, TaskAllocation, TaskAssignment,
    TaskDesiredUpdate, TaskSpec, TaskState, TaskStatus, TaskStatusUpdate, VirtualIp,
};

use super::*;

fn service(id: &str, name: &str) -> Service {
    Service {
        id: id.into(),
        meta: Some(Meta {
            created_at: 7,
            ..Meta::default()
        }),
        spec: Some(ServiceSpec {
            name: name.into(),
            replicas: 1,
            ..ServiceSpec::default()
        }),
        spec_version: 1,
        ..Default::default()
    }
}

fn task(id: &str, service_id: &str, state: TaskState) -> Task {
    Task {
        id: id.into(),
        service_id: service_id.into(),
        status: Some(TaskStatus {
            state: state as i32,
            ..TaskStatus::default()
        }),
        desired_state: TaskState::TaskRunning as i32,
        ..Task::default()
    }
}

fn node(id: &str, fp: &str) -> Node {
    Node {
        id: id.into(),
        cert_fingerprint: fp.into(),
        ..Node::default()
    }
}

fn req(actions: Vec<Action>) -> StoreRequest {
    StoreRequest {
        request_id: 1,
        actions: actions
            .into_iter()
            .map(|a| StoreAction { action: Some(a) })
            .collect(),
    }
}

fn status(id: &str, state: TaskState) -> Action {
    Action::TaskStatus(TaskStatusUpdate {
        task_id: id.into(),
        status: Some(TaskStatus {
            state: state as i32,
            message: format!("{state:?}"),
            ..TaskStatus::default()
        }),
    })
}

fn desired(id: &str, state: TaskState) -> Action {
    Action::TaskDesired(TaskDesiredUpdate {
        task_id: id.into(),
        desired_state: state as i32,
    })
}

fn assign(id: &str, node_id: &str) -> Action {
    Action::TaskAssign(TaskAssignment {
        task_id: id.into(),
        node_id: node_id.into(),
    })
}

fn state_of(store: &Store, id: &str) -> TaskState {
    store.read(|s| {
        s.task(id)
            .map_or(TaskState::TaskNew, |t| t.observed_state())
    })
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open store");
    (dir, store)
}

fn network(id: &str, name: &str, subnet: &str, vni: u32) -> Network {
    Network {
        id: id.into(),
        spec: Some(NetworkSpec {
            name: name.into(),
            driver: "overlay".into(),
            ..NetworkSpec::default()
        }),
        subnet: subnet.into(),
        vni,
        ..Network::default()
    }
}

fn attachment(net: &str, addr: &str) -> NetworkAttachment {
    NetworkAttachment {
        network_id: net.into(),
        addresses: vec![addr.into()],
        aliases: Vec::new(),
    }
}

fn allocate(task_id: &str, net: &str, addr: &str) -> Action {
    Action::TaskAllocate(TaskAllocation {
        task_id: task_id.into(),
        networks: vec![attachment(net, addr)],
        endpoint: None,
    })
}

mod networks;
mod objects;
mod persistence;
mod secrets;
mod versions;
