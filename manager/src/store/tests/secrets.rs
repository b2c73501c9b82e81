//! Secrets and configs: unique names, lookups, removal refused while a service mounts them,
//! snapshots and reopening.

use shoal_proto::v1::{
    Config, ConfigReference, ConfigSpec, ContainerSpec, Secret, SecretReference, SecretSpec,
};

use super::*;

fn secret(id: &str, name: &str) -> Secret {
    Secret {
        id: id.into(),
        spec: Some(SecretSpec {
            name: name.into(),
            data: format!("data of {name}").into_bytes(),
            ..SecretSpec::default()
        }),
        ..Secret::default()
    }
}

fn config(id: &str, name: &str) -> Config {
    Config {
        id: id.into(),
        spec: Some(ConfigSpec {
            name: name.into(),
            data: format!("data of {name}").into_bytes(),
            ..ConfigSpec::default()
        }),
        ..Config::default()
    }
}

/// A service mounting secret and config ids.
fn mounting(id: &str, name: &str, secrets: &[&str], configs: &[&str]) -> Service {
    let mut s = service(id, name);
    if let Some(spec) = s.spec.as_mut() {
        spec.task = Some(TaskSpec {
            container: Some(ContainerSpec {
                secrets: secrets
                    .iter()
                    .map(|id| SecretReference {
                        secret_id: id.to_string(),
                        ..SecretReference::default()
                    })
                    .collect(),
                configs: configs
                    .iter()
                    .map(|id| ConfigReference {
                        config_id: id.to_string(),
                        ..ConfigReference::default()
                    })
                    .collect(),
                ..ContainerSpec::default()
            }),
            ..TaskSpec::default()
        });
    }
    s
}

fn conflict(r: Result<(), StoreError>) -> String {
    match r {
        Err(StoreError::Conflict(msg)) => msg,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[test]
fn secret_names_are_unique_and_found_by_id_name_and_prefix() {
    let (_dir, store) = open();
    store
        .apply(
            1,
            &req(vec![
                Action::CreateSecret(secret("abc123", "db_pw")),
                Action::CreateSecret(secret("abd456", "api_key")),
                Action::CreateConfig(config("abc123", "db_pw")),
            ]),
        )
        .expect("create");
    let msg = conflict(store.apply(2, &req(vec![Action::CreateSecret(secret("x", "db_pw"))])));
    assert_eq!(msg, "secret db_pw already exists");
    let msg = conflict(store.apply(3, &req(vec![Action::CreateConfig(config("y", "db_pw"))])));
    assert_eq!(msg, "config db_pw already exists");
    store.read(|s| {
        let id = |r: Result<Option<&Secret>, usize>| r.map(|o| o.map(|s| s.id.clone()));
        assert_eq!(id(s.find_secret("db_pw")), Ok(Some("abc123".into())));
        assert_eq!(id(s.find_secret("abd456")), Ok(Some("abd456".into())));
        assert_eq!(id(s.find_secret("abd")), Ok(Some("abd456".into())));
        assert_eq!(id(s.find_secret("ab")), Err(2));
        assert_eq!(id(s.find_secret("zz")), Ok(None));
        assert_eq!(id(s.find_secret("")), Ok(None));
        assert_eq!(s.secrets().count(), 2);
        assert_eq!(
            s.find_config("abc").map(|c| c.map(|c| c.id.clone())),
            Ok(Some("abc123".into()))
        );
        assert_eq!(
            s.config_by_name("db_pw").map(|c| c.id.as_str()),
            Some("abc123")
        );
        // Versions are the raft index that wrote them.
        assert_eq!(
            s.secret("abc123")
                .and_then(|x| x.meta.as_ref())
                .map(|m| m.version),
            Some(1)
        );
    });
}

#[test]
fn a_secret_or_config_in_use_is_not_removed_and_the_error_names_the_service() {
    let (_dir, store) = open();
    store
        .apply(
            1,
            &req(vec![
                Action::CreateSecret(secret("s1", "db_pw")),
                Action::CreateConfig(config("c1", "db_conf")),
                Action::CreateService(mounting("svc1", "app_db", &["s1"], &["c1"])),
            ]),
        )
        .expect("create");
    let msg = conflict(store.apply(2, &req(vec![Action::RemoveSecret("s1".into())])));
    assert_eq!(msg, "secret db_pw is in use by service app_db");
    let msg = conflict(store.apply(3, &req(vec![Action::RemoveConfig("c1".into())])));
    assert_eq!(msg, "config db_conf is in use by service app_db");
    store
        .apply(
            4,
            &req(vec![
                Action::RemoveService("svc1".into()),
                Action::RemoveSecret("s1".into()),
                Action::RemoveConfig("c1".into()),
                // Removing what is gone already is not an error: removals race.
                Action::RemoveSecret("s1".into()),
            ]),
        )
        .expect("remove once unused");
    store.read(|s| {
        assert!(s.secret_by_name("db_pw").is_none());
        assert!(s.find_config("db_conf").expect("unique").is_none());
    });
    // The name is free again.
    store
        .apply(5, &req(vec![Action::CreateSecret(secret("s2", "db_pw"))]))
        .expect("create again");
}

#[test]
fn secrets_and_configs_survive_a_snapshot_and_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshot = {
        let store = Store::open(dir.path()).expect("open");
        store
            .apply(
                1,
                &req(vec![
                    Action::CreateSecret(secret("s1", "db_pw")),
                    Action::CreateConfig(config("c1", "db_conf")),
                ]),
            )
            .expect("create");
        store.flush().expect("flush");
        store.snapshot().expect("snapshot")
    };
    let check = |store: &Store| {
        store.read(|s| {
            let data = s.secret_by_name("db_pw").and_then(|x| x.spec.as_ref());
            assert_eq!(data.map(|d| d.data.as_slice()), Some(&b"data of db_pw"[..]));
            assert_eq!(
                s.config_by_name("db_conf").map(|c| c.id.as_str()),
                Some("c1")
            );
        })
    };
    check(&Store::open(dir.path()).expect("reopen"));
    let other = tempfile::tempdir().expect("tempdir");
    let restored = Store::open(other.path()).expect("open");
    restored.restore(snapshot.0, &snapshot.1).expect("restore");
    check(&restored);
}

/// Secret data is sealed at rest like every store value: never in clear in the database.
#[test]
fn secret_data_is_sealed_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let key = crate::seal::DataKey::generate().expect("key");
    let mut s = secret("s1", "db_pw");
    if let Some(spec) = s.spec.as_mut() {
        spec.data = b"correct horse battery staple".to_vec();
    }
    {
        let store = Store::open_sealed(&path, key.clone()).expect("open");
        store
            .apply(1, &req(vec![Action::CreateSecret(s)]))
            .expect("create");
        store.flush().expect("flush");
    }
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(&path).expect("read dir").flatten() {
        if entry.path().is_file() {
            raw.extend(std::fs::read(entry.path()).expect("read"));
        }
        if entry.path().is_dir() {
            for inner in std::fs::read_dir(entry.path()).expect("read dir").flatten() {
                raw.extend(std::fs::read(inner.path()).unwrap_or_default());
            }
        }
    }
    assert!(!raw.is_empty());
    let needle = b"correct horse battery staple";
    assert!(
        !raw.windows(needle.len()).any(|w| w == needle),
        "secret data in clear on disk"
    );
    let store = Store::open_sealed(&path, key).expect("reopen");
    let data = store.read(|s| {
        s.secret("s1")
            .and_then(|x| x.spec.clone())
            .map(|sp| sp.data)
    });
    assert_eq!(data.as_deref(), Some(&needle[..]));
}

