//! What we advertise and what Allocate returns: one auditable table per language, resource-name
//! validation with kubelet's rules, and deterministic device IDs.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use device_plugin_proto::deviceplugin::v1beta1::{ContainerAllocateResponse, Mount};
use serde::Deserialize;

/// The resource namespace Odigos uses for its instrumentation devices.
pub const RESOURCE_NAMESPACE: &str = "instrumentation.odigos.io";
/// Devices per resource unless configured: one per pod a node can run, with room to spare.
pub const DEFAULT_DEVICE_COUNT: u32 = 1024;
/// Upper bound on devices per resource. Each ListAndWatch message lists them all and kubelet
/// refuses messages over 4 MiB (about 75 k of our IDs); 10 k keeps a wide margin.
pub const MAX_DEVICE_COUNT: u32 = 10_000;
/// Where agents live inside containers; the env values below point here.
pub const CONTAINER_AGENTS_DIR: &str = "/var/odigos";

/// The instrumentation a device stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Language {
    /// Mounts all agents and sets nothing: the pod webhook sets the env vars (current Odigos).
    Generic,
    Java,
    Python,
    Javascript,
    Dotnet,
    /// .NET on musl libc (Alpine): the profiler built for `linux-musl`.
    MuslDotnet,
    /// Go is instrumented with eBPF from the node; the device only steers scheduling.
    GoEbpf,
}

/// The default resources: the generic device and the per-language community devices.
pub const DEFAULT_RESOURCES: &[(&str, Language)] = &[
    ("generic", Language::Generic),
    ("java-native-community", Language::Java),
    ("python-native-community", Language::Python),
    ("javascript-native-community", Language::Javascript),
    ("dotnet-native-community", Language::Dotnet),
    ("musl-dotnet-native-community", Language::MuslDotnet),
    ("go-ebpf-community", Language::GoEbpf),
];

// === The per-language tables ===

/// Replaced by the device IDs of the request (comma-separated when there are several).
const DEVICE_ID: &str = "{DEVICE_ID}";
/// Replaced by `--node-ip` once at start-up (bracketed when IPv6).
const NODE_IP: &str = "{NODE_IP}";

/// What Allocate returns for one language.
#[derive(Debug)]
pub struct AgentProfile {
    /// Agent directory below the agents dir, mounted read-only at the same path under
    /// [`CONTAINER_AGENTS_DIR`]; `Some("")` mounts the whole agents dir, `None` mounts nothing.
    pub agent_dir: Option<&'static str>,
    pub env: &'static [(&'static str, &'static str)],
}

const GENERIC: AgentProfile = AgentProfile {
    agent_dir: Some(""),
    env: &[],
};

const GO_EBPF: AgentProfile = AgentProfile {
    agent_dir: None,
    env: &[],
};

const JAVA: AgentProfile = AgentProfile {
    agent_dir: Some("java"),
    env: &[
        (
            "JAVA_TOOL_OPTIONS",
            "-javaagent:/var/odigos/java/javaagent.jar",
        ),
        ("JAVA_OPTS", "-javaagent:/var/odigos/java/javaagent.jar"),
        ("ODIGOS_INSTRUMENTATION_DEVICE_ID", DEVICE_ID),
        ("ODIGOS_OPAMP_SERVER_HOST", "{NODE_IP}:4320"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://{NODE_IP}:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name={DEVICE_ID},odigos.device=java",
        ),
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_LOGS_EXPORTER", "none"),
        ("OTEL_TRACES_SAMPLER", "always_on"),
    ],
};

