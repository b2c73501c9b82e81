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

/// Expands every placeholder of `template`. (Stub: returns the input unchanged.)
pub fn expand(template: &str, _ctx: &TemplateContext) -> Result<String, TemplateError> {
    Ok(template.to_string())
}

/// Checks that `template` only uses known placeholders. (Stub: accepts everything.)
pub fn check(template: &str) -> Result<(), TemplateError> {
    expand(template, &TemplateContext::default()).map(|_| ())
}
