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

fn stored(spec_version: u64) -> Service {
    Service {
        id: "svc".into(),
        meta: Some(Meta {
            version: 7,
            ..Default::default()
        }),
        spec: Some(spec()),
        spec_version,
        ..Default::default()
    }
}

fn with_image(mut s: ServiceSpec, image: &str) -> ServiceSpec {
    if let Some(c) = s.task.as_mut().and_then(|t| t.container.as_mut()) {
        c.image = image.into();
    }
    s
}

#[test]
fn a_stale_version_is_refused() {
    let s = stored(1);
    assert!(service::check_version(&s, 0).is_ok());
    assert!(service::check_version(&s, 7).is_ok());
    let e = service::check_version(&s, 6).unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(e.message(), service::OUT_OF_SEQUENCE);
}

#[test]
fn update_keeps_the_previous_spec_and_scaling_keeps_the_version() {
    let mut s = stored(3);
    s.update_status = Some(UpdateStatus {
        state: update_status::State::Paused as i32,
        ..Default::default()
    });
    let mut scaled = spec();
    scaled.replicas = 5;
    service::apply_update(&mut s, scaled.clone(), &[], 1);
    assert_eq!(s.spec_version, 3, "replicas alone do not outdate tasks");
    assert_eq!(s.previous_spec.as_deref(), Some(&spec()));
    assert_eq!(s.update_status, None, "a paused update moves again");
    // A task of version 9 exists: the new version is above it.
    let t = Task {
        spec_version: 9,
        ..Default::default()
    };
    service::apply_update(&mut s, with_image(scaled.clone(), "busybox:2"), &[&t], 2);
    assert_eq!((s.spec_version, s.previous_spec_version), (10, 3));
    assert_eq!(s.previous_spec.as_deref(), Some(&scaled));
    let mut forced = with_image(scaled, "busybox:2");
    if let Some(t) = forced.task.as_mut() {
        t.force_update += 1;
    }
    service::apply_update(&mut s, forced, &[], 3);
    assert_eq!(s.spec_version, 11, "--force outdates every task");
}

#[test]
fn rollback_swaps_spec_and_previous_spec() {
    let mut s = stored(1);
    assert_eq!(
        service::apply_rollback(&mut s, &[], 1)
            .unwrap_err()
            .message(),
        "service web does not have a previous spec"
    );
    service::apply_update(&mut s, with_image(spec(), "busybox:2"), &[], 1);
    assert_eq!((s.spec_version, s.previous_spec_version), (2, 1));
    service::apply_rollback(&mut s, &[], 5).expect("rollback");
    assert_eq!(s.spec, Some(spec()));
    assert_eq!(
        s.previous_spec.as_deref(),
        Some(&with_image(spec(), "busybox:2"))
    );
    assert_eq!(s.spec_version, 3, "a rollback is a fresh version");
    assert_eq!(s.previous_spec_version, 2);
    let st = s.update_status.clone().unwrap_or_default();
    assert_eq!(st.state(), update_status::State::RollbackStarted);
    assert_eq!(st.message, "manually requested rollback");
    assert_eq!(st.started_at, 5);
    // Twice: back to the newer spec.
    service::apply_rollback(&mut s, &[], 6).expect("rollback");
    assert_eq!(s.spec, Some(with_image(spec(), "busybox:2")));
}

#[test]
fn update_configs_are_checked() {
    let with = |c: UpdateConfig| ServiceSpec {
        update: Some(c),
        ..spec()
    };
    let cases = [
        (UpdateConfig::default(), None),
        (
            UpdateConfig {
                delay_ns: -1,
                ..Default::default()
            },
            Some("--update-delay cannot be negative"),
        ),
        (
            UpdateConfig {
                monitor_ns: -1,
                ..Default::default()
            },
            Some("--update-monitor cannot be negative"),
        ),
        (
            UpdateConfig {
                max_failure_ratio: 1.5,
                ..Default::default()
            },
            Some("--update-max-failure-ratio cannot be less than 0 or bigger than 1"),
        ),
    ];
    for (c, want) in cases {
        let got = service::check_update_configs(&with(c)).err();
        assert_eq!(got.as_ref().map(|s| s.message()), want);
    }
}
