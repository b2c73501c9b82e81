//! `stack deploy --resolve-image`: pins each service's image to the digest its registry serves
//! now (`repo:tag@sha256:…`), as docker does, so every node runs the same image and a redeploy
//! after a new push of the same tag rolls the service. A registry that cannot be asked is a
//! warning, never an error: the image then goes as given and each node resolves it itself.

use shoal_proto::v1::ServiceSpec;

use crate::cli::ResolveImage;
use crate::docker_config;

/// The image as the user gave it, without a digest a previous resolution added.
pub fn without_digest(image: &str) -> &str {
    match image.split_once('@') {
        // `name@digest` alone (no tag) keeps its digest: the user pinned it.
        Some((named, _))
            if named
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':')) =>
        {
            named
        }
        _ => image,
    }
}

/// Whether the image names a digest of its own (then there is nothing to resolve).
fn pinned_by_user(image: &str) -> bool {
    image.contains('@') && without_digest(image) == image
}

/// `image` pinned to the digest its registry serves now (asked as the manager's
/// `/distribution` route asks: `shoal_proto::resolve`).
pub async fn pin(image: &str, insecure: &[String]) -> anyhow::Result<String> {
    // The credentials `shoalctl login` stored (docker also uses them to resolve).
    let auth = docker_config::registry_auth_for(image).ok().flatten();
    let digest = shoal_proto::resolve::digest(image, auth.as_ref(), insecure).await?;
    Ok(format!("{image}@{digest}"))
}

/// Applies `--resolve-image` to a service of the stack: `always` pins its image, `changed` only
/// a new service's or a changed image (an unchanged one keeps the digest it was pinned to),
/// `never` leaves it as given. Returns the warning to print when the registry could not be asked.
pub async fn resolve(
    spec: &mut ServiceSpec,
    stored: Option<&ServiceSpec>,
    mode: ResolveImage,
) -> Option<String> {
    let container = spec.task.as_mut()?.container.as_mut()?;
    let image = container.image.clone();
    if mode == ResolveImage::Never || image.is_empty() || pinned_by_user(&image) {
        return None;
    }
    let stored_image = stored
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.container.as_ref())
        .map(|c| c.image.as_str());
    if mode == ResolveImage::Changed {
        if let Some(old) = stored_image.filter(|old| without_digest(old) == image) {
            container.image = old.to_string();
            return None;
        }
    }
    match pin(&image, &container.insecure_registries).await {
        Ok(pinned) => {
            container.image = pinned;
            None
        }
        Err(e) => Some(format!(
            "image {image} could not be accessed on a registry to record its digest ({e:#}); \
             each node will access {image} independently, possibly leading to different nodes \
             running different versions of the image"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789012345678901234567890123456789012345678901234567890123";

    #[test]
    fn a_resolved_digest_is_stripped_but_a_users_own_is_kept() {
        assert_eq!(without_digest(&format!("redis:7@{D}")), "redis:7");
        assert_eq!(
            without_digest(&format!("127.0.0.1:5000/a/b:v1@{D}")),
            "127.0.0.1:5000/a/b:v1"
        );
        let own = format!("127.0.0.1:5000/a/b@{D}");
        assert_eq!(without_digest(&own), own);
        assert!(pinned_by_user(&own));
        assert!(!pinned_by_user("redis:7"));
        assert!(!pinned_by_user(&format!("redis:7@{D}")));
    }

    #[test]
    fn loopback_and_insecure_registries_are_asked_over_http() {
        use shoal_proto::resolve::plain_http;
        assert!(plain_http("127.0.0.1:5000", &[]));
        assert!(plain_http("localhost:5000", &[]));
        assert!(plain_http("[::1]:5000", &[]));
        assert!(!plain_http("registry.example.com", &[]));
        assert!(plain_http("10.0.0.5:5000", &["10.0.0.5:5000".to_string()]));
    }

    #[tokio::test]
    async fn never_and_changed_leave_images_without_asking() {
        let spec = |image: &str| ServiceSpec {
            task: Some(shoal_proto::v1::TaskSpec {
                container: Some(shoal_proto::v1::ContainerSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let image = |s: &ServiceSpec| {
            s.task
                .as_ref()
                .unwrap()
                .container
                .as_ref()
                .unwrap()
                .image
                .clone()
        };
        let mut s = spec("127.0.0.1:1/x:1");
        assert_eq!(resolve(&mut s, None, ResolveImage::Never).await, None);
        assert_eq!(image(&s), "127.0.0.1:1/x:1");
        // Unchanged: keeps the digest it was pinned to, without asking the registry.
        let stored = spec(&format!("127.0.0.1:1/x:1@{D}"));
        assert_eq!(
            resolve(&mut s, Some(&stored), ResolveImage::Changed).await,
            None
        );
        assert_eq!(image(&s), format!("127.0.0.1:1/x:1@{D}"));
        // Changed, and nobody listens on port 1: a warning, the image as given.
        let mut s = spec("127.0.0.1:1/x:2");
        let warning = resolve(&mut s, Some(&stored), ResolveImage::Changed).await;
        assert!(
            warning
                .as_deref()
                .is_some_and(|w| w.contains("could not be accessed on a registry")),
            "{warning:?}"
        );
        assert_eq!(image(&s), "127.0.0.1:1/x:2");
    }
}
