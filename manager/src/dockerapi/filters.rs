//! docker's `filters=` query parameter: JSON in the map form `{"key":{"value":true}}` or the
//! legacy list form `{"key":["value"]}` (moby `api/types/filters/parse.go`), and its matching
//! rules: several values of one key match any of them, except `label`, whose values must all
//! match; `name`/`id` match by prefix where the route says so.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::error::ApiError;

/// Parsed filters: key → values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, BTreeSet<String>>);

impl Filters {
    /// Parses the `filters` query value (absent or empty: no filters).
    pub fn parse(raw: Option<&str>) -> Result<Filters, ApiError> {
        let raw = match raw.map(str::trim) {
            None | Some("") => return Ok(Filters::default()),
            Some(r) => r,
        };
        let value: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| ApiError::bad_request("invalid filter: not a JSON object"))?;
        let mut out = BTreeMap::new();
        for (key, v) in obj {
            let mut values = BTreeSet::new();
            match v {
                serde_json::Value::Object(m) => {
                    for (val, on) in m {
                        if on.as_bool() == Some(true) {
                            values.insert(val.clone());
                        }
                    }
                }
                serde_json::Value::Array(a) => {
                    for val in a {
                        let s = val.as_str().ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "invalid filter: values of {key:?} must be strings"
                            ))
                        })?;
                        values.insert(s.to_string());
                    }
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid filter: {key:?} must map to an object or a list"
                    )))
                }
            }
            out.insert(key.clone(), values);
        }
        Ok(Filters(out))
    }

    /// A filter set from pairs (tests and internal callers).
    pub fn of(pairs: &[(&str, &str)]) -> Filters {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (k, v) in pairs {
            out.entry((*k).to_string())
                .or_default()
                .insert((*v).to_string());
        }
        Filters(out)
    }

    /// Refuses keys the route does not know, as moby: 400 "invalid filter 'KEY'".
    pub fn check(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(ApiError::bad_request(format!("invalid filter '{k}'"))),
            None => Ok(()),
        }
    }

    /// Whether `key` was given at all.
    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// The values of `key` (none if it was not given).
    pub fn values(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0.get(key).into_iter().flatten().map(String::as_str)
    }

    /// True when `key` is not given, or one of its values equals `candidate`.
    pub fn matches_exact(&self, key: &str, candidate: &str) -> bool {
        match self.0.get(key) {
            None => true,
            Some(vals) => vals.contains(candidate),
        }
    }

    /// True when `key` is not given, or `candidate` starts with one of its values.
    pub fn matches_prefix(&self, key: &str, candidate: &str) -> bool {
        match self.0.get(key) {
            None => true,
            Some(vals) => vals.iter().any(|v| candidate.starts_with(v.as_str())),
        }
    }

    /// True when `key` (`label`, `node.label`) is not given, or every one of its values holds
    /// for `labels`: `K` that the key exists, `K=V` that it has that value.
    pub fn matches_labels(&self, key: &str, labels: &HashMap<String, String>) -> bool {
        match self.0.get(key) {
            None => true,
            Some(vals) => vals.iter().all(|v| match v.split_once('=') {
                Some((k, want)) => labels.get(k).is_some_and(|have| have == want),
                None => labels.contains_key(v.as_str()),
            }),
        }
    }

    /// A boolean filter (`dangling`, `_up-to-date`): None when not given; "true"/"1" and
    /// "false"/"0" otherwise, anything else a 400.
    pub fn boolean(&self, key: &str) -> Result<Option<bool>, ApiError> {
        let Some(vals) = self.0.get(key) else {
            return Ok(None);
        };
        let mut out = None;
        for v in vals {
            let b = match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "invalid filter '{key}={other}': use true or false"
                    )))
                }
            };
            out = Some(out.map_or(b, |o: bool| o || b));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_json_forms_parse() {
        let a = Filters::parse(Some(r#"{"name":{"web":true,"off":false}}"#)).expect("map form");
        let b = Filters::parse(Some(r#"{"name":["web"]}"#)).expect("list form");
        assert_eq!(a, b);
        assert_eq!(a.values("name").collect::<Vec<_>>(), vec!["web"]);
        assert_eq!(Filters::parse(None).expect("none"), Filters::default());
        assert!(Filters::parse(Some("{")).is_err());
        assert!(Filters::parse(Some(r#"{"name":"web"}"#)).is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let f = Filters::of(&[("nmae", "x")]);
        let e = f.check(&["name", "id"]).expect_err("unknown key");
        assert_eq!(e.message, "invalid filter 'nmae'");
        assert!(Filters::of(&[("name", "x")]).check(&["name"]).is_ok());
    }

    #[test]
    fn labels_all_match_and_names_by_prefix() {
        let labels: HashMap<String, String> = [("a".to_string(), "1".to_string())].into();
        assert!(Filters::of(&[("label", "a")]).matches_labels("label", &labels));
        assert!(Filters::of(&[("label", "a=1")]).matches_labels("label", &labels));
        assert!(!Filters::of(&[("label", "a=2")]).matches_labels("label", &labels));
        assert!(!Filters::of(&[("label", "a"), ("label", "b")]).matches_labels("label", &labels));
        let f = Filters::of(&[("name", "we"), ("name", "db")]);
        assert!(f.matches_prefix("name", "web"));
        assert!(!f.matches_prefix("name", "cache"));
        assert!(Filters::default().matches_prefix("name", "anything"));
        assert_eq!(
            Filters::of(&[("_up-to-date", "true")])
                .boolean("_up-to-date")
                .ok(),
            Some(Some(true))
        );
    }
}
