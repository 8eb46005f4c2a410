//! A process's environment as Odigos keeps it (odigos.md §4.5): version variables, the variables
//! Odigos overwrites, other-agent detection keys; the agents those reveal; and the secure
//! execution flag (`AT_SECURE`) from the auxiliary vector.

use std::collections::BTreeMap;

use super::language::Language;

/// Variables that carry a runtime version.
pub const VERSION_VARS: [&str; 6] = [
    "NODE_VERSION",
    "PYTHON_VERSION",
    "JAVA_VERSION",
    "JAVA_HOME",
    "PHP_VERSION",
    "RUBY_VERSION",
];
/// Variables Odigos' distros append to (`LD_PRELOAD` plus each distro's `appendOdigosVariables`).
pub const OVERWRITE_VARS: [&str; 4] = [
    "LD_PRELOAD",
    "NODE_OPTIONS",
    "PYTHONPATH",
    "JAVA_TOOL_OPTIONS",
];
/// Variables read by the other-agent rules.
pub const AGENT_VARS: [&str; 10] = [
    "CORECLR_PROFILER",
    "JAVA_TOOL_OPTIONS",
    "NODE_OPTIONS",
    "RUBYOPT",
    "LD_PRELOAD",
    "DD_INJECTION_ENABLED",
    "DD_TRACE_AGENT_URL",
    "NEW_RELIC_CONFIG_FILE",
    "DT_DYNAMIZER_TARGET_EXE",
    "APPDYNAMICS_CONTROLLER_HOST_NAME",
];
/// Longest value kept per variable; longer ones are cut (they are logged, not executed).
const MAX_VALUE: usize = 8192;

fn is_kept(name: &str) -> bool {
    VERSION_VARS.contains(&name) || OVERWRITE_VARS.contains(&name) || AGENT_VARS.contains(&name)
}

/// The kept variables of a NUL-separated `environ` block; the first definition wins, as for
/// `getenv`.
pub fn filter_environ(block: &[u8]) -> BTreeMap<String, String> {
    let mut kept = BTreeMap::new();
    for entry in block.split(|b| *b == 0) {
        let Some(eq) = entry.iter().position(|b| *b == b'=') else {
            continue;
        };
        let (name, value) = entry.split_at(eq);
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if !is_kept(name) || kept.contains_key(name) {
            continue;
        }
        let value = value.get(1..).unwrap_or_default();
        let value = value.get(..MAX_VALUE).unwrap_or(value);
        kept.insert(name.to_owned(), String::from_utf8_lossy(value).into_owned());
    }
    kept
}

/// `AT_SECURE` in an auxiliary vector of `word`-byte (4 or 8) native-endian pairs.
pub fn secure_execution(auxv: &[u8], word: usize) -> bool {
    const AT_NULL: u64 = 0;
    const AT_SECURE: u64 = 23;
    let read = |chunk: &[u8]| -> Option<u64> {
        match word {
            4 => Some(u32::from_ne_bytes(chunk.try_into().ok()?).into()),
            8 => Some(u64::from_ne_bytes(chunk.try_into().ok()?)),
            _ => None,
        }
    };
    for pair in auxv.chunks_exact(2 * word) {
        let (Some(key), Some(value)) = (
            read(pair.get(..word).unwrap_or_default()),
            read(pair.get(word..).unwrap_or_default()),
        ) else {
            return false;
        };
        match key {
            AT_NULL => return false,
            AT_SECURE => return value != 0,
            _ => {}
        }
    }
    false
}

