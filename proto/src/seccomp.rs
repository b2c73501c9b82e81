//! Seccomp profiles in Docker's JSON format (`docker run --security-opt seccomp=profile.json`).
//!
//! Only parsing and validation live here, so shoalctl and the manager can refuse a bad profile before
//! it reaches a node; the agent resolves the conditional rules and compiles the filter.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Highest syscall argument index (syscalls take at most six arguments).
pub const MAX_ARG_INDEX: u32 = 5;

/// The libseccomp architecture names a profile may list (`SCMP_ARCH_*`).
pub const KNOWN_ARCHES: &[&str] = &[
    "SCMP_ARCH_NATIVE",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_SHEB",
    "SCMP_ARCH_SH",
];

/// A seccomp profile: a default action and the rules that override it for some syscalls.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// What happens to a syscall no rule matches.
    pub default_action: Action,
    /// The errno of a `SCMP_ACT_ERRNO` default action (EPERM when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// Architectures the filter covers (the older form; exclusive with `arch_map`).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub architectures: Vec<String>,
    /// Per native architecture, the sub-architectures the filter also covers.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub arch_map: Vec<ArchMap>,
    /// The rules, in order.
    #[serde(default, deserialize_with = "null_as_default")]
    pub syscalls: Vec<Syscall>,
    /// `SECCOMP_FILTER_FLAG_*` flags passed to the kernel with the filter.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub flags: Vec<Flag>,
}

/// A native architecture and the sub-architectures a filter for it also covers (x86_64: x86, x32).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    /// `SCMP_ARCH_*` of the native architecture.
    pub architecture: String,
    /// `SCMP_ARCH_*` of the sub-architectures.
    #[serde(default, deserialize_with = "null_as_default")]
    pub sub_architectures: Vec<String>,
}

/// One rule: an action for some syscalls, maybe only for some arguments, hosts or capability sets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Syscall {
    /// Syscall names; names this machine does not know are skipped.
    #[serde(default, deserialize_with = "null_as_default")]
    pub names: Vec<String>,
    /// The older single-name form; `parse_profile` moves it into `names`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What happens when the rule matches.
    pub action: Action,
    /// The errno of `SCMP_ACT_ERRNO` (EPERM when absent), the message of `SCMP_ACT_TRACE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    /// Argument conditions, all of which must hold.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub args: Vec<Arg>,
    /// The rule applies only where all of these hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub includes: Option<Condition>,
    /// The rule does not apply where any of these holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excludes: Option<Condition>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A comparison of one syscall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    /// Which argument, 0 to 5.
    pub index: u32,
    /// The operand (for `SCMP_CMP_MASKED_EQ`, the mask).
    #[serde(default)]
    pub value: u64,
    /// The second operand (for `SCMP_CMP_MASKED_EQ`, the value the masked argument must equal).
    #[serde(default)]
    pub value_two: u64,
    /// The comparison.
    pub op: Operator,
}

/// Host and container properties a rule depends on (`includes` / `excludes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Capability names (`CAP_SYS_ADMIN`).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub caps: Vec<String>,
    /// Architecture names as Docker spells them (`amd64`, `arm64`, `s390x`).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub arches: Vec<String>,
    /// A kernel version, `<kernel>.<major>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<KernelVersion>,
}

/// What a filter does with a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Runs it.
    #[serde(rename = "SCMP_ACT_ALLOW")]
    Allow,
    /// Fails it with an errno.
    #[serde(rename = "SCMP_ACT_ERRNO")]
    Errno,
    /// Kills the thread (the older name of `KillThread`).
    #[serde(rename = "SCMP_ACT_KILL")]
    Kill,
    /// Kills the whole process.
    #[serde(rename = "SCMP_ACT_KILL_PROCESS")]
    KillProcess,
    /// Kills the thread.
    #[serde(rename = "SCMP_ACT_KILL_THREAD")]
    KillThread,
    /// Sends SIGSYS.
    #[serde(rename = "SCMP_ACT_TRAP")]
    Trap,
    /// Runs it and logs it.
    #[serde(rename = "SCMP_ACT_LOG")]
    Log,
    /// Hands it to a ptrace tracer.
    #[serde(rename = "SCMP_ACT_TRACE")]
    Trace,
}

