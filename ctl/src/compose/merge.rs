//! Merging override files onto the first, with compose's rules: mappings key by key, scalars
//! replaced, `command`/`entrypoint`/`healthcheck.test` replaced, `environment`/`labels`/
//! `sysctls`/`deploy.labels` merged as maps whatever form each file uses, a service's
//! `volumes`/`secrets`/`configs` merged by target, other lists appended without duplicates.

use serde_norway::{Mapping, Value};

/// Merges `over` (a whole file) onto `base`.
pub fn merge_files(base: &mut Value, over: Value) {
    let Value::Mapping(over) = over else {
        return;
    };
    if !base.is_mapping() {
        *base = Value::Mapping(Mapping::new());
    }
    let Some(base) = base.as_mapping_mut() else {
        return;
    };
    for (k, v) in over {
        let is_services = k.as_str() == Some("services");
        match base.get_mut(&k) {
            Some(b) if is_services => {
                let (Some(bm), Value::Mapping(om)) = (b.as_mapping_mut(), &v) else {
                    *b = v;
                    continue;
                };
                for (name, svc) in om.clone() {
                    match bm.get_mut(&name) {
                        Some(existing) => merge_service(existing, svc),
                        None => {
                            bm.insert(name, svc);
                        }
                    }
                }
            }
            Some(b) => merge_generic(b, v),
            None => {
                base.insert(k, v);
            }
        }
    }
}

/// Merges one service's override onto it.
pub fn merge_service(base: &mut Value, over: Value) {
    // `web:` with nothing under it overrides nothing.
    if over.is_null() {
        return;
    }
    let (Some(bm), Value::Mapping(om)) = (base.as_mapping_mut(), &over) else {
        *base = over;
        return;
    };
    for (k, v) in om.clone() {
        let key = k.as_str().unwrap_or_default().to_string();
        let Some(b) = bm.get_mut(&k) else {
            bm.insert(k, v);
            continue;
        };
        match key.as_str() {
            "command" | "entrypoint" => *b = v,
            "environment" | "labels" | "sysctls" | "extra_hosts" => merge_as_map(b, v),
            "volumes" => merge_keyed(b, v, volume_target),
            "secrets" | "configs" => merge_keyed(b, v, file_ref_target),
            "networks" => {
                let mut bn = networks_map(b);
                merge_generic(&mut bn, networks_map(&v));
                *b = bn;
            }
            "depends_on" => {
                let mut bd = depends_map(b);
                merge_generic(&mut bd, depends_map(&v));
                *b = bd;
            }
            "healthcheck" => {
                if let (Some(bh), Value::Mapping(oh)) = (b.as_mapping_mut(), &v) {
                    for (hk, hv) in oh.clone() {
                        bh.insert(hk, hv);
                    }
                } else {
                    *b = v;
                }
            }
            "deploy" => merge_deploy(b, v),
            _ => merge_generic(b, v),
        }
    }
}

fn merge_deploy(base: &mut Value, over: Value) {
    let (Some(bm), Value::Mapping(om)) = (base.as_mapping_mut(), &over) else {
        *base = over;
        return;
    };
    for (k, v) in om.clone() {
        match bm.get_mut(&k) {
            Some(b) if k.as_str() == Some("labels") => merge_as_map(b, v),
            Some(b) => merge_generic(b, v),
            None => {
                bm.insert(k, v);
            }
        }
    }
}