/// What gives an agent away.
#[derive(Clone, Copy, Debug)]
enum Signal {
    EnvPresent(&'static str),
    EnvContains(&'static str, &'static str),
    CmdlineContains(&'static str),
    LibraryLoaded(&'static str),
}

struct KnownAgent {
    name: &'static str,
    /// `None`: checked for every language.
    language: Option<Language>,
    signal: Signal,
}

const fn agent(name: &'static str, language: Option<Language>, signal: Signal) -> KnownAgent {
    KnownAgent {
        name,
        language,
        signal,
    }
}

const DATADOG: &str = "Datadog Agent";
const NEW_RELIC: &str = "New Relic Agent";
const DYNATRACE: &str = "Dynatrace Agent";
const OTEL: &str = "OpenTelemetry Agent";
const APPDYNAMICS: &str = "AppDynamics Agent";
const GRAFANA: &str = "Grafana OpenTelemetry Agent";

/// Odigos' `otheragent.KnownAgents`: one conclusive marker per row.
const KNOWN_AGENTS: &[KnownAgent] = {
    use Language::*;
    use Signal::*;
    &[
        agent(
            DATADOG,
            Some(Dotnet),
            EnvContains("CORECLR_PROFILER", "846F5F1C-F9AE-4B07-969E-05C26BC060D8"),
        ),
        agent(DATADOG, Some(Java), CmdlineContains("dd-java-agent")),
        agent(
            DATADOG,
            Some(Java),
            EnvContains("JAVA_TOOL_OPTIONS", "dd-java-agent"),
        ),
        agent(
            DATADOG,
            Some(Javascript),
            EnvContains("NODE_OPTIONS", "dd-trace"),
        ),
        agent(DATADOG, Some(Ruby), EnvContains("RUBYOPT", "datadog")),
        agent(DATADOG, Some(Ruby), EnvContains("RUBYOPT", "ddtrace")),
        agent(DATADOG, Some(Python), CmdlineContains("ddtrace-run")),
        agent(DATADOG, Some(Php), LibraryLoaded("ddtrace.so")),
        agent(
            DATADOG,
            None,
            EnvContains("LD_PRELOAD", "datadog-apm-inject"),
        ),
        agent(DATADOG, None, EnvPresent("DD_INJECTION_ENABLED")),
        agent(DATADOG, None, EnvPresent("DD_TRACE_AGENT_URL")),
        agent(NEW_RELIC, None, EnvPresent("NEW_RELIC_CONFIG_FILE")),
        agent(NEW_RELIC, Some(Java), CmdlineContains("newrelic.jar")),
        agent(
            NEW_RELIC,
            Some(Javascript),
            EnvContains("NODE_OPTIONS", "newrelic"),
        ),
        agent(
            NEW_RELIC,
            Some(Dotnet),
            EnvContains("CORECLR_PROFILER", "36032161-FFC0-4B61-B559-F6C5D41BAE5A"),
        ),
        agent(NEW_RELIC, Some(Php), LibraryLoaded("newrelic.so")),
        agent(DYNATRACE, None, EnvPresent("DT_DYNAMIZER_TARGET_EXE")),
        agent(DYNATRACE, None, EnvContains("LD_PRELOAD", "/dynatrace/")),
        agent(DYNATRACE, None, LibraryLoaded("liboneagent")),
        agent(OTEL, Some(Java), CmdlineContains("opentelemetry-javaagent")),
        agent(
            OTEL,
            Some(Java),
            EnvContains("JAVA_TOOL_OPTIONS", "opentelemetry-javaagent"),
        ),
        agent(
            OTEL,
            Some(Javascript),
            EnvContains("NODE_OPTIONS", "@opentelemetry/auto-instrumentations-node"),
        ),
        agent(
            OTEL,
            Some(Python),
            CmdlineContains("opentelemetry-instrument"),
        ),
        agent(
            "Wo11y Agent",
            Some(Java),
            EnvContains("JAVA_TOOL_OPTIONS", "wo11y-agent"),
        ),
        agent(
            GRAFANA,
            Some(Java),
            CmdlineContains("grafana-opentelemetry-java"),
        ),
        agent(
            GRAFANA,
            Some(Java),
            EnvContains("JAVA_TOOL_OPTIONS", "grafana-opentelemetry-java"),
        ),
        agent(
            "Splunk OpenTelemetry Agent",
            Some(Java),
            CmdlineContains("splunk-otel-javaagent"),
        ),
        agent(
            "AWS Distro for OpenTelemetry Agent",
            Some(Java),
            CmdlineContains("aws-opentelemetry-agent"),
        ),
        agent(
            "Elastic APM Agent",
            Some(Java),
            CmdlineContains("elastic-apm-agent"),
        ),
        agent(
            APPDYNAMICS,
            None,
            EnvPresent("APPDYNAMICS_CONTROLLER_HOST_NAME"),
        ),
        agent(APPDYNAMICS, Some(Java), CmdlineContains("appdynamics")),
        agent("Instana Agent", Some(Java), CmdlineContains("instana")),
    ]
};

/// Agents already present in a process of `language`, each named once, in table order.
/// `maps_contain` is asked only when a library rule applies.
pub fn other_agents(
    language: Language,
    env: &BTreeMap<String, String>,
    cmdline: &str,
    maps_contain: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for known in KNOWN_AGENTS {
        if known.language.is_some_and(|l| l != language) || found.iter().any(|n| n == known.name) {
            continue;
        }
        let hit = match known.signal {
            Signal::EnvPresent(key) => env.contains_key(key),
            Signal::EnvContains(key, needle) => env.get(key).is_some_and(|v| v.contains(needle)),
            Signal::CmdlineContains(needle) => cmdline.contains(needle),
            Signal::LibraryLoaded(needle) => maps_contain(needle),
        };
        if hit {
            found.push(known.name.to_owned());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_known_variables_first_wins() {
        let block = b"PATH=/bin\0PYTHON_VERSION=3.12.1\0LD_PRELOAD=/a.so\0PYTHON_VERSION=9\0junk\0\0JAVA_HOME=\0";
        let env = filter_environ(block);
        let expected: Vec<(&str, &str)> = vec![
            ("JAVA_HOME", ""),
            ("LD_PRELOAD", "/a.so"),
            ("PYTHON_VERSION", "3.12.1"),
        ];
        assert_eq!(
            env.iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            expected
        );
    }

    #[test]
    fn auxv_secure_flag() {
        let auxv = |pairs: &[(u64, u64)]| -> Vec<u8> {
            pairs
                .iter()
                .flat_map(|(k, v)| [k.to_ne_bytes(), v.to_ne_bytes()])
                .flatten()
                .collect()
        };
        assert!(secure_execution(&auxv(&[(6, 4096), (23, 1), (0, 0)]), 8));
        assert!(!secure_execution(&auxv(&[(6, 4096), (23, 0), (0, 0)]), 8));
        assert!(!secure_execution(&auxv(&[(0, 0), (23, 1)]), 8));
        assert!(!secure_execution(&[1, 2, 3], 8), "truncated");
        let small: Vec<u8> = [23u32, 1, 0, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        assert!(secure_execution(&small, 4));
    }

    #[test]
    fn agents_by_language_and_signal() {
        let mut env = BTreeMap::new();
        env.insert(
            "JAVA_TOOL_OPTIONS".to_owned(),
            "-javaagent:/opt/dd-java-agent.jar".to_owned(),
        );
        env.insert("DD_TRACE_AGENT_URL".to_owned(), "http://x".to_owned());
        assert_eq!(
            other_agents(Language::Java, &env, "java -jar app.jar", |_| false),
            ["Datadog Agent"]
        );
        let cmd = "java -javaagent:opentelemetry-javaagent.jar -jar app";
        assert_eq!(
            other_agents(Language::Java, &BTreeMap::new(), cmd, |_| false),
            ["OpenTelemetry Agent"]
        );
        // Java-only rules do not fire for Python.
        assert!(other_agents(Language::Python, &BTreeMap::new(), cmd, |_| false).is_empty());
        let dynatrace = other_agents(Language::Go, &BTreeMap::new(), "", |lib| {
            lib == "liboneagent"
        });
        assert_eq!(dynatrace, ["Dynatrace Agent"]);
    }
}
