//! Docker image references: parsing and normalisation (`busybox` -> `docker.io/library/busybox:latest`).

use std::fmt;

use super::ImageError;

/// The registry an unqualified reference points at.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag an untagged, undigested reference gets.
pub const DEFAULT_TAG: &str = "latest";
const OFFICIAL_PREFIX: &str = "library/";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host with optional port, e.g. `docker.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/busybox`.
    pub repository: String,
    /// Tag, if any (always set when there is no digest).
    pub tag: Option<String>,
    /// Content digest `sha256:<hex>`, if the reference pins one.
    pub digest: Option<String>,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl ImageRef {
    /// Parses `reference` with docker's rules and fills in the defaults.
    pub fn parse(reference: &str) -> Result<ImageRef, ImageError> {
        let bad = |reason: &str| ImageError::InvalidReference {
            reference: reference.to_string(),
            reason: reason.to_string(),
        };
        if reference.is_empty() {
            return Err(bad("empty reference"));
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(|reason| bad(&reason))?;
                (rest, Some(digest.to_string()))
            }
            None => (reference, None),
        };
        // A ':' after the last '/' starts the tag; one before it belongs to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let (name, tag) = rest.split_at(last_slash + i);
                (name, Some(tag[1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            validate_tag(tag).map_err(|reason| bad(&reason))?;
        }
        if name.is_empty() {
            return Err(bad("empty repository name"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(bad("repository name longer than 255 characters"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if is_registry(first) => (first.to_string(), path.to_string()),
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        validate_registry(&registry).map_err(|reason| bad(&reason))?;
        validate_path(&path).map_err(|reason| bad(&reason))?;
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DEFAULT_REGISTRY.to_string()
        } else {
            registry
        };
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            _ => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// True when the registry is on a loopback address, where plain HTTP is allowed.
    pub fn is_loopback_registry(&self) -> bool {
        shoal_proto::registry::is_loopback(&self.registry)
    }
}

/// Normalizes a reference the way docker does: `busybox` -> `docker.io/library/busybox:latest`.
pub fn normalize(reference: &str) -> Result<String, ImageError> {
    Ok(ImageRef::parse(reference)?.to_string())
}

/// Docker treats the first component as a registry when it looks like a host.
fn is_registry(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.chars().any(|c| c.is_ascii_uppercase())
}

fn validate_registry(registry: &str) -> Result<(), String> {
    if let Some(rest) = registry.strip_prefix('[') {
        // IPv6 literal, optionally with a port.
        let (addr, port) = rest
            .split_once(']')
            .ok_or_else(|| format!("bad IPv6 registry {registry:?}"))?;
        addr.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("bad IPv6 registry {registry:?}"))?;
        return match port {
            "" => Ok(()),
            p => validate_port(p.strip_prefix(':').unwrap_or("x"), registry),
        };
    }
    let (host, port) = match registry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    if let Some(port) = port {
        validate_port(port, registry)?;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!("bad registry host {registry:?}"))
    }
}

fn validate_port(port: &str, registry: &str) -> Result<(), String> {
    if !port.is_empty() && port.len() <= 5 && port.chars().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("bad port in registry {registry:?}"))
    }
}

/// Path components: `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`.
fn validate_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err("empty path component".to_string());
        }
        if component.chars().any(|c| c.is_ascii_uppercase()) {
            return Err("repository name must be lowercase".to_string());
        }
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return Err(format!(
                "path component {component:?} must start and end with [a-z0-9]"
            ));
        }
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if alnum(b) {
                i += 1;
                continue;
            }
            // A separator run: ".", "_", "__" or any number of "-".
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
            if !ok {
                return Err(format!(
                    "invalid characters {sep:?} in path component {component:?}"
                ));
            }
        }
    }
    Ok(())
}

/// Tags: `[\w][\w.-]{0,127}`.
fn validate_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    match chars.next() {
        Some(c) if word(c) => {}
        _ => return Err(format!("invalid tag {tag:?}")),
    }
    if tag.len() > MAX_TAG_LEN || !chars.all(|c| word(c) || c == '.' || c == '-') {
        return Err(format!("invalid tag {tag:?}"));
    }
    Ok(())
}

/// Only sha256 digests are accepted: `sha256:<64 lowercase hex>`.
pub(crate) fn validate_digest(digest: &str) -> Result<(), String> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        Some(_) => Err(format!(
            "unsupported digest {digest:?} (only sha256:<64 hex>)"
        )),
        None => Err(format!("invalid digest {digest:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn normalisation_table() {
        let with_digest = format!("busybox@{D}");
        let tag_and_digest = format!("quay.io/a/b:v1@{D}");
        let cases: Vec<(&str, String)> = vec![
            ("busybox", "docker.io/library/busybox:latest".into()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".into()),
            ("library/busybox", "docker.io/library/busybox:latest".into()),
            ("user/app", "docker.io/user/app:latest".into()),
            ("user/app:v2", "docker.io/user/app:v2".into()),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest".into(),
            ),
            ("host:5000/a/b:tag", "host:5000/a/b:tag".into()),
            ("localhost/app", "localhost/app:latest".into()),
            ("localhost:5000/app", "localhost:5000/app:latest".into()),
            (
                "127.0.0.1:5000/shoal/busybox:1",
                "127.0.0.1:5000/shoal/busybox:1".into(),
            ),
            ("[::1]:5000/app", "[::1]:5000/app:latest".into()),
            ("ghcr.io/org/sub/app", "ghcr.io/org/sub/app:latest".into()),
            (
                "my-org/my_app.x__y",
                "docker.io/my-org/my_app.x__y:latest".into(),
            ),
            ("a--b/c", "docker.io/a--b/c:latest".into()),
            (
                with_digest.as_str(),
                format!("docker.io/library/busybox@{D}"),
            ),
            (tag_and_digest.as_str(), format!("quay.io/a/b:v1@{D}")),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).ok(), Some(want.clone()), "{input}");
            // Normalisation is idempotent.
            assert_eq!(normalize(&want).ok(), Some(want.clone()), "{want}");
        }
    }

    #[test]
    fn invalid_references_are_rejected_with_a_reason() {
        for input in [
            "",
            "Busybox",
            "user/App",
            "busybox:",
            "busybox:-bad",
            "busybox@sha256:abc",
            "busybox@md5:0123",
            "a//b",
            "/busybox",
            "busybox/",
            "a/_b",
            "a/b.",
            "a/b..c",
            "host:port/a",
            "bad_host.io/a",
            "busybox:tag:tag",
            "a/b c",
        ] {
            match normalize(input) {
                Err(ImageError::InvalidReference { reason, .. }) => assert!(!reason.is_empty()),
                other => panic!("{input:?} gave {other:?}"),
            }
        }
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(normalize(&long_tag).is_err());
    }

    #[test]
    fn parsed_parts_and_loopback() {
        let r = ImageRef::parse("127.0.0.1:5000/shoal/busybox:1").expect("parse");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "shoal/busybox");
        assert_eq!(r.tag.as_deref(), Some("1"));
        assert!(r.is_loopback_registry());
        for loopback in [
            "localhost:5000/a",
            "127.9.9.9/a",
            "[::1]:80/a",
            "localhost/a",
        ] {
            assert!(
                ImageRef::parse(loopback)
                    .expect("parse")
                    .is_loopback_registry(),
                "{loopback}"
            );
        }
        for remote in ["busybox", "10.0.0.1:5000/a", "example.com/a"] {
            assert!(
                !ImageRef::parse(remote)
                    .expect("parse")
                    .is_loopback_registry(),
                "{remote}"
            );
        }
    }
}