/// Mappings merged recursively, sequences appended without duplicates, anything else replaced.
pub fn merge_generic(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(bm), Value::Mapping(om)) => {
            for (k, v) in om {
                match bm.get_mut(&k) {
                    Some(b) => merge_generic(b, v),
                    None => {
                        bm.insert(k, v);
                    }
                }
            }
        }
        (Value::Sequence(bs), Value::Sequence(os)) => {
            for v in os {
                if !bs.contains(&v) {
                    bs.push(v);
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// `K=V` lists and maps as one map, the override's keys winning.
fn merge_as_map(base: &mut Value, over: Value) {
    let mut m = to_map(base);
    for (k, v) in to_map(&over) {
        m.insert(k, v);
    }
    *base = Value::Mapping(m);
}

/// A map or `K=V` list as a map (`K` alone maps to null).
pub fn to_map(v: &Value) -> Mapping {
    match v {
        Value::Mapping(m) => m.clone(),
        Value::Sequence(s) => s
            .iter()
            .filter_map(|e| e.as_str())
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (Value::from(k), Value::from(v)),
                None => (Value::from(e), Value::Null),
            })
            .collect(),
        _ => Mapping::new(),
    }
}

/// List items merged by a key: an override item replaces the base item with the same key.
fn merge_keyed(base: &mut Value, over: Value, key: fn(&Value) -> Option<String>) {
    let (Value::Sequence(bs), Value::Sequence(os)) = (&mut *base, &over) else {
        *base = over;
        return;
    };
    for v in os.clone() {
        let k = key(&v);
        match bs.iter_mut().find(|b| k.is_some() && key(b) == k) {
            Some(b) => *b = v,
            None => bs.push(v),
        }
    }
}

/// The container path of a short (`src:dst[:mode]`, `dst`) or long volume entry.
fn volume_target(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            Some(if parts.len() == 1 { parts[0] } else { parts[1] }.to_string())
        }
        Value::Mapping(m) => m.get("target").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// The target of a secret/config reference (the source when no target is given).
fn file_ref_target(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Mapping(m) => m
            .get("target")
            .or_else(|| m.get("source"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

fn networks_map(v: &Value) -> Value {
    match v {
        Value::Sequence(s) => Value::Mapping(
            s.iter()
                .filter_map(|n| n.as_str())
                .map(|n| (Value::from(n), Value::Null))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn depends_map(v: &Value) -> Value {
    match v {
        Value::Sequence(s) => Value::Mapping(
            s.iter()
                .filter_map(|n| n.as_str())
                .map(|n| {
                    let mut c = Mapping::new();
                    c.insert("condition".into(), "service_started".into());
                    (Value::from(n), Value::Mapping(c))
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_norway::from_str(s).unwrap()
    }

    #[test]
    fn override_rules() {
        let mut base = y(r#"
services:
  web:
    image: web:1
    command: ["a", "b"]
    environment: ["A=1", "B=2"]
    labels: {x: "1"}
    ports: ["80:80"]
    volumes: ["data:/data", "./c:/conf:ro"]
    secrets: [s1]
    networks: [front]
    deploy:
      replicas: 1
      labels: ["l=1"]
      placement: {constraints: ["node.role==worker"]}
networks: {front: {}}
"#);
        let over = y(r#"
services:
  web:
    image: web:2
    command: ["c"]
    environment: {B: "3", C: "4"}
    labels: ["y=2"]
    ports: ["80:80", "443:443"]
    volumes: [{type: volume, source: other, target: /data}]
    secrets: [{source: s2, target: s1}]
    networks: {back: {aliases: [w]}}
    deploy:
      replicas: 3
      labels: {m: "2"}
      placement: {constraints: ["node.labels.a==b"]}
  db:
    image: pg
networks: {back: {driver: overlay}}
"#);
        merge_files(&mut base, over);
        let web = &base["services"]["web"];
        assert_eq!(web["image"], "web:2");
        assert_eq!(web["command"], y(r#"["c"]"#));
        assert_eq!(web["environment"], y(r#"{A: "1", B: "3", C: "4"}"#));
        assert_eq!(web["labels"], y(r#"{x: "1", y: "2"}"#));
        assert_eq!(web["ports"], y(r#"["80:80", "443:443"]"#));
        assert_eq!(web["volumes"].as_sequence().unwrap().len(), 2);
        assert_eq!(web["volumes"][0]["source"], "other");
        assert_eq!(web["secrets"], y(r#"[{source: s2, target: s1}]"#));
        assert_eq!(web["networks"], y("{front: null, back: {aliases: [w]}}"));
        assert_eq!(web["deploy"]["replicas"], 3);
        assert_eq!(web["deploy"]["labels"], y(r#"{l: "1", m: "2"}"#));
        assert_eq!(
            web["deploy"]["placement"]["constraints"],
            y(r#"["node.role==worker", "node.labels.a==b"]"#)
        );
        assert_eq!(base["services"]["db"]["image"], "pg");
        merge_files(&mut base, y("services:\n  web:\n"));
        assert_eq!(base["services"]["web"]["image"], "web:2");
        assert_eq!(base["networks"]["back"]["driver"], "overlay");
    }
}
