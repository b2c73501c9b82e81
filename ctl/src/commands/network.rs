//! `shoalctl network create|ls|inspect|rm`.

use std::collections::HashMap;

use anyhow::{anyhow, Result};
use serde_json::json;
use shoal_proto::spec::validate_network;
use shoal_proto::v1::{
    CreateNetworkRequest, GetNetworkRequest, ListNetworksRequest, ListServicesRequest, Network,
    NetworkSpec, RemoveNetworkRequest,
};

use crate::cli::{Format, NetworkCreateArgs, NetworkInspectArgs, NetworkLsArgs, NetworkRmArgs};
use crate::client::{status, Control};
use crate::output;
use crate::output::json::{self as js, NetworkService};

/// Turns `network create` flags into a spec, checked the way the manager will check it.
pub fn build_spec(a: &NetworkCreateArgs) -> Result<NetworkSpec> {
    let options: HashMap<String, String> = a.opt.iter().cloned().collect();
    let spec = NetworkSpec {
        name: a.name.clone(),
        driver: a.driver.as_str().to_string(),
        subnet: a.subnet.clone().unwrap_or_default(),
        gateway: a.gateway.clone().unwrap_or_default(),
        encrypted: options.contains_key("encrypted"),
        attachable: a.attachable,
        ingress: a.ingress,
        labels: a.label.iter().cloned().collect(),
        options,
    };
    validate_network(&spec)?;
    Ok(spec)
}

/// `network create`: prints the new network's ID.
pub async fn create(c: &mut Control, spec: NetworkSpec) -> Result<()> {
    let net = c
        .create_network(CreateNetworkRequest { spec: Some(spec) })
        .await
        .map_err(status)?
        .into_inner()
        .network
        .ok_or_else(|| anyhow!("the manager answered without the created network"))?;
    output::print(&format!("{}\n", net.id))?;
    Ok(())
}

/// A `network ls` row: NETWORK ID, NAME, DRIVER, SCOPE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRow {
    /// Short ID unless --no-trunc.
    pub id: String,
    /// Network name.
    pub name: String,
    /// "overlay" | "bridge" | "host" | "none".
    pub driver: String,
    /// "swarm" | "local".
    pub scope: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Labels as docker prints them ("k=v,k2=v2").
    pub labels: String,
}

impl NetworkRow {
    /// The row of one network.
    pub fn of(n: &Network, no_trunc: bool) -> Self {
        let spec = n.spec.clone().unwrap_or_default();
        let mut labels: Vec<String> = spec
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        NetworkRow {
            id: output::short_id(&n.id, no_trunc).to_string(),
            name: spec.name.clone(),
            driver: spec.driver.clone(),
            scope: js::network_scope(&spec.driver).to_string(),
            created: output::rfc3339(n.meta.unwrap_or_default().created_at),
            labels: labels.join(","),
        }
    }

    /// Table cells in column order.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.name.clone(),
            self.driver.clone(),
            self.scope.clone(),
        ]
    }

    /// The `--format json` object (docker's field names).
    pub fn json(&self) -> serde_json::Value {
        json!({"ID": self.id, "Name": self.name, "Driver": self.driver, "Scope": self.scope,
               "CreatedAt": self.created, "Labels": self.labels, "Internal": "false",
               "IPv6": "false"})
    }
}

fn name_of(n: &Network) -> &str {
    n.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")
}

