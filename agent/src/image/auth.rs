//! Which credentials go to which registry, and which registry mirrors an image is pulled through
//! (dockerd's `registry-mirrors`: Docker Hub images only, each mirror in order, then Hub itself).

use std::fmt;
use std::str::FromStr;

use oci_client::secrets::RegistryAuth as OciAuth;
use shoal_proto::registry::{parse_challenge, Challenge};
use shoal_proto::v1::RegistryAuth;

use super::{ImageError, ImageRef, DEFAULT_REGISTRY};

pub use shoal_proto::registry::normalize_server;

/// `auth` when it holds something and is meant for `registry` (an `ImageRef::registry`); a
/// credential for another registry is never sent.
pub fn credentials_for<'a>(
    registry: &str,
    auth: Option<&'a RegistryAuth>,
) -> Option<&'a RegistryAuth> {
    let auth = auth?;
    let has_secret = !auth.username.is_empty()
        || !auth.identity_token.is_empty()
        || !auth.registry_token.is_empty();
    (has_secret && normalize_server(&auth.server) == registry).then_some(auth)
}

/// What the registry client sends: a registry token as a bearer token, else username and
/// password (the client turns them into a bearer token when the registry asks for one). An
/// identity token must first be exchanged (`exchange_identity_token`).
pub(crate) fn oci_auth(auth: Option<&RegistryAuth>) -> OciAuth {
    match auth {
        None => OciAuth::Anonymous,
        Some(a) if !a.registry_token.is_empty() => OciAuth::Bearer(a.registry_token.clone()),
        Some(a) => OciAuth::Basic(a.username.clone(), a.password.clone()),
    }
}

/// The OAuth2 client id sent with token requests (docker sends its own name too).
const CLIENT_ID: &str = "shoal";

/// The parameters of a `WWW-Authenticate: Bearer realm="…",service="…"` challenge.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct BearerChallenge {
    /// The token endpoint.
    pub realm: String,
    /// The `service` to ask a token for.
    pub service: Option<String>,
}

/// Parses a Bearer challenge; `None` for any other scheme (e.g. `Basic`).
pub(crate) fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    match parse_challenge(header)? {
        Challenge::Bearer { realm, service, .. } => Some(BearerChallenge { realm, service }),
        Challenge::Basic => None,
    }
}

/// Exchanges a docker identity token (an OAuth2 refresh token from `docker login`) for an access
/// token to pull `repository` from `registry`, as dockerd does: the registry's Bearer challenge
/// names the token endpoint, which gets a `refresh_token` grant. The token never reaches a log.
pub(crate) async fn exchange_identity_token(
    scheme: &str,
    registry: &str,
    repository: &str,
    identity_token: &str,
) -> Result<String, ImageError> {
    let failed = |reason: String| ImageError::TokenExchange {
        registry: registry.to_string(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| failed(format!("http client: {e}")))?;
    let ping = client
        .get(format!("{scheme}://{registry}/v2/"))
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let challenge = ping
        .headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse_bearer_challenge)
        .ok_or_else(|| {
            failed("the registry asks for no bearer token; an identity token cannot be used".into())
        })?;
    let scope = format!("repository:{repository}:pull");
    // Built in one go: the serializer is not `Send` and must not live across an await.
    let body = {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "refresh_token")
            .append_pair("refresh_token", identity_token)
            .append_pair("client_id", CLIENT_ID)
            .append_pair("scope", &scope);
        if let Some(service) = &challenge.service {
            form.append_pair("service", service);
        }
        form.finish()
    };
    let answer = client
        .post(&challenge.realm)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = answer.status();
    if matches!(
        status,
        reqwest::StatusCode::UNAUTHORIZED
            | reqwest::StatusCode::FORBIDDEN
            | reqwest::StatusCode::BAD_REQUEST
    ) {
        return Err(ImageError::Unauthorized {
            reference: format!("{registry}/{repository}"),
            registry: registry.to_string(),
            credentials_sent: true,
        });
    }
    if !status.is_success() {
        return Err(failed(format!("token endpoint answered {status}")));
    }
    #[derive(serde::Deserialize)]
    struct TokenReply {
        #[serde(default)]
        access_token: String,
        #[serde(default)]
        token: String,
    }
    let reply: TokenReply = answer
        .json()
        .await
        .map_err(|e| failed(format!("token reply: {e}")))?;
    match (reply.access_token, reply.token) {
        (a, _) if !a.is_empty() => Ok(a),
        (_, t) if !t.is_empty() => Ok(t),
        _ => Err(failed("the token reply holds no token".into())),
    }
}