impl Action {
    /// Every action with its name in the profile.
    pub const ALL: &'static [(Action, &'static str)] = &[
        (Action::Allow, "SCMP_ACT_ALLOW"),
        (Action::Errno, "SCMP_ACT_ERRNO"),
        (Action::Kill, "SCMP_ACT_KILL"),
        (Action::KillProcess, "SCMP_ACT_KILL_PROCESS"),
        (Action::KillThread, "SCMP_ACT_KILL_THREAD"),
        (Action::Trap, "SCMP_ACT_TRAP"),
        (Action::Log, "SCMP_ACT_LOG"),
        (Action::Trace, "SCMP_ACT_TRACE"),
    ];
}

/// How an argument is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operator {
    /// `arg != value`
    #[serde(rename = "SCMP_CMP_NE")]
    NotEqual,
    /// `arg < value`
    #[serde(rename = "SCMP_CMP_LT")]
    LessThan,
    /// `arg <= value`
    #[serde(rename = "SCMP_CMP_LE")]
    LessOrEqual,
    /// `arg == value`
    #[serde(rename = "SCMP_CMP_EQ")]
    Equal,
    /// `arg >= value`
    #[serde(rename = "SCMP_CMP_GE")]
    GreaterOrEqual,
    /// `arg > value`
    #[serde(rename = "SCMP_CMP_GT")]
    GreaterThan,
    /// `arg & value == value_two`
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEqual,
}

impl Operator {
    /// Every operator with its name in the profile.
    pub const ALL: &'static [(Operator, &'static str)] = &[
        (Operator::NotEqual, "SCMP_CMP_NE"),
        (Operator::LessThan, "SCMP_CMP_LT"),
        (Operator::LessOrEqual, "SCMP_CMP_LE"),
        (Operator::Equal, "SCMP_CMP_EQ"),
        (Operator::GreaterOrEqual, "SCMP_CMP_GE"),
        (Operator::GreaterThan, "SCMP_CMP_GT"),
        (Operator::MaskedEqual, "SCMP_CMP_MASKED_EQ"),
    ];
}

/// A flag of `seccomp(SECCOMP_SET_MODE_FILTER, flags, ...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Flag {
    /// Applies the filter to every thread (moot: the container's init is single-threaded).
    #[serde(rename = "SECCOMP_FILTER_FLAG_TSYNC")]
    Tsync,
    /// Logs every action but `SCMP_ACT_ALLOW`.
    #[serde(rename = "SECCOMP_FILTER_FLAG_LOG")]
    Log,
    /// Leaves speculative store bypass mitigation off.
    #[serde(rename = "SECCOMP_FILTER_FLAG_SPEC_ALLOW")]
    SpecAllow,
}

impl Flag {
    /// Every flag with its name in the profile.
    pub const ALL: &'static [(Flag, &'static str)] = &[
        (Flag::Tsync, "SECCOMP_FILTER_FLAG_TSYNC"),
        (Flag::Log, "SECCOMP_FILTER_FLAG_LOG"),
        (Flag::SpecAllow, "SECCOMP_FILTER_FLAG_SPEC_ALLOW"),
    ];
}

/// A kernel version as rules compare it: only the first two numbers count ("5.8" ≤ "5.8.0-1-amd64").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// The 5 of 5.8.
    pub kernel: u32,
    /// The 8 of 5.8.
    pub major: u32,
}

impl KernelVersion {
    /// The version of a kernel release string (`uname -r`: "6.1.0-18-amd64", "3.12-1-amd64").
    pub fn from_release(release: &str) -> Option<KernelVersion> {
        let mut parts = release.trim().splitn(3, '.');
        let kernel = parts.next()?.parse().ok()?;
        let major_text = parts.next()?;
        let digits = major_text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(major_text.len());
        let major = major_text[..digits].parse().ok()?;
        Some(KernelVersion { kernel, major })
    }
}

impl FromStr for KernelVersion {
    type Err = String;

    /// Parses a profile's `minKernel`: exactly `<kernel>.<major>`, not 0.0.
    fn from_str(s: &str) -> Result<KernelVersion, String> {
        let bad = || format!("invalid kernel version {s:?}: expected \"<kernel>.<major>\"");
        let (kernel, major) = s.split_once('.').ok_or_else(bad)?;
        let kernel: u32 = kernel.parse().map_err(|_| bad())?;
        let major: u32 = major.parse().map_err(|_| bad())?;
        if kernel == 0 && major == 0 {
            return Err(bad());
        }
        Ok(KernelVersion { kernel, major })
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kernel, self.major)
    }
}