/// `network ls`.
pub async fn ls(c: &mut Control, a: &NetworkLsArgs, format: Format) -> Result<()> {
    let mut networks = c
        .list_networks(ListNetworksRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .networks;
    networks.sort_by(|x, y| name_of(x).cmp(name_of(y)));
    if a.quiet {
        let ids = networks.iter().map(|n| output::short_id(&n.id, a.no_trunc));
        return Ok(output::print_lines(ids)?);
    }
    let rows: Vec<NetworkRow> = networks
        .iter()
        .map(|n| NetworkRow::of(n, a.no_trunc))
        .collect();
    let headers = ["NETWORK ID", "NAME", "DRIVER", "SCOPE"];
    Ok(output::print_rows(
        &rows,
        format,
        &headers,
        NetworkRow::json,
        NetworkRow::cells,
    )?)
}

/// The services on a network with their VIP there, from the service list.
fn services_on(
    network_id: &str,
    names: &[String],
    services: &[shoal_proto::v1::Service],
) -> Vec<NetworkService> {
    let mut out: Vec<NetworkService> = names
        .iter()
        .map(|name| {
            let vip = services
                .iter()
                .find(|s| s.spec.as_ref().is_some_and(|x| &x.name == name))
                .and_then(|s| s.endpoint.as_ref())
                .and_then(|e| e.virtual_ips.iter().find(|v| v.network_id == network_id))
                .map(|v| v.addr.split('/').next().unwrap_or("").to_string())
                .unwrap_or_default();
            NetworkService {
                name: name.clone(),
                vip,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `network inspect NETWORK...`: a JSON array of the networks found (always JSON, as docker);
/// an error names the others.
pub async fn inspect(c: &mut Control, a: &NetworkInspectArgs) -> Result<()> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in &a.networks {
        match c
            .get_network(GetNetworkRequest {
                name_or_id: name.clone(),
            })
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                match r.network {
                    Some(n) => found.push((n, r.services)),
                    None => errors.push(format!("no such network: {name}")),
                }
            }
            Err(s) => errors.push(status(s).to_string()),
        }
    }
    let services = if found.iter().any(|(_, s)| !s.is_empty()) {
        c.list_services(ListServicesRequest {})
            .await
            .map_err(status)?
            .into_inner()
            .services
            .into_iter()
            .filter_map(|s| s.service)
            .collect()
    } else {
        Vec::new()
    };
    let docs = found
        .iter()
        .map(|(n, names)| js::network(n, &services_on(&n.id, names, &services)))
        .collect();
    output::print(&js::pretty_array(docs))?;
    super::fail_if_any(errors)
}

/// `network rm NETWORK...`: removes each, printing its name; keeps going past failures (the
/// manager's refusal names the services still using a network).
pub async fn rm(c: &mut Control, a: &NetworkRmArgs) -> Result<()> {
    super::remove_each(&a.networks, async |name| {
        c.remove_network(RemoveNetworkRequest {
            name_or_id: name.to_string(),
        })
        .await
        .map(drop)
        .map_err(|s| status(s).to_string())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use shoal_proto::v1::{Endpoint, Meta, ServiceSpec, VirtualIp};

    fn create_args(args: &[&str]) -> NetworkCreateArgs {
        let cli = crate::cli::Cli::try_parse_from(
            ["shoalctl", "network", "create"].iter().chain(args.iter()),
        )
        .expect("parses");
        match cli.command {
            crate::cli::Command::Network(crate::cli::NetworkCommand::Create(a)) => a,
            _ => panic!("not network create"),
        }
    }

    #[test]
    fn spec_from_flags() {
        let spec = build_spec(&create_args(&[
            "--subnet",
            "10.5.0.0/24",
            "--gateway",
            "10.5.0.254",
            "--opt",
            "encrypted",
            "-o",
            "mtu=1400",
            "--label",
            "team=a",
            "--attachable",
            "front",
        ]))
        .expect("valid");
        assert_eq!(spec.driver, "overlay");
        assert!(spec.encrypted && spec.attachable && !spec.ingress);
        assert_eq!(spec.options.get("encrypted").map(String::as_str), Some(""));
        assert_eq!(spec.options.get("mtu").map(String::as_str), Some("1400"));
        assert_eq!(spec.labels.get("team").map(String::as_str), Some("a"));
        assert_eq!(spec.gateway, "10.5.0.254");
        let spec = build_spec(&create_args(&["-d", "bridge", "local"])).expect("bridge");
        assert_eq!((spec.driver.as_str(), spec.subnet.as_str()), ("bridge", ""));
        let spec = build_spec(&create_args(&[
            "--ingress",
            "--subnet",
            "10.8.0.0/14",
            "mesh",
        ]))
        .expect("ingress");
        assert!(spec.ingress && !spec.attachable);
        assert_eq!(
            (spec.driver.as_str(), spec.subnet.as_str()),
            ("overlay", "10.8.0.0/14")
        );
    }

    #[test]
    fn spec_errors_name_the_field() {
        for (args, want) in [
            (&["--subnet", "10.5.0.1/24", "n"][..], "--subnet: \"10.5.0.1/24\" has host bits set: it should be 10.5.0.0/24"),
            (&["--subnet", "banana", "n"], "--subnet: \"banana\" is not a CIDR subnet (e.g. 10.1.0.0/24)"),
            (&["--subnet", "10.5.0.0/24", "--gateway", "10.6.0.1", "n"], "--gateway: 10.6.0.1 is outside the subnet 10.5.0.0/24"),
            (&["--gateway", "10.6.0.1", "n"], "--gateway: needs --subnet (the gateway must be an address inside it)"),
            (&["-d", "bridge", "--opt", "encrypted", "n"], "--opt: encrypted is only for overlay networks, not bridge"),
            (&["-d", "bridge", "--ingress", "n"], "--ingress: the ingress network must use the overlay driver"),
            (&["--ingress", "--attachable", "n"], "--attachable: the ingress network cannot be attachable"),
            (&["a.b"], "name: \"a.b\" is not valid: use letters, digits, '-' and '_', starting with a letter or digit"),
        ] {
            let e = build_spec(&create_args(args)).expect_err("refused");
            assert_eq!(e.to_string(), want, "{args:?}");
        }
    }

    #[test]
    fn rows_and_documents() {
        let net = Network {
            id: "0123456789abcdefghijklmno".into(),
            meta: Some(Meta {
                created_at: 1_500_000_000_000_000_000,
                ..Default::default()
            }),
            spec: Some(NetworkSpec {
                name: "front".into(),
                driver: "overlay".into(),
                encrypted: true,
                labels: [("team".to_string(), "a".to_string())].into(),
                ..Default::default()
            }),
            subnet: "10.1.0.0/24".into(),
            gateway: "10.1.0.1".into(),
            vni: 4097,
            predefined: false,
        };
        let r = NetworkRow::of(&net, false);
        assert_eq!(r.cells(), vec!["0123456789ab", "front", "overlay", "swarm"]);
        assert_eq!(r.json()["Labels"], "team=a");
        let bridge = Network {
            spec: Some(NetworkSpec {
                driver: "bridge".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(NetworkRow::of(&bridge, false).scope, "local");

        let web = shoal_proto::v1::Service {
            spec: Some(ServiceSpec {
                name: "web".into(),
                ..Default::default()
            }),
            endpoint: Some(Endpoint {
                virtual_ips: vec![VirtualIp {
                    network_id: net.id.clone(),
                    addr: "10.1.0.2/24".into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let on = services_on(&net.id, &["web".into(), "db".into()], &[web]);
        let doc = js::network(&net, &on);
        assert_eq!(doc["Name"], "front");
        assert_eq!(doc["Id"], "0123456789abcdefghijklmno");
        assert_eq!(doc["Created"], "2017-07-14T02:40:00.000000000Z");
        assert_eq!(doc["Scope"], "swarm");
        assert_eq!(doc["Driver"], "overlay");
        assert_eq!(doc["Attachable"], false);
        assert_eq!(doc["Ingress"], false);
        assert_eq!(doc["IPAM"]["Driver"], "default");
        assert_eq!(
            doc["IPAM"]["Config"],
            json!([{"Subnet": "10.1.0.0/24", "Gateway": "10.1.0.1"}])
        );
        assert_eq!(doc["Options"]["encrypted"], "");
        assert_eq!(
            doc["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
            "4097"
        );
        assert_eq!(doc["Labels"], json!({"team": "a"}));
        assert_eq!(
            doc["Services"],
            json!({"db": {}, "web": {"VIP": "10.1.0.2"}})
        );
        let host = Network {
            spec: Some(NetworkSpec {
                name: "host".into(),
                driver: "host".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let doc = js::network(&host, &[]);
        assert_eq!(doc["IPAM"]["Config"], json!([]));
        assert_eq!(doc["Scope"], "local");
    }
}
