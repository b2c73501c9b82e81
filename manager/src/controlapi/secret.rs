//! `secret create|ls|inspect|rm`: named immutable data, stored sealed in the Raft store. A
//! secret's data goes in once and only ever comes out to the nodes whose tasks mount it: no
//! reply of the control API carries it.

use shoal_proto::spec::{validate_data, validate_data_name, validate_labels};
use shoal_proto::v1::store_action::Action;
use shoal_proto::v1::*;
use tonic::{Request, Response, Status};
use tracing::info;

use super::{invalid, ControlApi};
use crate::auth::require_admin;
use crate::store::State;

/// Finds a secret by id, name or unique id prefix.
pub fn find_secret(s: &State, name_or_id: &str) -> Result<Secret, Status> {
    match s.find_secret(name_or_id) {
        Ok(Some(secret)) => Ok(secret.clone()),
        Ok(None) => Err(Status::not_found(format!("secret {name_or_id} not found"))),
        Err(n) => Err(Status::invalid_argument(format!(
            "secret {name_or_id:?} is ambiguous: {n} secret ids start with it"
        ))),
    }
}

/// The secret as the control API shows it: without its data.
pub fn without_data(mut secret: Secret) -> Secret {
    if let Some(spec) = secret.spec.as_mut() {
        spec.data.clear();
    }
    secret
}

fn secret_name(secret: &Secret) -> &str {
    secret.spec.as_ref().map_or("", |s| s.name.as_str())
}

/// `secret create`: checks the name, labels and size, then writes the secret once.
pub(super) async fn create_secret(
    api: &ControlApi,
    request: Request<CreateSecretRequest>,
) -> Result<Response<CreateSecretResponse>, Status> {
    require_admin(&api.store, &request)?;
    let spec = request
        .into_inner()
        .spec
        .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
    validate_data_name("secret", &spec.name).map_err(invalid)?;
    validate_labels("--label", spec.labels.iter()).map_err(invalid)?;
    validate_data("secret", &spec.data).map_err(invalid)?;
    let now = shoal_proto::now_ns();
    let secret = Secret {
        id: shoal_proto::new_id(),
        meta: Some(Meta {
            version: 0,
            created_at: now,
            updated_at: now,
        }),
        spec: Some(spec),
    };
    // A name already taken comes back from the store as "secret NAME already exists".
    api.write(Action::CreateSecret(secret.clone())).await?;
    info!(secret.id = %secret.id, secret.name = %secret_name(&secret), "secret created");
    let secret = api
        .store
        .read(|s| s.secret(&secret.id).cloned())
        .unwrap_or(secret);
    Ok(Response::new(CreateSecretResponse {
        secret: Some(without_data(secret)),
    }))
}

/// `secret inspect`: the secret without its data.
pub(super) async fn get_secret(
    api: &ControlApi,
    request: Request<GetSecretRequest>,
) -> Result<Response<GetSecretResponse>, Status> {
    require_admin(&api.store, &request)?;
    let name = request.into_inner().name_or_id;
    let secret = api.store.read(|s| find_secret(s, &name))?;
    Ok(Response::new(GetSecretResponse {
        secret: Some(without_data(secret)),
    }))
}

/// `secret ls`: every secret without its data, ordered by name.
pub(super) async fn list_secrets(
    api: &ControlApi,
    request: Request<ListSecretsRequest>,
) -> Result<Response<ListSecretsResponse>, Status> {
    require_admin(&api.store, &request)?;
    let mut secrets: Vec<Secret> = api
        .store
        .read(|s| s.secrets().cloned().map(without_data).collect());
    secrets.sort_by(|a, b| secret_name(a).cmp(secret_name(b)).then(a.id.cmp(&b.id)));
    Ok(Response::new(ListSecretsResponse { secrets }))
}

