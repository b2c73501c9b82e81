//! Variable interpolation as compose does it: `$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`,
//! `${VAR:?msg}`, `${VAR?msg}`, `${VAR:+r}`, `${VAR+r}` and `$$`, over every string scalar of
//! the file (keys are left alone); defaults are interpolated themselves (`${A:-${B}}`).

use std::collections::BTreeMap;

use serde_norway::Value;

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    /// `${VAR:?msg}` / `${VAR?msg}` with VAR unset (or empty for `:?`).
    #[error("required variable {var} is missing a value: {message}")]
    Required {
        /// The variable.
        var: String,
        /// The message the file gives.
        message: String,
    },
    /// A `$` not followed by a name, `{` or `$`, or an unclosed `${`.
    #[error("invalid interpolation format for {template:?}: you may need to escape any $ with another $")]
    Invalid {
        /// The whole string.
        template: String,
    },
}

/// The variables and what interpolating them found.
pub struct Interpolator<'a> {
    env: &'a BTreeMap<String, String>,
    /// Variables used while unset, in the order first seen.
    pub unset: Vec<String>,
}

impl<'a> Interpolator<'a> {
    /// An interpolator over `env`.
    pub fn new(env: &'a BTreeMap<String, String>) -> Self {
        Interpolator {
            env,
            unset: Vec::new(),
        }
    }

    /// The warnings docker prints for variables used unset.
    pub fn warnings(&self) -> Vec<String> {
        self.unset
            .iter()
            .map(|v| format!("The {v:?} variable is not set. Defaulting to a blank string."))
            .collect()
    }