/// A registry mirror of Docker Hub, from `--registry-mirror URL`.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryMirror {
    /// `host[:port]`, as it goes into a rewritten reference.
    pub host: String,
    /// Spoken to over plain HTTP (`http://` URL).
    pub plain_http: bool,
}

impl RegistryMirror {
    /// Parses `http://host:port` or `https://host[:port]` (a trailing `/` is fine; a path is
    /// not, as dockerd refuses it too).
    pub fn parse(url: &str) -> Result<RegistryMirror, ImageError> {
        let bad = |reason: &str| ImageError::InvalidMirror {
            mirror: url.to_string(),
            reason: reason.to_string(),
        };
        let (plain_http, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (false, rest)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let host = rest.strip_suffix('/').unwrap_or(rest);
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host.contains(['/', '?', '#', '@']) {
            return Err(bad(
                "only scheme://host[:port] is allowed (no path, query or user)",
            ));
        }
        // The host must be one a reference can name; parsing a probe reference checks it.
        let probe = ImageRef::parse(&format!("{host}/library/probe:latest"))
            .map_err(|_| bad("not a valid host[:port]"))?;
        if probe.registry != host {
            return Err(bad("not a valid host[:port]"));
        }
        Ok(RegistryMirror {
            host: host.to_string(),
            plain_http,
        })
    }

    /// Where `image` is pulled from through this mirror; `None` for images of any registry but
    /// Docker Hub, which never go through a mirror.
    pub fn rewrite(&self, image: &ImageRef) -> Option<ImageRef> {
        (image.registry == DEFAULT_REGISTRY).then(|| ImageRef {
            registry: self.host.clone(),
            ..image.clone()
        })
    }
}

impl fmt::Display for RegistryMirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.plain_http { "http" } else { "https" };
        write!(f, "{scheme}://{}", self.host)
    }
}

impl fmt::Debug for RegistryMirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegistryMirror({self})")
    }
}

impl FromStr for RegistryMirror {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RegistryMirror::parse(s)
    }
}