/// `secret rm`: refused while a service mounts the secret (the store names the service).
pub(super) async fn remove_secret(
    api: &ControlApi,
    request: Request<RemoveSecretRequest>,
) -> Result<Response<RemoveSecretResponse>, Status> {
    require_admin(&api.store, &request)?;
    let name = request.into_inner().name_or_id;
    let secret = api.store.read(|s| find_secret(s, &name))?;
    // Refused while a service mounts it: "secret NAME is in use by service S".
    api.write_removal(Action::RemoveSecret(secret.id.clone()))
        .await?;
    info!(secret.id = %secret.id, secret.name = %secret_name(&secret), "secret removed");
    Ok(Response::new(RemoveSecretResponse { id: secret.id }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatcher::logs::LogBroker;
    use crate::test_support::{apply, counted_store};
    use std::sync::atomic::Ordering;

    fn secret(id: &str, name: &str) -> Secret {
        Secret {
            id: id.into(),
            spec: Some(SecretSpec {
                name: name.into(),
                data: b"hunter2".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn secrets_are_found_by_name_id_or_prefix_and_shown_without_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = counted_store(dir.path());
        apply(
            &store,
            1,
            vec![
                Action::CreateSecret(secret("abc1", "db_pw")),
                Action::CreateSecret(secret("abd2", "api_key")),
            ],
        );
        store.read(|s| {
            assert_eq!(
                find_secret(s, "db_pw").map(|x| x.id).ok().as_deref(),
                Some("abc1")
            );
            assert_eq!(
                find_secret(s, "abd").map(|x| x.id).ok().as_deref(),
                Some("abd2")
            );
            let missing = find_secret(s, "nope").expect_err("missing");
            assert_eq!(
                (missing.code(), missing.message()),
                (tonic::Code::NotFound, "secret nope not found")
            );
            let ambiguous = find_secret(s, "ab").expect_err("ambiguous");
            assert_eq!(ambiguous.code(), tonic::Code::InvalidArgument);
            let shown = without_data(find_secret(s, "db_pw").expect("found"));
            assert!(shown.spec.expect("spec").data.is_empty());
        });
    }

    /// Every secret and config handler asks for the admin certificate before any work.
    #[tokio::test]
    async fn handlers_refuse_a_caller_without_a_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, counting) = counted_store(dir.path());
        let api = ControlApi::new(
            store,
            LogBroker::new(crate::dispatcher::Sessions::default()),
            "127.0.0.1:4242".into(),
        );
        let spec = SecretSpec {
            name: "a".into(),
            data: b"x".to_vec(),
            ..Default::default()
        };
        let config = ConfigSpec {
            name: "a".into(),
            data: b"x".to_vec(),
            ..Default::default()
        };
        let name = || "a".to_string();
        let codes = [
            create_secret(&api, Request::new(CreateSecretRequest { spec: Some(spec) }))
                .await
                .err(),
            get_secret(&api, Request::new(GetSecretRequest { name_or_id: name() }))
                .await
                .err(),
            list_secrets(&api, Request::new(ListSecretsRequest {}))
                .await
                .err(),
            remove_secret(
                &api,
                Request::new(RemoveSecretRequest { name_or_id: name() }),
            )
            .await
            .err(),
            super::super::config::create_config(
                &api,
                Request::new(CreateConfigRequest { spec: Some(config) }),
            )
            .await
            .err(),
            super::super::config::get_config(
                &api,
                Request::new(GetConfigRequest { name_or_id: name() }),
            )
            .await
            .err(),
            super::super::config::list_configs(&api, Request::new(ListConfigsRequest {}))
                .await
                .err(),
            super::super::config::remove_config(
                &api,
                Request::new(RemoveConfigRequest { name_or_id: name() }),
            )
            .await
            .err(),
        ];
        for (i, status) in codes.into_iter().enumerate() {
            assert_eq!(
                status.map(|s| s.code()),
                Some(tonic::Code::Unauthenticated),
                "call {i}"
            );
        }
        assert_eq!(counting.proposals.load(Ordering::SeqCst), 0);
    }
}