    /// Interpolates every string scalar under `value`; errors carry the key path.
    pub fn value(
        &mut self,
        value: &mut Value,
        path: &str,
    ) -> Result<(), (String, InterpolateError)> {
        match value {
            Value::String(s) => {
                *s = self.string(s).map_err(|e| (path.to_string(), e))?;
            }
            Value::Sequence(seq) => {
                for (i, v) in seq.iter_mut().enumerate() {
                    self.value(v, &format!("{path}[{i}]"))?;
                }
            }
            Value::Mapping(map) => {
                for (k, v) in map.iter_mut() {
                    let key = key_text(k);
                    let sub = if path.is_empty() {
                        key
                    } else {
                        format!("{path}.{key}")
                    };
                    self.value(v, &sub)?;
                }
            }
            Value::Tagged(t) => self.value(&mut t.value, path)?,
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
        Ok(())
    }

    /// Interpolates one string.
    pub fn string(&mut self, s: &str) -> Result<String, InterpolateError> {
        self.substitute(s, false)
    }

    /// Interpolates a default or message word: `${...}` and set `$VAR`s in it are expanded, but
    /// a `$` that starts no reference, or names an unset variable, is kept as written: stack
    /// files put bcrypt hashes there (`${PASSWORD:-$2y$05$oZcj...}`).
    fn word(&mut self, s: &str) -> Result<String, InterpolateError> {
        self.substitute(s, true)
    }

    fn substitute(&mut self, s: &str, lenient: bool) -> Result<String, InterpolateError> {
        let invalid = || InterpolateError::Invalid {
            template: s.to_string(),
        };
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(r) = after.strip_prefix('$') {
                out.push('$');
                rest = r;
            } else if let Some(r) = after.strip_prefix('{') {
                let end = closing_brace(r).ok_or_else(invalid)?;
                out.push_str(&self.braced(&r[..end], s)?);
                rest = &r[end + 1..];
            } else {
                let len = name_len(after);
                if len == 0 && lenient {
                    out.push('$');
                    rest = after;
                    continue;
                }
                if len == 0 {
                    return Err(invalid());
                }
                if lenient && !self.env.contains_key(&after[..len]) {
                    out.push('$');
                    out.push_str(&after[..len]);
                    rest = &after[len..];
                    continue;
                }
                out.push_str(&self.lookup(&after[..len], true));
                rest = &after[len..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The inside of `${...}`.
    fn braced(&mut self, inner: &str, template: &str) -> Result<String, InterpolateError> {
        let len = name_len(inner);
        if len == 0 {
            return Err(InterpolateError::Invalid {
                template: template.to_string(),
            });
        }
        let (name, op) = inner.split_at(len);
        let value = self.env.get(name);
        let set = value.is_some();
        let nonempty = value.is_some_and(|v| !v.is_empty());
        let (kind, word) = if let Some(w) = op.strip_prefix(":-") {
            (":-", w)
        } else if let Some(w) = op.strip_prefix(":?") {
            (":?", w)
        } else if let Some(w) = op.strip_prefix(":+") {
            (":+", w)
        } else if let Some(w) = op.strip_prefix('-') {
            ("-", w)
        } else if let Some(w) = op.strip_prefix('?') {
            ("?", w)
        } else if let Some(w) = op.strip_prefix('+') {
            ("+", w)
        } else if op.is_empty() {
            return Ok(self.lookup(name, true));
        } else {
            return Err(InterpolateError::Invalid {
                template: template.to_string(),
            });
        };
        match kind {
            ":-" if !nonempty => self.word(word),
            "-" if !set => self.word(word),
            ":?" if !nonempty => Err(self.required(name, word)?),
            "?" if !set => Err(self.required(name, word)?),
            ":+" if nonempty => self.word(word),
            "+" if set => self.word(word),
            ":+" | "+" => Ok(String::new()),
            _ => Ok(self.lookup(name, false)),
        }
    }

    fn required(&mut self, name: &str, word: &str) -> Result<InterpolateError, InterpolateError> {
        Ok(InterpolateError::Required {
            var: name.to_string(),
            message: self.word(word)?,
        })
    }

    /// The variable's value; unset ones are blank and, when `warn`, remembered.
    fn lookup(&mut self, name: &str, warn: bool) -> String {
        match self.env.get(name) {
            Some(v) => v.clone(),
            None => {
                if warn && !self.unset.iter().any(|u| u == name) {
                    self.unset.push(name.to_string());
                }
                String::new()
            }
        }
    }
}

/// The length of the variable name at the start of `s` (`[A-Za-z_][A-Za-z0-9_]*`).
fn name_len(s: &str) -> usize {
    let mut len = 0;
    for (i, c) in s.char_indices() {
        let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
        if !ok {
            break;
        }
        len = i + c.len_utf8();
    }
    len
}

/// The index of the `}` closing a `${` whose content starts `s`, skipping nested `${...}`.
fn closing_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// A mapping key as text for paths and messages.
pub fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("A", "a"), ("EMPTY", ""), ("B", "b")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(s: &str) -> Result<String, InterpolateError> {
        let e = env();
        Interpolator::new(&e).string(s)
    }

    #[test]
    fn forms() {
        let cases = [
            ("$A", "a"),
            ("x${A}y", "xay"),
            ("${A:-d}", "a"),
            ("${EMPTY:-d}", "d"),
            ("${EMPTY-d}", ""),
            ("${NOPE-d}", "d"),
            ("${NOPE:-${B}}", "b"),
            ("${NOPE:-${NOPE2:-deep}}", "deep"),
            ("$$A", "$A"),
            ("$${A}", "${A}"),
            ("${A:+yes}", "yes"),
            ("${EMPTY:+yes}", ""),
            ("${EMPTY+yes}", "yes"),
            ("${NOPE}", ""),
            ("a-$A.b", "a-a.b"),
            ("${A:-x:y}", "a"),
            ("${NOPE:-8000:80}", "8000:80"),
            ("${NOPE:-$2y$05$ab/c}", "$2y$05$ab/c"),
            ("${NOPE:-a$B}", "ab"),
        ];
        for (input, want) in cases {
            assert_eq!(run(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn required_names_variable_and_message() {
        let err = run("${X:?need X}").unwrap_err();
        assert_eq!(
            err,
            InterpolateError::Required {
                var: "X".into(),
                message: "need X".into()
            }
        );
        assert!(err.to_string().contains("need X"));
        assert!(run("${EMPTY?m}").is_ok());
        assert!(run("${EMPTY:?m}").is_err());
        assert!(run("${NOPE?m}").is_err());
    }

    #[test]
    fn invalid_templates() {
        for bad in ["$", "a $ b", "${", "${A", "${}", "${A!x}", "$1"] {
            assert!(
                matches!(run(bad), Err(InterpolateError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn unset_warns_once_and_keys_untouched() {
        let e = env();
        let mut i = Interpolator::new(&e);
        let mut v: Value =
            serde_norway::from_str("$K: [\"$NOPE\", \"${NOPE}\", \"${NOPE2:-x}\", 3]").unwrap();
        i.value(&mut v, "").unwrap();
        assert_eq!(i.unset, vec!["NOPE".to_string()]);
        assert_eq!(
            i.warnings(),
            vec!["The \"NOPE\" variable is not set. Defaulting to a blank string.".to_string()]
        );
        assert_eq!(v["$K"][0], Value::String(String::new()));
        assert_eq!(v["$K"][2], Value::String("x".into()));
    }

    #[test]
    fn error_path() {
        let e = env();
        let mut i = Interpolator::new(&e);
        let mut v: Value =
            serde_norway::from_str("services:\n  web:\n    ports: [\"1\", \"${X:?set X}\"]\n")
                .unwrap();
        let (path, _) = i.value(&mut v, "").unwrap_err();
        assert_eq!(path, "services.web.ports[1]");
    }
}