impl Serialize for KernelVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KernelVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<KernelVersion, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Go writes empty lists as `null`; they mean the same as absent ones.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A profile that cannot be used, with the place in the document (`syscalls[3].args[0].op`).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// Not JSON, or not shaped like a profile.
    #[error("invalid seccomp profile: {source}")]
    Json {
        /// The parser's error (with line and column).
        source: serde_json::Error,
    },
    /// An action that is not one of `SCMP_ACT_*` this runtime knows.
    #[error("{path}: unknown action {action:?}")]
    UnknownAction {
        /// Where in the document.
        path: String,
        /// The action as written.
        action: String,
    },
    /// A comparison that is not one of `SCMP_CMP_*`.
    #[error("{path}: unknown operator {op:?}")]
    UnknownOperator {
        /// Where in the document.
        path: String,
        /// The operator as written.
        op: String,
    },
    /// An argument index outside 0..=5.
    #[error("{path}: argument index {index} out of range 0..={MAX_ARG_INDEX}")]
    ArgIndex {
        /// Where in the document.
        path: String,
        /// The index as written.
        index: u64,
    },
    /// A flag that is not one of `SECCOMP_FILTER_FLAG_*` this runtime knows.
    #[error("{path}: unknown flag {flag:?}")]
    UnknownFlag {
        /// Where in the document.
        path: String,
        /// The flag as written.
        flag: String,
    },
    /// An architecture that is not one of `SCMP_ARCH_*`.
    #[error("{path}: unknown architecture {arch:?}")]
    UnknownArch {
        /// Where in the document.
        path: String,
        /// The architecture as written.
        arch: String,
    },
    /// A `minKernel` that is not `<kernel>.<major>`.
    #[error("{path}: {reason}")]
    KernelVersion {
        /// Where in the document.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two fields that exclude each other, an empty name, or a rule without names.
    #[error("{path}: {reason}")]
    Invalid {
        /// Where in the document.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Parses and validates a profile in Docker's JSON format; the deprecated single `name` of a rule
/// is moved into its `names`.
pub fn parse_profile(json: &[u8]) -> Result<Profile, ProfileError> {
    let value: Value =
        serde_json::from_slice(json).map_err(|source| ProfileError::Json { source })?;
    // The typed parse would refuse an unknown action too, but without saying which rule: the
    // names are checked on the untyped document first so the error can point at the place.
    check_names(&value)?;
    let mut profile: Profile =
        serde_json::from_value(value).map_err(|source| ProfileError::Json { source })?;
    check_profile(&mut profile)?;
    Ok(profile)
}

/// Checks every action, operator, flag, architecture and kernel version written as a string.
fn check_names(doc: &Value) -> Result<(), ProfileError> {
    if let Some(action) = doc.get("defaultAction").and_then(Value::as_str) {
        if !known(Action::ALL, action) {
            return Err(ProfileError::UnknownAction {
                path: "defaultAction".into(),
                action: action.into(),
            });
        }
    }
    for (i, flag) in strings(doc.get("flags")) {
        if !known(Flag::ALL, flag) {
            return Err(ProfileError::UnknownFlag {
                path: format!("flags[{i}]"),
                flag: flag.into(),
            });
        }
    }
    let check_arch = |path: String, arch: &str| {
        if KNOWN_ARCHES.contains(&arch) {
            Ok(())
        } else {
            Err(ProfileError::UnknownArch {
                path,
                arch: arch.into(),
            })
        }
    };
    for (i, arch) in strings(doc.get("architectures")) {
        check_arch(format!("architectures[{i}]"), arch)?;
    }
    for (i, entry) in array(doc.get("archMap")) {
        if let Some(arch) = entry.get("architecture").and_then(Value::as_str) {
            check_arch(format!("archMap[{i}].architecture"), arch)?;
        }
        for (j, arch) in strings(entry.get("subArchitectures")) {
            check_arch(format!("archMap[{i}].subArchitectures[{j}]"), arch)?;
        }
    }
    for (i, rule) in array(doc.get("syscalls")) {
        if let Some(action) = rule.get("action").and_then(Value::as_str) {
            if !known(Action::ALL, action) {
                return Err(ProfileError::UnknownAction {
                    path: format!("syscalls[{i}].action"),
                    action: action.into(),
                });
            }
        }
        for (j, arg) in array(rule.get("args")) {
            if let Some(op) = arg.get("op").and_then(Value::as_str) {
                if !known(Operator::ALL, op) {
                    return Err(ProfileError::UnknownOperator {
                        path: format!("syscalls[{i}].args[{j}].op"),
                        op: op.into(),
                    });
                }
            }
            if let Some(index) = arg.get("index").and_then(Value::as_u64) {
                if index > u64::from(MAX_ARG_INDEX) {
                    return Err(ProfileError::ArgIndex {
                        path: format!("syscalls[{i}].args[{j}].index"),
                        index,
                    });
                }
            }
        }
        for field in ["includes", "excludes"] {
            let min_kernel = rule
                .get(field)
                .and_then(|c| c.get("minKernel"))
                .and_then(Value::as_str);
            if let Some(version) = min_kernel {
                version
                    .parse::<KernelVersion>()
                    .map_err(|reason| ProfileError::KernelVersion {
                        path: format!("syscalls[{i}].{field}.minKernel"),
                        reason,
                    })?;
            }
        }
    }
    Ok(())
}

/// Whether `name` is one of the names of `list`.
fn known<T>(list: &[(T, &str)], name: &str) -> bool {
    list.iter().any(|(_, n)| *n == name)
}

/// The elements of a JSON array with their indexes (nothing for a missing or non-array value).
fn array(value: Option<&Value>) -> impl Iterator<Item = (usize, &Value)> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
}

/// The string elements of a JSON array with their indexes.
fn strings(value: Option<&Value>) -> impl Iterator<Item = (usize, &str)> {
    array(value).filter_map(|(i, v)| v.as_str().map(|s| (i, s)))
}

/// The checks that need the typed profile: exclusive fields and syscall names.
fn check_profile(profile: &mut Profile) -> Result<(), ProfileError> {
    if !profile.architectures.is_empty() && !profile.arch_map.is_empty() {
        return Err(ProfileError::Invalid {
            path: "architectures".into(),
            reason: "both 'architectures' and 'archMap' are given: use one of them",
        });
    }
    for (i, rule) in profile.syscalls.iter_mut().enumerate() {
        if let Some(name) = rule.name.take() {
            if !rule.names.is_empty() {
                return Err(ProfileError::Invalid {
                    path: format!("syscalls[{i}].name"),
                    reason: "both 'name' and 'names' are given: use one of them",
                });
            }
            rule.names.push(name);
        }
        if rule.names.is_empty() {
            return Err(ProfileError::Invalid {
                path: format!("syscalls[{i}].names"),
                reason: "a rule needs at least one syscall name",
            });
        }
        if let Some(j) = rule.names.iter().position(|n| n.is_empty()) {
            return Err(ProfileError::Invalid {
                path: format!("syscalls[{i}].names[{j}]"),
                reason: "empty syscall name",
            });
        }
        // Also checked on the document; kept for profiles built in code.
        if let Some(j) = rule.args.iter().position(|a| a.index > MAX_ARG_INDEX) {
            return Err(ProfileError::ArgIndex {
                path: format!("syscalls[{i}].args[{j}].index"),
                index: u64::from(rule.args[j].index),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = include_str!("../../agent/src/runtime/seccomp_default.json");

    fn err(json: &str) -> String {
        parse_profile(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn docker_default_profile_parses() {
        let profile = parse_profile(DEFAULT.as_bytes()).unwrap();
        assert_eq!(profile.default_action, Action::Errno);
        assert_eq!(profile.default_errno_ret, Some(1));
        assert!(profile.architectures.is_empty());
        let x86_64 = profile
            .arch_map
            .iter()
            .find(|a| a.architecture == "SCMP_ARCH_X86_64")
            .unwrap();
        assert_eq!(x86_64.sub_architectures, ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
        // subArchitectures: null
        let riscv = profile
            .arch_map
            .iter()
            .find(|a| a.architecture == "SCMP_ARCH_RISCV64")
            .unwrap();
        assert!(riscv.sub_architectures.is_empty());
        assert!(profile.syscalls[0].names.iter().any(|n| n == "read"));
        assert_eq!(profile.syscalls[0].action, Action::Allow);
        let sys_admin = profile
            .syscalls
            .iter()
            .find(|s| {
                s.includes
                    .as_ref()
                    .is_some_and(|c| c.caps == ["CAP_SYS_ADMIN"])
            })
            .unwrap();
        assert!(sys_admin.names.iter().any(|n| n == "mount"));
        let ptrace = profile
            .syscalls
            .iter()
            .find(|s| s.names.iter().any(|n| n == "ptrace"))
            .unwrap();
        assert_eq!(
            ptrace.includes.as_ref().unwrap().min_kernel,
            Some(KernelVersion {
                kernel: 4,
                major: 8
            })
        );
        let clone3 = profile
            .syscalls
            .iter()
            .find(|s| s.names == ["clone3"] && s.action == Action::Errno)
            .unwrap();
        assert_eq!(clone3.errno_ret, Some(38));
        let clone_masked = profile
            .syscalls
            .iter()
            .find(|s| s.names == ["clone"] && !s.args.is_empty())
            .unwrap();
        assert_eq!(clone_masked.args[0].op, Operator::MaskedEqual);
        assert_eq!(clone_masked.args[0].value, 0x7E02_0000);
    }

    #[test]
    fn serialized_profile_parses_back_to_itself() {
        let profile = parse_profile(DEFAULT.as_bytes()).unwrap();
        let json = serde_json::to_vec(&profile).unwrap();
        assert_eq!(parse_profile(&json).unwrap(), profile);
    }

    #[test]
    fn refusals_name_the_place() {
        let cases = [
            (
                r#"{"defaultAction":"SCMP_ACT_NOPE"}"#,
                r#"defaultAction: unknown action "SCMP_ACT_NOPE""#,
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                    {"names":["a"],"action":"SCMP_ACT_ERRNO"},
                    {"names":["b"],"action":"SCMP_ACT_ERRNO"},
                    {"names":["c"],"action":"SCMP_ACT_ERRNO"},
                    {"names":["d"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"X"}]}]}"#,
                r#"syscalls[3].args[0].op: unknown operator "X""#,
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                    {"names":["a"],"action":"SCMP_ACT_EXPLODE"}]}"#,
                r#"syscalls[0].action: unknown action "SCMP_ACT_EXPLODE""#,
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                    {"names":["a"],"action":"SCMP_ACT_ERRNO"},
                    {"names":["a"],"action":"SCMP_ACT_ERRNO","args":[
                        {"index":1,"value":1,"op":"SCMP_CMP_EQ"},
                        {"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
                "syscalls[1].args[1].index: argument index 6 out of range 0..=5",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_TSYNC","X"]}"#,
                r#"flags[1]: unknown flag "X""#,
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","archMap":[
                    {"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_Z80"]}]}"#,
                r#"archMap[0].subArchitectures[0]: unknown architecture "SCMP_ARCH_Z80""#,
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                    {"names":["a"],"action":"SCMP_ACT_ERRNO","includes":{"minKernel":"5"}}]}"#,
                r#"syscalls[0].includes.minKernel: invalid kernel version "5": expected "<kernel>.<major>""#,
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                    {"name":"a","names":["b"],"action":"SCMP_ACT_ERRNO"}]}"#,
                "syscalls[0].name: both 'name' and 'names' are given: use one of them",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":[],"action":"SCMP_ACT_ERRNO"}]}"#,
                "syscalls[0].names: a rule needs at least one syscall name",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
                    "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":null}]}"#,
                "architectures: both 'architectures' and 'archMap' are given: use one of them",
            ),
        ];
        for (json, want) in cases {
            assert_eq!(err(json), want, "{json}");
        }
    }

    #[test]
    fn shape_errors_carry_the_parser_position() {
        let msg = err(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":{}}"#);
        assert!(
            msg.starts_with("invalid seccomp profile: invalid type"),
            "{msg}"
        );
        let msg = err("{");
        assert!(msg.contains("line 1"), "{msg}");
        let msg = err(r#"{"syscalls":[]}"#);
        assert!(msg.contains("defaultAction"), "{msg}");
    }

    #[test]
    fn older_forms_are_accepted() {
        let profile = parse_profile(
            br#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
                 "listenerPath":"/ignored","syscalls":[{"name":"read","action":"SCMP_ACT_ALLOW",
                 "args":null,"includes":{},"excludes":{}}]}"#,
        )
        .unwrap();
        assert_eq!(profile.syscalls[0].names, ["read"]);
        assert_eq!(profile.syscalls[0].name, None);
        assert_eq!(profile.architectures, ["SCMP_ARCH_X86_64"]);
    }

    #[test]
    fn kernel_versions() {
        let v = |k, m| {
            Some(KernelVersion {
                kernel: k,
                major: m,
            })
        };
        assert_eq!(KernelVersion::from_release("6.18.44-fc-v1300"), v(6, 18));
        assert_eq!(KernelVersion::from_release("3.12-1-amd64"), v(3, 12));
        assert_eq!(KernelVersion::from_release("5.8"), v(5, 8));
        assert_eq!(KernelVersion::from_release("5.10rc1"), v(5, 10));
        assert_eq!(KernelVersion::from_release("garbage"), None);
        assert!("4.8".parse::<KernelVersion>().unwrap() < "4.10".parse().unwrap());
        assert!("0.0".parse::<KernelVersion>().is_err());
        assert!("4.8.1".parse::<KernelVersion>().is_err());
    }
}