/// Shown instead of a credential wherever one could end up in a log.
pub(crate) struct Redacted<'a>(pub Option<&'a RegistryAuth>);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => write!(f, "anonymous"),
            Some(a) if !a.registry_token.is_empty() => write!(f, "registry token"),
            Some(a) if !a.identity_token.is_empty() => write!(f, "identity token"),
            Some(a) => write!(f, "user {:?}", a.username),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(server: &str) -> RegistryAuth {
        RegistryAuth {
            server: server.to_string(),
            username: "u".to_string(),
            password: "p".to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn servers_normalise_like_docker() {
        for (server, want) in [
            ("docker.io", "docker.io"),
            ("index.docker.io", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("https://registry-1.docker.io", "docker.io"),
            ("", "docker.io"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("http://127.0.0.1:5000/", "127.0.0.1:5000"),
            ("https://Reg.Example.com:443/v2/", "reg.example.com:443"),
            ("ghcr.io", "ghcr.io"),
        ] {
            assert_eq!(normalize_server(server), want, "{server:?}");
        }
    }

    #[test]
    fn credentials_go_only_to_their_registry() {
        let hub = auth("https://index.docker.io/v1/");
        let local = auth("127.0.0.1:5000");
        let busybox = ImageRef::parse("busybox").expect("parse");
        let private = ImageRef::parse("127.0.0.1:5000/a/b").expect("parse");
        assert!(credentials_for(&busybox.registry, Some(&hub)).is_some());
        assert!(credentials_for(&busybox.registry, Some(&local)).is_none());
        assert!(credentials_for(&private.registry, Some(&local)).is_some());
        assert!(credentials_for(&private.registry, Some(&hub)).is_none());
        assert!(credentials_for(&private.registry, None).is_none());
        // A credential without a secret is no credential.
        let empty = RegistryAuth {
            server: "127.0.0.1:5000".into(),
            ..Default::default()
        };
        assert!(credentials_for(&private.registry, Some(&empty)).is_none());
    }

    #[test]
    fn registry_tokens_are_bearer_and_passwords_basic() {
        assert!(matches!(oci_auth(None), OciAuth::Anonymous));
        assert!(matches!(
            oci_auth(Some(&auth("x"))),
            OciAuth::Basic(u, p) if u == "u" && p == "p"
        ));
        let token = RegistryAuth {
            registry_token: "t".into(),
            ..auth("x")
        };
        assert!(matches!(oci_auth(Some(&token)), OciAuth::Bearer(t) if t == "t"));
        assert_eq!(Redacted(Some(&token)).to_string(), "registry token");
        assert!(!Redacted(Some(&auth("x"))).to_string().contains('p'));
    }

    #[test]
    fn bearer_challenges_parse() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .expect("bearer");
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        let c =
            parse_bearer_challenge(r#"bearer service="a\"b", realm=http://x/t"#).expect("bearer");
        assert_eq!(c.realm, "http://x/t");
        assert_eq!(c.service.as_deref(), Some("a\"b"));
        assert_eq!(parse_bearer_challenge(r#"Basic realm="r""#), None);
        assert_eq!(parse_bearer_challenge("Bearer service=\"s\""), None);
        assert_eq!(
            parse_bearer_challenge(r#"Bearer realm="unterminated"#),
            None
        );
    }

    #[test]
    fn mirrors_parse() {
        let m = RegistryMirror::parse("http://127.0.0.1:5001").expect("parse");
        assert_eq!(m.host, "127.0.0.1:5001");
        assert!(m.plain_http);
        assert_eq!(m.to_string(), "http://127.0.0.1:5001");
        let m = RegistryMirror::parse("https://mirror.gcr.io/").expect("parse");
        assert_eq!(m.host, "mirror.gcr.io");
        assert!(!m.plain_http);
        for bad in [
            "127.0.0.1:5001",
            "ftp://x",
            "http://",
            "https://host/path",
            "https://user@host",
            "http://bad_host:1",
        ] {
            assert!(
                matches!(
                    RegistryMirror::parse(bad),
                    Err(ImageError::InvalidMirror { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_docker_hub_images_go_through_a_mirror() {
        let m = RegistryMirror::parse("http://127.0.0.1:5001").expect("parse");
        for (image, want) in [
            ("redis:alpine", Some("127.0.0.1:5001/library/redis:alpine")),
            ("user/app", Some("127.0.0.1:5001/user/app:latest")),
            (
                "docker.io/library/busybox:1.36",
                Some("127.0.0.1:5001/library/busybox:1.36"),
            ),
            (
                "index.docker.io/user/app:v2",
                Some("127.0.0.1:5001/user/app:v2"),
            ),
            ("ghcr.io/org/app", None),
            ("127.0.0.1:5000/a/b:1", None),
            ("localhost/app", None),
        ] {
            let r = ImageRef::parse(image).expect("parse");
            assert_eq!(
                m.rewrite(&r).map(|r| r.to_string()).as_deref(),
                want,
                "{image}"
            );
        }
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let pinned = ImageRef::parse(&format!("busybox@{d}")).expect("parse");
        assert_eq!(
            m.rewrite(&pinned).map(|r| r.to_string()),
            Some(format!("127.0.0.1:5001/library/busybox@{d}"))
        );
    }
}
