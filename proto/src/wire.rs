//! Typed accessors for wire fields that every crate reads the same way: one place each for "is
//! this an ingress port", "the observed state of a task", and the words the stringly typed fields
//! carry (network driver, publish mode, protocol, endpoint mode, manager reachability).
//!
//! The strings stay on the wire (the Docker API maps them 1:1); these enums are how Rust code
//! reads and writes them, so a misspelt word is a compile error instead of a silent mismatch.

use std::fmt;
use std::str::FromStr;

use crate::v1::{
    EndpointSpec, ManagerStatus, Network, NetworkSpec, PortConfig, ServiceView, Task, TaskState,
};

/// A wire word that names none of the values its field allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The field holds a word this version does not know.
    #[error("unknown {field} {value:?} (use {})", one_of(.allowed))]
    Unknown {
        /// Which field it came from ("network driver", "protocol", ...).
        field: &'static str,
        /// The word as found.
        value: String,
        /// The words the field allows (the vocabulary's `WORDS`).
        allowed: &'static [&'static str],
    },
}

/// Words as a message offers them: `tcp or udp`, `overlay, bridge, host or none`.
pub fn one_of(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [only] => (*only).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Defines a closed set of wire words: the enum, its spelling both ways, and the value an empty
/// field means. One definition so the five vocabularies cannot drift apart in behaviour.
macro_rules! wire_words {
    (
        $(#[$doc:meta])*
        $name:ident, $field:literal, default $default:ident {
            $( $(#[$vdoc:meta])* $variant:ident => $word:literal, )+
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $(
                $(#[$vdoc])*
                $variant,
            )+
        }

        impl $name {
            /// Every value, in the order the field's documentation lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Every wire spelling, in the order of [`Self::ALL`].
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            /// The allowed words as an error message offers them ("tcp or udp").
            pub fn allowed() -> String {
                one_of(Self::WORDS)
            }

            /// The field as shown to people: the default's word when empty, else as sent (an
            /// unknown word is shown as it is, not hidden).
            pub fn or_default(value: &str) -> &str {
                if value.is_empty() {
                    Self::default().as_str()
                } else {
                    value
                }
            }

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            /// Reads the field as sent: an empty string is the default, anything else must be
            /// one of the known words.
            pub fn from_wire(value: &str) -> Result<Self, WireError> {
                if value.is_empty() {
                    Ok(Self::default())
                } else {
                    value.parse()
                }
            }
        }

        impl Default for $name {
            /// The value an empty field means.
            fn default() -> Self {
                $name::$default
            }
        }

        impl FromStr for $name {
            type Err = WireError;

            /// Parses one of the known words exactly (an empty string is not one of them).
            fn from_str(value: &str) -> Result<Self, WireError> {
                match value {
                    $($word => Ok($name::$variant),)+
                    _ => Err(WireError::Unknown {
                        field: $field,
                        value: value.to_string(),
                        allowed: Self::WORDS,
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_words! {
    /// A network's driver (`NetworkSpec.driver`); empty means overlay, as `network create` does.
    NetworkDriver, "network driver", default Overlay {
        /// Cluster-wide VXLAN network.
        Overlay => "overlay",
        /// Node-local bridge with NAT to the outside.
        Bridge => "bridge",
        /// The node's own network namespace.
        Host => "host",
        /// A namespace with loopback only.
        None => "none",
    }
}

wire_words! {
    /// How a port is published (`PortConfig.publish_mode`); empty means ingress.
    PublishMode, "publish mode", default Ingress {
        /// Through the routing mesh on every node.
        Ingress => "ingress",
        /// On the node of each task only.
        Host => "host",
    }
}

wire_words! {
    /// A port's transport protocol (`PortConfig.protocol`); empty means tcp.
    Protocol, "protocol", default Tcp {
        /// TCP.
        Tcp => "tcp",
        /// UDP.
        Udp => "udp",
    }
}

wire_words! {
    /// How a service is reached (`EndpointSpec.mode`); empty means vip.
    EndpointMode, "endpoint mode", default Vip {
        /// One virtual IP per network, load-balanced to the tasks.
        Vip => "vip",
        /// DNS round robin over the task addresses, no virtual IP.
        Dnsrr => "dnsrr",
    }
}

wire_words! {
    /// Whether the leader can reach a manager (`ManagerStatus.reachability`); empty means the
    /// leader has not said yet.
    Reachability, "reachability", default Unknown {
        /// Not reported yet (an empty field; never written to the wire as a word).
        Unknown => "unknown",
        /// The leader hears from it.
        Reachable => "reachable",
        /// The leader does not hear from it.
        Unreachable => "unreachable",
    }
}

impl NetworkDriver {
    /// Whether a network of this driver must be a task's only one and has no addresses of its
    /// own (`host`, `none`): the task gets the node's namespace or loopback only.
    pub fn stands_alone(self) -> bool {
        matches!(self, NetworkDriver::Host | NetworkDriver::None)
    }
}

impl Reachability {
    /// The spelling to store: empty for `Unknown`, so the wire keeps its two words.
    pub fn as_wire(self) -> &'static str {
        match self {
            Reachability::Unknown => "",
            known => known.as_str(),
        }
    }
}

impl NetworkSpec {
    /// The network's driver, empty read as overlay.
    pub fn driver_kind(&self) -> Result<NetworkDriver, WireError> {
        NetworkDriver::from_wire(&self.driver)
    }
}

impl Network {
    /// The subnet and gateway in use: what the manager allocated, else what the spec asked for.
    pub fn addressing(&self) -> (&str, &str) {
        let spec = self.spec.as_ref();
        let subnet = if self.subnet.is_empty() {
            spec.map_or("", |s| s.subnet.as_str())
        } else {
            &self.subnet
        };
        let gateway = if self.gateway.is_empty() {
            spec.map_or("", |s| s.gateway.as_str())
        } else {
            &self.gateway
        };
        (subnet, gateway)
    }

    /// The driver options as docker shows them: the spec's `--opt`s, plus an overlay's VXLAN id
    /// under docker's key.
    pub fn docker_options(&self) -> std::collections::HashMap<String, String> {
        let mut options = self
            .spec
            .as_ref()
            .map(|s| s.options.clone())
            .unwrap_or_default();
        if self.vni != 0 {
            options.insert(
                "com.docker.network.driver.overlay.vxlanid_list".into(),
                self.vni.to_string(),
            );
        }
        options
    }
}

impl PortConfig {
    /// The port's publish mode, empty read as ingress.
    pub fn publish_mode_kind(&self) -> Result<PublishMode, WireError> {
        PublishMode::from_wire(&self.publish_mode)
    }

    /// The port's protocol, empty read as tcp.
    pub fn protocol_kind(&self) -> Result<Protocol, WireError> {
        Protocol::from_wire(&self.protocol)
    }

    /// Whether the port is published through the routing mesh (`mode=ingress`, the default).
    pub fn is_ingress(&self) -> bool {
        self.publish_mode_kind() == Ok(PublishMode::Ingress)
    }

    /// Whether the port is published on the node of each task only (`mode=host`).
    pub fn is_host_mode(&self) -> bool {
        self.publish_mode_kind() == Ok(PublishMode::Host)
    }
}

impl EndpointSpec {
    /// The endpoint mode, empty read as vip.
    pub fn mode_kind(&self) -> Result<EndpointMode, WireError> {
        EndpointMode::from_wire(&self.mode)
    }
}

impl ServiceView {
    /// The service's endpoint mode as the dispatcher sent it, empty read as vip.
    pub fn mode_kind(&self) -> Result<EndpointMode, WireError> {
        EndpointMode::from_wire(&self.mode)
    }
}

impl ManagerStatus {
    /// The manager's reachability as the leader last saw it, empty read as unknown.
    pub fn reachability_kind(&self) -> Result<Reachability, WireError> {
        Reachability::from_wire(&self.reachability)
    }
}

impl Task {
    /// The task's observed state (`TASK_NEW` while it has no status yet).
    pub fn observed_state(&self) -> TaskState {
        self.status
            .as_ref()
            .map_or(TaskState::TaskNew, |s| s.state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::TaskStatus;

    #[test]
    fn publish_modes() {
        let port = |mode: &str| PortConfig {
            publish_mode: mode.into(),
            ..Default::default()
        };
        assert!(port("").is_ingress() && port("ingress").is_ingress());
        assert!(!port("host").is_ingress() && port("host").is_host_mode());
        assert!(!port("").is_host_mode());
        assert!(!port("local").is_ingress() && !port("local").is_host_mode());
        assert_eq!(port("").publish_mode_kind(), Ok(PublishMode::Ingress));
        assert_eq!(port("host").publish_mode_kind(), Ok(PublishMode::Host));
    }

    #[test]
    fn every_word_round_trips() {
        fn check<T>(all: &[T])
        where
            T: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr<Err = WireError>,
        {
            for &v in all {
                assert_eq!(v.to_string().parse::<T>(), Ok(v));
            }
        }
        check(NetworkDriver::ALL);
        check(PublishMode::ALL);
        check(Protocol::ALL);
        check(EndpointMode::ALL);
        check(Reachability::ALL);
        assert_eq!(NetworkDriver::ALL.len(), 4);
        assert_eq!(NetworkDriver::None.as_str(), "none");
    }

    #[test]
    fn spec_validation_knows_the_same_drivers() {
        let words: Vec<&str> = NetworkDriver::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(words, crate::spec::NETWORK_DRIVERS);
        assert_eq!(words, NetworkDriver::WORDS);
    }

    #[test]
    fn empty_fields_read_as_todays_defaults() {
        assert_eq!(
            NetworkSpec::default().driver_kind(),
            Ok(NetworkDriver::Overlay)
        );
        let port = PortConfig::default();
        assert_eq!(port.protocol_kind(), Ok(Protocol::Tcp));
        assert_eq!(port.publish_mode_kind(), Ok(PublishMode::Ingress));
        assert_eq!(EndpointSpec::default().mode_kind(), Ok(EndpointMode::Vip));
        assert_eq!(ServiceView::default().mode_kind(), Ok(EndpointMode::Vip));
        assert_eq!(
            ManagerStatus::default().reachability_kind(),
            Ok(Reachability::Unknown)
        );
        assert_eq!(Reachability::Unknown.as_wire(), "");
        assert_eq!(Reachability::Unreachable.as_wire(), "unreachable");
    }

    #[test]
    fn unknown_words_are_errors_naming_the_field() {
        let port = PortConfig {
            protocol: "sctp".into(),
            ..Default::default()
        };
        let err = port.protocol_kind().unwrap_err();
        assert_eq!(
            err,
            WireError::Unknown {
                field: "protocol",
                value: "sctp".into(),
                allowed: &["tcp", "udp"],
            }
        );
        assert_eq!(
            err.to_string(),
            "unknown protocol \"sctp\" (use tcp or udp)"
        );
        // Case matters on the wire, as it does for docker.
        assert!("TCP".parse::<Protocol>().is_err());
        assert!("".parse::<EndpointMode>().is_err());
        assert!(EndpointMode::from_wire("rr").is_err());
    }

    #[test]
    fn allowed_words_are_listed_from_the_vocabulary() {
        assert_eq!(NetworkDriver::allowed(), "overlay, bridge, host or none");
        assert_eq!(PublishMode::allowed(), "ingress or host");
        assert_eq!(EndpointMode::allowed(), "vip or dnsrr");
        assert_eq!(one_of(&["only"]), "only");
        assert_eq!(one_of(&[]), "");
        assert_eq!(
            "macvlan".parse::<NetworkDriver>().unwrap_err().to_string(),
            "unknown network driver \"macvlan\" (use overlay, bridge, host or none)"
        );
        assert!(NetworkDriver::Host.stands_alone() && NetworkDriver::None.stands_alone());
        assert!(!NetworkDriver::Overlay.stands_alone() && !NetworkDriver::Bridge.stands_alone());
    }

    #[test]
    fn shown_values_fill_in_the_default_and_keep_unknown_words() {
        assert_eq!(Protocol::or_default(""), "tcp");
        assert_eq!(Protocol::or_default("udp"), "udp");
        assert_eq!(PublishMode::or_default(""), "ingress");
        assert_eq!(EndpointMode::or_default(""), "vip");
        assert_eq!(Protocol::or_default("sctp"), "sctp");
    }

    #[test]
    fn a_task_without_status_is_new() {
        let mut task = Task::default();
        assert_eq!(task.observed_state(), TaskState::TaskNew);
        task.status = Some(TaskStatus {
            state: TaskState::TaskRunning as i32,
            ..Default::default()
        });
        assert_eq!(task.observed_state(), TaskState::TaskRunning);
    }
}