const PYTHON: AgentProfile = AgentProfile {
    agent_dir: Some("python"),
    env: &[
        (
            "PYTHONPATH",
            "/var/odigos/python:/var/odigos/python/opentelemetry/instrumentation/auto_instrumentation",
        ),
        ("ODIGOS_INSTRUMENTATION_DEVICE_ID", DEVICE_ID),
        ("ODIGOS_OPAMP_SERVER_HOST", "{NODE_IP}:4320"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://{NODE_IP}:4318"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
        ("OTEL_PYTHON_LOG_CORRELATION", "true"),
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_LOGS_EXPORTER", "none"),
    ],
};

const JAVASCRIPT: AgentProfile = AgentProfile {
    agent_dir: Some("nodejs"),
    env: &[
        (
            "NODE_OPTIONS",
            "--require /var/odigos/nodejs/autoinstrumentation.js",
        ),
        ("ODIGOS_INSTRUMENTATION_DEVICE_ID", DEVICE_ID),
        ("ODIGOS_OPAMP_SERVER_HOST", "{NODE_IP}:4320"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://{NODE_IP}:4318"),
        // A fallback name the collector can resolve to the pod while k8s attributes load.
        ("OTEL_SERVICE_NAME", DEVICE_ID),
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_LOGS_EXPORTER", "none"),
    ],
};

/// .NET; [`MUSL_DOTNET`] differs only in the profiler's libc directory.
const DOTNET: AgentProfile = AgentProfile {
    agent_dir: Some("dotnet"),
    env: &[
        ("CORECLR_ENABLE_PROFILING", "1"),
        ("CORECLR_PROFILER", "{918728DD-259F-4A6A-AC2B-B85E1B658318}"),
        (
            "CORECLR_PROFILER_PATH",
            "/var/odigos/dotnet/linux-glibc/OpenTelemetry.AutoInstrumentation.Native.so",
        ),
        (
            "DOTNET_ADDITIONAL_DEPS",
            "/var/odigos/dotnet/AdditionalDeps",
        ),
        ("DOTNET_SHARED_STORE", "/var/odigos/dotnet/store"),
        (
            "DOTNET_STARTUP_HOOKS",
            "/var/odigos/dotnet/net/OpenTelemetry.AutoInstrumentation.StartupHook.dll",
        ),
        ("OTEL_DOTNET_AUTO_HOME", "/var/odigos/dotnet"),
        ("ODIGOS_INSTRUMENTATION_DEVICE_ID", DEVICE_ID),
        ("ODIGOS_OPAMP_SERVER_HOST", "{NODE_IP}:4320"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://{NODE_IP}:4318"),
        ("OTEL_RESOURCE_ATTRIBUTES", "odigos.device=dotnet"),
        ("OTEL_SERVICE_NAME", DEVICE_ID),
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_LOGS_EXPORTER", "none"),
    ],
};

const MUSL_DOTNET: AgentProfile = AgentProfile {
    agent_dir: Some("dotnet"),
    env: &[
        ("CORECLR_ENABLE_PROFILING", "1"),
        ("CORECLR_PROFILER", "{918728DD-259F-4A6A-AC2B-B85E1B658318}"),
        (
            "CORECLR_PROFILER_PATH",
            "/var/odigos/dotnet/linux-musl/OpenTelemetry.AutoInstrumentation.Native.so",
        ),
        (
            "DOTNET_ADDITIONAL_DEPS",
            "/var/odigos/dotnet/AdditionalDeps",
        ),
        ("DOTNET_SHARED_STORE", "/var/odigos/dotnet/store"),
        (
            "DOTNET_STARTUP_HOOKS",
            "/var/odigos/dotnet/net/OpenTelemetry.AutoInstrumentation.StartupHook.dll",
        ),
        ("OTEL_DOTNET_AUTO_HOME", "/var/odigos/dotnet"),
        ("ODIGOS_INSTRUMENTATION_DEVICE_ID", DEVICE_ID),
        ("ODIGOS_OPAMP_SERVER_HOST", "{NODE_IP}:4320"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://{NODE_IP}:4318"),
        ("OTEL_RESOURCE_ATTRIBUTES", "odigos.device=dotnet"),
        ("OTEL_SERVICE_NAME", DEVICE_ID),
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_METRICS_EXPORTER", "otlp"),
        ("OTEL_LOGS_EXPORTER", "none"),
    ],
};

impl Language {
    /// This language's row of the tables above.
    pub fn profile(self) -> &'static AgentProfile {
        match self {
            Self::Generic => &GENERIC,
            Self::Java => &JAVA,
            Self::Python => &PYTHON,
            Self::Javascript => &JAVASCRIPT,
            Self::Dotnet => &DOTNET,
            Self::MuslDotnet => &MUSL_DOTNET,
            Self::GoEbpf => &GO_EBPF,
        }
    }
}

// === Validation and IDs ===

/// Why a resource configuration was refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("resource name {name:?} is invalid: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("resource name {name:?} is configured twice")]
    Duplicate { name: String },
    #[error("device count {count} is out of range 1..={MAX_DEVICE_COUNT}")]
    DeviceCount { count: u32 },
}

/// Checks a name the way kubelet's `IsExtendedResourceName` does, so a bad name fails at
/// start-up instead of at every `Register`.
pub fn validate_resource_name(name: &str) -> Result<(), ResourceError> {
    let invalid = |reason: &str| ResourceError::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    let Some((domain, short)) = name.split_once('/') else {
        return Err(invalid(
            "it needs a domain prefix, as in `example.com/device`",
        ));
    };
    if name.contains("kubernetes.io/") {
        return Err(invalid(
            "the kubernetes.io domains are reserved for native resources",
        ));
    }
    if name.starts_with("requests.") {
        return Err(invalid("it must not start with `requests.`"));
    }
    if short.contains('/') {
        return Err(invalid("it may contain only one `/`"));
    }
    // Kubelet checks `requests.<name>` as a qualified name: the prefix is a DNS-1123 subdomain.
    let prefix = format!("requests.{domain}");
    if prefix.len() > 253 || !prefix.split('.').all(is_dns_label) {
        return Err(invalid(
            "the domain must be a lower-case DNS subdomain (a-z, 0-9, `-`, `.`; at most 244 characters)",
        ));
    }
    let edges_ok = short.starts_with(|c: char| c.is_ascii_alphanumeric())
        && short.ends_with(|c: char| c.is_ascii_alphanumeric());
    let chars_ok = short
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if short.is_empty() || short.len() > 63 || !edges_ok || !chars_ok {
        return Err(invalid(
            "the part after `/` must be 1-63 characters of A-Z, a-z, 0-9, `-`, `_`, `.`, \
             starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// FNV-1a: a stable hash (unlike std's `DefaultHasher`, which may change between releases).
pub(crate) fn stable_hash(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// `<name part, at most 40 chars>-<hash of the full name>`: readable, and unique across
/// resources so a device ID alone identifies a pod's device node-wide.
pub(crate) fn resource_stem(name: &str) -> String {
    let short = name.rsplit('/').next().unwrap_or(name);
    let short: String = short.chars().take(40).collect();
    format!("{short}-{:08x}", stable_hash(name))
}

/// The device IDs of a resource: deterministic, so they survive restarts and reboots
/// (kubelet's checkpoint refers to them), at most 63 characters of `[A-Za-z0-9._-]`.
pub fn device_ids(name: &str, count: u32) -> Vec<String> {
    let stem = resource_stem(name);
    (0..count).map(|index| format!("{stem}-{index}")).collect()
}

// === A configured resource ===

/// One resource as configured.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Full extended-resource name, e.g. `instrumentation.odigos.io/java-native-community`.
    pub name: String,
    pub language: Language,
}

impl ResourceConfig {
    /// The default resources of [`DEFAULT_RESOURCES`].
    pub fn defaults() -> Vec<Self> {
        DEFAULT_RESOURCES
            .iter()
            .map(|(short, language)| Self {
                name: format!("{RESOURCE_NAMESPACE}/{short}"),
                language: *language,
            })
            .collect()
    }
}

/// A validated resource, ready to answer Allocate quickly: its IDs and rendered env templates.
#[derive(Debug)]
pub struct Resource {
    pub name: String,
    pub language: Language,
    pub ids: Arc<[String]>,
    /// Host directory whose presence makes the devices healthy; `None`: always healthy.
    pub agent_host_dir: Option<PathBuf>,
    mount: Option<Mount>,
    /// Env values with the node IP filled in; the flag says whether `{DEVICE_ID}` remains.
    env: Vec<(String, String, bool)>,
}

/// Why a container request was refused (kubelet then fails the pod's admission).
#[derive(Debug, thiserror::Error)]
pub enum AllocateError {
    #[error("unknown device IDs for {resource}: {}", .unknown.join(", "))]
    UnknownDevices {
        resource: String,
        /// At most ten of them, so the message stays short.
        unknown: Vec<String>,
    },
    #[error("a container request for {resource} names no device")]
    NoDevices { resource: String },
}

impl Resource {
    pub fn new(
        config: &ResourceConfig,
        device_count: u32,
        agents_dir: &Path,
        node_ip: IpAddr,
    ) -> Result<Self, ResourceError> {
        validate_resource_name(&config.name)?;
        if device_count == 0 || device_count > MAX_DEVICE_COUNT {
            return Err(ResourceError::DeviceCount {
                count: device_count,
            });
        }
        let ids: Arc<[String]> = device_ids(&config.name, device_count).into();
        let profile = config.language.profile();
        // `join("")` would add a trailing slash; the generic device mounts the base itself.
        let below = |base: &Path, dir: &str| {
            if dir.is_empty() {
                base.to_path_buf()
            } else {
                base.join(dir)
            }
        };
        let agent_host_dir = profile.agent_dir.map(|dir| below(agents_dir, dir));
        let mount = profile.agent_dir.map(|dir| Mount {
            container_path: below(Path::new(CONTAINER_AGENTS_DIR), dir)
                .to_string_lossy()
                .into_owned(),
            host_path: below(agents_dir, dir).to_string_lossy().into_owned(),
            read_only: true,
        });
        let node = match node_ip {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let env = profile
            .env
            .iter()
            .map(|(key, value)| {
                let value = value.replace(NODE_IP, &node);
                let per_device = value.contains(DEVICE_ID);
                ((*key).to_owned(), value, per_device)
            })
            .collect();
        Ok(Self {
            name: config.name.clone(),
            language: config.language,
            ids,
            agent_host_dir,
            mount,
            env,
        })
    }

    /// Whether `id` is one of [`Self::ids`]. An ID ends with its index (see [`device_ids`]), so
    /// one comparison answers without a second copy of every ID in a set (0.5 MiB for the six
    /// default resources).
    pub fn is_known(&self, id: &str) -> bool {
        id.rsplit_once('-')
            .and_then(|(_, index)| index.parse::<usize>().ok())
            .and_then(|index| self.ids.get(index))
            .is_some_and(|known| known == id)
    }

    /// The response for one container: pure and idempotent, because kubelet replays it after
    /// container restarts and reboots without asking again.
    pub fn allocate(&self, ids: &[String]) -> Result<ContainerAllocateResponse, AllocateError> {
        if ids.is_empty() {
            return Err(AllocateError::NoDevices {
                resource: self.name.clone(),
            });
        }
        let unknown: Vec<String> = ids
            .iter()
            .filter(|id| !self.is_known(id))
            .take(10)
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(AllocateError::UnknownDevices {
                resource: self.name.clone(),
                unknown,
            });
        }
        let joined = ids.join(",");
        let envs: HashMap<String, String> = self
            .env
            .iter()
            .map(|(key, value, per_device)| {
                let value = if *per_device {
                    value.replace(DEVICE_ID, &joined)
                } else {
                    value.clone()
                };
                (key.clone(), value)
            })
            .collect();
        Ok(ContainerAllocateResponse {
            envs,
            mounts: self.mount.iter().cloned().collect(),
            ..Default::default()
        })
    }
}

/// Builds every configured resource, refusing duplicates.
pub fn build_resources(
    configs: &[ResourceConfig],
    device_count: u32,
    agents_dir: &Path,
    node_ip: IpAddr,
) -> Result<Vec<Arc<Resource>>, ResourceError> {
    let mut seen = HashSet::new();
    configs
        .iter()
        .map(|config| {
            if !seen.insert(config.name.as_str()) {
                return Err(ResourceError::Duplicate {
                    name: config.name.clone(),
                });
            }
            Resource::new(config, device_count, agents_dir, node_ip).map(Arc::new)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(language: Language, short: &str) -> Resource {
        let config = ResourceConfig {
            name: format!("{RESOURCE_NAMESPACE}/{short}"),
            language,
        };
        Resource::new(
            &config,
            4,
            Path::new("/agents"),
            "10.1.2.3".parse().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn kubelet_name_rules() {
        for good in [
            "example.com/instr",
            "instrumentation.odigos.io/generic",
            "a.b/C_d.e-9",
        ] {
            validate_resource_name(good).unwrap();
        }
        let long = format!("example.com/{}", "a".repeat(64));
        for bad in [
            "instr",
            "Example.com/instr",
            "kubernetes.io/instr",
            "foo.kubernetes.io/instr",
            "requests.example.com/instr",
            "example.com/a/b",
            "example.com/",
            "example.com/-a",
            "example.com/a b",
            "-example.com/a",
            long.as_str(),
        ] {
            let error = validate_resource_name(bad).unwrap_err();
            assert!(error.to_string().contains(bad), "{error}");
        }
    }

    #[test]
    fn ids_are_deterministic_unique_and_valid() {
        let names: Vec<String> = ResourceConfig::defaults()
            .into_iter()
            .map(|r| r.name)
            .collect();
        let mut all = HashSet::new();
        for name in &names {
            let ids = device_ids(name, MAX_DEVICE_COUNT);
            assert_eq!(
                ids,
                device_ids(name, MAX_DEVICE_COUNT),
                "stable across calls"
            );
            for id in ids {
                assert!(id.len() <= 63, "{id}");
                assert!(
                    id.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
                    "{id}"
                );
                assert!(all.insert(id), "IDs are unique across resources");
            }
        }
        // Pinned: a change here would strand every allocation in kubelet's checkpoint.
        assert_eq!(
            device_ids("instrumentation.odigos.io/generic", 1),
            [format!(
                "generic-{:08x}-0",
                stable_hash("instrumentation.odigos.io/generic")
            )]
        );
        assert_eq!(stable_hash("a"), 0xe40c_292c, "FNV-1a test vector");
        let long = format!("example.com/{}", "x".repeat(63));
        assert!(
            device_ids(&long, MAX_DEVICE_COUNT)
                .iter()
                .all(|id| id.len() <= 63)
        );
    }

    #[test]
    fn defaults_are_valid_and_cover_every_language() {
        let resources = build_resources(
            &ResourceConfig::defaults(),
            DEFAULT_DEVICE_COUNT,
            Path::new("/var/odigos"),
            "10.0.0.1".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(resources.len(), 7);
        assert!(resources.iter().all(|r| r.ids.len() == 1024));
    }

    #[test]
    fn config_errors() {
        let config = ResourceConfig::defaults();
        let twice = [config[0].clone(), config[0].clone()];
        let ip = "10.0.0.1".parse().unwrap();
        let agents = Path::new("/a");
        assert!(matches!(
            build_resources(&twice, 1, agents, ip),
            Err(ResourceError::Duplicate { .. })
        ));
        for count in [0, MAX_DEVICE_COUNT + 1] {
            assert!(matches!(
                build_resources(&config, count, agents, ip),
                Err(ResourceError::DeviceCount { .. })
            ));
        }
    }

    #[test]
    fn allocate_python() {
        let python = resource(Language::Python, "python-native-community");
        let id = python.ids[1].clone();
        let response = python.allocate(std::slice::from_ref(&id)).unwrap();
        assert_eq!(
            response.mounts,
            [Mount {
                container_path: "/var/odigos/python".into(),
                host_path: "/agents/python".into(),
                read_only: true
            }]
        );
        assert_eq!(response.envs["ODIGOS_INSTRUMENTATION_DEVICE_ID"], id);
        assert_eq!(response.envs["ODIGOS_OPAMP_SERVER_HOST"], "10.1.2.3:4320");
        assert_eq!(
            response.envs["OTEL_EXPORTER_OTLP_ENDPOINT"],
            "http://10.1.2.3:4318"
        );
        assert!(response.envs["PYTHONPATH"].starts_with("/var/odigos/python:"));
        assert_eq!(response.envs["OTEL_TRACES_EXPORTER"], "otlp");
        assert!(response.devices.is_empty() && response.annotations.is_empty());
        // Idempotent: kubelet may ask again for the same IDs (init-container reuse).
        assert_eq!(python.allocate(&[id]).unwrap(), response);
    }

    #[test]
    fn allocate_per_language() {
        let java = resource(Language::Java, "java");
        let ids = [java.ids[0].clone(), java.ids[2].clone()];
        let envs = java.allocate(&ids).unwrap().envs;
        assert!(envs["JAVA_TOOL_OPTIONS"].contains("-javaagent:/var/odigos/java/"));
        assert_eq!(envs["ODIGOS_INSTRUMENTATION_DEVICE_ID"], ids.join(","));
        assert_eq!(envs["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://10.1.2.3:4317");

        let node = resource(Language::Javascript, "js");
        let envs = node.allocate(&node.ids[..1]).unwrap().envs;
        assert!(envs["NODE_OPTIONS"].starts_with("--require /var/odigos/nodejs/"));

        let glibc = resource(Language::Dotnet, "dotnet");
        let musl = resource(Language::MuslDotnet, "musl-dotnet");
        let glibc = glibc.allocate(&glibc.ids[..1]).unwrap();
        let musl = musl.allocate(&musl.ids[..1]).unwrap();
        assert!(glibc.envs["CORECLR_PROFILER_PATH"].contains("/linux-glibc/"));
        assert!(musl.envs["CORECLR_PROFILER_PATH"].contains("/linux-musl/"));
        assert_eq!(glibc.mounts[0].container_path, "/var/odigos/dotnet");

        let go = resource(Language::GoEbpf, "go");
        let response = go.allocate(&go.ids[..1]).unwrap();
        assert!(response.mounts.is_empty() && response.envs.is_empty());
        assert!(go.agent_host_dir.is_none());

        let generic = resource(Language::Generic, "generic");
        let response = generic.allocate(&generic.ids[..1]).unwrap();
        assert_eq!(response.mounts[0].container_path, "/var/odigos");
        assert_eq!(response.mounts[0].host_path, "/agents");
        assert!(response.envs.is_empty());

        let v6 = Resource::new(
            &ResourceConfig {
                name: "a.b/c".into(),
                language: Language::Python,
            },
            1,
            Path::new("/a"),
            "fd00::1".parse().unwrap(),
        )
        .unwrap();
        let envs = v6.allocate(&v6.ids[..1]).unwrap().envs;
        assert_eq!(envs["ODIGOS_OPAMP_SERVER_HOST"], "[fd00::1]:4320");
    }

    #[test]
    fn is_known_accepts_exactly_the_resource_ids() {
        let java = resource(Language::Java, "java");
        let python = resource(Language::Python, "python");
        assert!(java.ids.iter().all(|id| java.is_known(id)));
        let last = java.ids.last().unwrap();
        let (stem, index) = last.rsplit_once('-').unwrap();
        for id in [
            python.ids[0].as_str(),
            &format!("{stem}-{}", java.ids.len()),
            &format!("{stem}-0{index}"),
            &format!("{stem}-+{index}"),
            &format!("x{last}"),
            "0",
            "",
        ] {
            assert!(!java.is_known(id), "{id}");
        }
    }

    #[test]
    fn allocate_rejects_unknown_and_empty() {
        let java = resource(Language::Java, "java");
        let error = java
            .allocate(&[java.ids[0].clone(), "nope".into()])
            .unwrap_err();
        assert!(
            matches!(&error, AllocateError::UnknownDevices { unknown, .. } if unknown == &["nope"])
        );
        assert!(error.to_string().contains("nope"), "{error}");
        assert!(matches!(
            java.allocate(&[]),
            Err(AllocateError::NoDevices { .. })
        ));
    }
}
