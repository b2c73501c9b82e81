//! What shoalctl and the agent both need to know of registries: docker's spellings of a
//! registry's name, whether one is this machine, and the challenge of a registry that wants
//! credentials. (shoalctl's `login` and `--resolve-image` and the agent's pulls agree on these.)

/// Docker Hub's registry name, as image references normalise to it.
pub const DOCKER_HUB: &str = "docker.io";

/// The names docker accepts for Docker Hub in a credential's `server` (`docker login` writes
/// `https://index.docker.io/v1/`).
const DOCKER_HUB_ALIASES: &[&str] = &[
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// One registry name for any of docker's spellings of it: `https://index.docker.io/v1/` ->
/// `docker.io`, `HTTP://Reg.example:5000/v2/` -> `reg.example:5000`. An empty server is Docker
/// Hub, as for `docker login` without a server.
pub fn normalize_server(server: &str) -> String {
    let lower = server.trim().to_ascii_lowercase();
    let s = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    let host = s.split('/').next().unwrap_or(s);
    if host.is_empty() || DOCKER_HUB_ALIASES.contains(&host) {
        DOCKER_HUB.to_string()
    } else {
        host.to_string()
    }
}

/// Whether a registry (`HOST[:PORT]`, `[::1]:5000`) is this machine: docker treats such a
/// registry as insecure (plain HTTP).
pub fn is_loopback(host_port: &str) -> bool {
    let host = match host_port.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host_port.rsplit_once(':').map_or(host_port, |(h, _)| h),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A registry's answer to a request without credentials: how it wants them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `WWW-Authenticate: Basic realm="..."`.
    Basic,
    /// `WWW-Authenticate: Bearer realm="https://auth/token",service="registry",scope="..."`.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` parameter to send back.
        service: Option<String>,
        /// The `scope` parameter to send back.
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` header (one challenge; quoted values with `\` escapes, or bare
/// ones up to the next comma). `None` for another scheme, a Bearer challenge without a realm,
/// or an unterminated quote.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let (mut realm, mut service, mut scope) = (String::new(), None, None);
    let mut rest = params.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        match key.as_str() {
            "realm" => realm = value,
            "service" => service = Some(value),
            "scope" => scope = Some(value),
            _ => {}
        }
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
    (!realm.is_empty()).then_some(Challenge::Bearer {
        realm,
        service,
        scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("registry.example.com"));
        assert!(!is_loopback("10.0.0.5:5000"));
    }
}
