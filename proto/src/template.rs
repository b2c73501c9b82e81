//! Swarm's task templates: `{{.Service.Name}}`, `{{.Service.ID}}`, `{{.Task.Slot}}`,
//! `{{.Task.Name}}`, `{{.Task.ID}}`, `{{.Node.ID}}`, `{{.Node.Hostname}}` in `--hostname`, `--env`
//! values and mount sources. The agent expands them when it prepares a task; the manager checks
//! them when a spec is written, so a typo is an error at `service create`, not a task failure.

/// What a template can refer to.
#[derive(Debug, Clone, Default)]
pub struct TemplateContext {
    /// The service's id and name.
    pub service_id: String,
    pub service_name: String,
    /// The task's id, its slot (0 for a global task) and its name ("web.1.xyz" / "web.NODE.xyz").
    pub task_id: String,
    pub task_slot: u64,
    pub task_name: String,
    /// The node's id and hostname.
    pub node_id: String,
    pub node_hostname: String,
}

/// A template that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without a matching `}}`, or a placeholder that is not one of the known fields.
    #[error("template {template:?}: {why}")]
    Invalid {
        /// The whole string.
        template: String,
        /// What is wrong, naming the placeholder.
        why: String,
    },
}

/// The value of one placeholder (the text between the braces, already trimmed), if it is known.
fn field(name: &str, ctx: &TemplateContext) -> Option<String> {
    Some(match name {
        ".Service.Name" => ctx.service_name.clone(),
        ".Service.ID" => ctx.service_id.clone(),
        ".Task.Slot" => ctx.task_slot.to_string(),
        ".Task.Name" => ctx.task_name.clone(),
        ".Task.ID" => ctx.task_id.clone(),
        ".Node.ID" => ctx.node_id.clone(),
        ".Node.Hostname" => ctx.node_hostname.clone(),
        _ => return None,
    })
}

/// Expands every placeholder of `template`.
pub fn expand(template: &str, ctx: &TemplateContext) -> Result<String, TemplateError> {
    let invalid = |why: String| TemplateError::Invalid {
        template: template.to_string(),
        why,
    };
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| invalid(format!("unclosed \"{{{{\" at {:?}", &rest[open..])))?;
        let name = after[..close].trim();
        let value = field(name, ctx)
            .ok_or_else(|| invalid(format!("unknown placeholder \"{{{{{name}}}}}\"")))?;
        out.push_str(&value);
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks that `template` only uses known placeholders.
pub fn check(template: &str) -> Result<(), TemplateError> {
    expand(template, &TemplateContext::default()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> TemplateContext {
        TemplateContext {
            service_id: "svc123".into(),
            service_name: "web".into(),
            task_id: "task9".into(),
            task_slot: 3,
            task_name: "web.3.task9".into(),
            node_id: "node7".into(),
            node_hostname: "host-a".into(),
        }
    }

    #[test]
    fn expands_every_field_with_and_without_spaces() {
        let got = expand(
            "{{.Service.Name}}-{{ .Service.ID }}-{{.Task.Slot}}-{{  .Task.Name}}-{{.Task.ID }}-{{.Node.ID}}-{{ .Node.Hostname }}",
            &ctx(),
        )
        .unwrap();
        assert_eq!(got, "web-svc123-3-web.3.task9-task9-node7-host-a");
    }

    #[test]
    fn plain_text_and_single_braces_pass_through() {
        assert_eq!(expand("a{b}c", &ctx()).unwrap(), "a{b}c");
        assert_eq!(expand("", &ctx()).unwrap(), "");
        assert_eq!(
            expand("/srv/{{.Task.Slot}}/data", &ctx()).unwrap(),
            "/srv/3/data"
        );
    }

    #[test]
    fn unknown_field_is_named() {
        let err = expand("x-{{.Service.Nmae}}", &ctx()).unwrap_err();
        assert!(err.to_string().contains(".Service.Nmae"), "{err}");
        assert!(check("{{ .Node.Labels }}").is_err());
    }

    #[test]
    fn unclosed_placeholder_is_an_error() {
        let err = expand("x-{{.Task.Slot", &ctx()).unwrap_err();
        assert!(err.to_string().contains("unclosed"), "{err}");
    }

    #[test]
    fn check_accepts_known_fields() {
        check("{{.Service.Name}}.{{.Task.Slot}}").unwrap();
        check("no placeholders").unwrap();
    }
}
