use super::*;
use crate::test_support::counted_store;
use std::sync::atomic::Ordering;

fn spec() -> ServiceSpec {
    ServiceSpec {
        name: "web".into(),
        replicas: 1,
        task: Some(TaskSpec {
            container: Some(ContainerSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Without a client certificate every handler answers `Unauthenticated` and does nothing:
/// no proposal, no read barrier (and no validation: even a huge scale is not looked at).
#[tokio::test]
async fn handlers_refuse_a_caller_without_a_certificate_before_any_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, counting) = counted_store(dir.path());
    let api = ControlApi::new(
        store,
        LogBroker::new(crate::dispatcher::Sessions::default()),
        "127.0.0.1:4242".into(),
    );
    let codes = [
        api.create_service(Request::new(CreateServiceRequest { spec: Some(spec()) }))
            .await
            .err()
            .map(|s| s.code()),
        api.update_service(Request::new(UpdateServiceRequest {
            name_or_id: "web".into(),
            spec: Some(spec()),
            ..Default::default()
        }))
        .await
        .err()
        .map(|s| s.code()),
        api.scale_service(Request::new(ScaleServiceRequest {
            name_or_id: "web".into(),
            replicas: 100_000_000_000,
        }))
        .await
        .err()
        .map(|s| s.code()),
        api.update_node(Request::new(UpdateNodeRequest {
            name_or_id: "n1".into(),
            labels_add: [("zone".to_string(), "a".to_string())].into(),
            ..Default::default()
        }))
        .await
        .err()
        .map(|s| s.code()),
        api.join_token(Request::new(JoinTokenRequest {
            role: NodeRole::RoleWorker as i32,
            rotate: true,
        }))
        .await
        .err()
        .map(|s| s.code()),
        api.list_services(Request::new(ListServicesRequest {}))
            .await
            .err()
            .map(|s| s.code()),
    ];
    for (i, code) in codes.into_iter().enumerate() {
        assert_eq!(code, Some(tonic::Code::Unauthenticated), "call {i}");
    }
    assert_eq!(counting.proposals.load(Ordering::SeqCst), 0);
    assert_eq!(counting.barriers.load(Ordering::SeqCst), 0);
}

#[test]
fn node_label_updates_are_bounded() {
    let req = |add: Vec<(String, String)>, rm: Vec<String>| UpdateNodeRequest {
        name_or_id: "n1".into(),
        labels_add: add.into_iter().collect(),
        labels_rm: rm,
        ..Default::default()
    };
    let many = |n: usize| (0..n).map(|i| (format!("k{i}"), "v".to_string())).collect();
    #[rustfmt::skip]
    let cases: Vec<(UpdateNodeRequest, Option<&str>)> = vec![
        (req(many(64), vec![]), None),
        (req(many(65), vec![]), Some("--label-add: 65 labels are more than the limit of 64 per object")),
        (req(vec![("zone".into(), "v".repeat(4097))], vec![]), Some("--label-add: the value of label \"zone\" is 4097 bytes, more than the limit of 4096 bytes")),
        (req(vec![("a b".into(), String::new())], vec![]), Some("--label-add: invalid label key \"a b\": no whitespace or '='")),
        (req(vec![], vec!["k".repeat(128)]), None),
        (req(vec![], vec!["k".repeat(129)]), Some("--label-rm: label key \"kkkkkkkkkkkkkkkkkkkkkkkk\"… is 129 bytes, more than the limit of 128 bytes")),
        (req(vec![], vec![String::new()]), Some("--label-rm: a label key must not be empty (e.g. zone=a)")),
    ];
    for (i, (r, want)) in cases.into_iter().enumerate() {
        let got = check_node_labels(&r).err();
        assert_eq!(got.as_ref().map(|s| s.message()), want, "case {i}");
        if let Some(s) = got {
            assert_eq!(s.code(), tonic::Code::InvalidArgument);
        }
    }
}