#[test]
fn a_service_cannot_mount_a_secret_that_is_gone() {
    let (_dir, store) = open();
    let mut svc = mounting("svc1", "app_db", &["s1"], &[]);
    if let Some(r) = svc
        .spec
        .as_mut()
        .and_then(|s| s.task.as_mut())
        .and_then(|t| t.container.as_mut())
        .and_then(|c| c.secrets.first_mut())
    {
        r.secret_name = "db_pw".into();
    }
    let msg = conflict(store.apply(1, &req(vec![Action::CreateService(svc.clone())])));
    assert_eq!(msg, "secret not found: db_pw");
    store
        .apply(
            2,
            &req(vec![
                Action::CreateSecret(secret("s1", "db_pw")),
                Action::CreateService(svc.clone()),
            ]),
        )
        .expect("create with the secret");
    // An update that keeps the secret, e.g. a scale, needs nothing new.
    let mut scaled = store.read(|s| s.service("svc1").cloned()).expect("stored");
    if let Some(spec) = scaled.spec.as_mut() {
        spec.replicas = 3;
    }
    store
        .apply(3, &req(vec![Action::UpdateService(scaled.clone())]))
        .expect("update keeping the secret");
    let mut more = scaled;
    more.meta = store.read(|s| s.service("svc1").and_then(|x| x.meta));
    if let Some(c) = more
        .spec
        .as_mut()
        .and_then(|s| s.task.as_mut())
        .and_then(|t| t.container.as_mut())
    {
        c.configs.push(ConfigReference {
            config_id: "c9".into(),
            config_name: "gone".into(),
            ..ConfigReference::default()
        });
    }
    let msg = conflict(store.apply(4, &req(vec![Action::UpdateService(more)])));
    assert_eq!(msg, "config not found: gone");
}

#[test]
fn only_labels_of_a_secret_or_config_change_and_versions_are_checked() {
    let (_dir, store) = open();
    store
        .apply(
            1,
            &req(vec![
                Action::CreateSecret(secret("s1", "db_pw")),
                Action::CreateConfig(config("c1", "site")),
            ]),
        )
        .expect("create");
    let read = |f: &dyn Fn(&State) -> Secret| store.read(f);
    let mut relabelled = read(&|s| s.secret("s1").cloned().expect("s1"));
    if let Some(spec) = relabelled.spec.as_mut() {
        spec.labels.insert("tier".into(), "db".into());
    }
    store
        .apply(2, &req(vec![Action::UpdateSecret(relabelled.clone())]))
        .expect("labels change");
    let stored = read(&|s| s.secret("s1").cloned().expect("s1"));
    assert_eq!(
        stored.spec.as_ref().map(|s| s.labels.get("tier").cloned()),
        Some(Some("db".to_string()))
    );
    // Based on the old version: out of sequence.
    assert!(matches!(
        store.apply(3, &req(vec![Action::UpdateSecret(relabelled)])),
        Err(StoreError::OutOfSequence { .. })
    ));
    let mut changed = stored.clone();
    if let Some(spec) = changed.spec.as_mut() {
        spec.data = b"another password".to_vec();
    }
    let msg = conflict(store.apply(4, &req(vec![Action::UpdateSecret(changed)])));
    assert!(
        msg.starts_with("secret db_pw: only its labels can be updated, its data is immutable"),
        "{msg}"
    );
    let mut renamed = store.read(|s| s.config("c1").cloned().expect("c1"));
    if let Some(spec) = renamed.spec.as_mut() {
        spec.name = "other".into();
    }
    let msg = conflict(store.apply(5, &req(vec![Action::UpdateConfig(renamed)])));
    assert_eq!(msg, "config site: its name cannot change");
    let missing = secret("nope", "nope");
    let msg = conflict(store.apply(6, &req(vec![Action::UpdateSecret(missing)])));
    assert_eq!(msg, "secret \"nope\" does not exist");
}
