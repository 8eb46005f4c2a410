//! Live log levels from Odigos' `effective-config` ConfigMap, as Odigos' odiglet follows them
//! (odigos.md §6): `config.yaml` → `componentLogLevels`, the `odiglet` entry (else `default`)
//! for the daemon and the `deviceplugin` entry (else `default`) for the device plugin it
//! hosts. A ConfigMap without levels, or no ConfigMap, means the start-up level.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, watcher},
};
use serde::Deserialize;
use tracing::{debug, warn};

use crate::telemetry;

/// The ConfigMap Odigos' scheduler writes with the merged configuration.
pub const CONFIG_MAP: &str = "effective-config";
/// Its key holding the configuration.
pub const CONFIG_KEY: &str = "config.yaml";
/// `tracing` target of the device plugin, which has its own Odigos component level.
const DEVICE_PLUGIN_TARGET: &str = "odiglet::device_plugin";

#[derive(Debug, thiserror::Error)]
pub enum LogLevelError {
    #[error("`{CONFIG_KEY}` of `{CONFIG_MAP}` is not valid YAML")]
    Yaml(#[source] serde_saphyr::Error),
    #[error("unknown log level `{level}` for `{component}` (expected debug, info, warn or error)")]
    Unknown {
        component: &'static str,
        level: String,
    },
}

/// The part of Odigos' `OdigosConfiguration` read here; every other field is ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OdigosConfiguration {
    #[serde(default)]
    component_log_levels: Option<ComponentLogLevels>,
}

#[derive(Debug, Default, Deserialize)]
struct ComponentLogLevels {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    odiglet: Option<String>,
    #[serde(default)]
    deviceplugin: Option<String>,
}

/// An Odigos log level (`common.OdigosLogLevel`) as a `tracing` level name; empty means unset.
fn level(
    component: &'static str,
    value: Option<&str>,
) -> Result<Option<&'static str>, LogLevelError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let level = match value.to_ascii_lowercase().as_str() {
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" => "error",
        _ => {
            return Err(LogLevelError::Unknown {
                component,
                level: value.to_owned(),
            });
        }
    };
    Ok(Some(level))
}

/// The filter directives `config_yaml` asks for, or `None` for the start-up directives.
pub fn directives(config_yaml: &str) -> Result<Option<String>, LogLevelError> {
    let config: OdigosConfiguration = if config_yaml.trim().is_empty() {
        OdigosConfiguration::default()
    } else {
        serde_saphyr::from_str(config_yaml).map_err(LogLevelError::Yaml)?
    };
    let Some(levels) = config.component_log_levels else {
        return Ok(None);
    };
    let default = level("default", levels.default.as_deref())?;
    let odiglet = level("odiglet", levels.odiglet.as_deref())?.or(default);
    let device_plugin = level("deviceplugin", levels.deviceplugin.as_deref())?.or(default);
    Ok(match (odiglet, device_plugin) {
        (None, None) => None,
        (Some(odiglet), None) => Some(odiglet.to_owned()),
        (Some(odiglet), Some(dp)) if odiglet == dp => Some(odiglet.to_owned()),
        // The daemon keeps its start-up level; only the device plugin's changes.
        (None, Some(dp)) => Some(format!(
            "{},{DEVICE_PLUGIN_TARGET}={dp}",
            telemetry::base_directives().unwrap_or("info")
        )),
        (Some(odiglet), Some(dp)) => Some(format!("{odiglet},{DEVICE_PLUGIN_TARGET}={dp}")),
    })
}

fn apply(config_map: Option<&ConfigMap>) {
    let yaml = config_map
        .and_then(|cm| cm.data.as_ref())
        .and_then(|data| data.get(CONFIG_KEY))
        .map_or("", String::as_str);
    match directives(yaml) {
        Ok(wanted) => match telemetry::set_directives(wanted.as_deref()) {
            Ok(changed) => debug!(changed, "effective-config log levels applied"),
            Err(error) => warn!(%error, "cannot apply the effective-config log level"),
        },
        // A bad edit keeps the level in force rather than guessing.
        Err(error) => warn!(%error, "ignoring the effective-config log levels"),
    }
}

/// Follows `effective-config` in `namespace` until the task is dropped; the watcher's backoff
/// retries a failing API server (1 s → 30 s as Odigos' device plugin does, roughly).
pub async fn follow(client: Client, namespace: String) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}"));
    let events = watcher::watcher(api, config).default_backoff();
    futures::pin_mut!(events);
    // During a (re-)list: whether the ConfigMap was seen, so a list without it resets.
    let mut listed = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listed = false,
            Ok(watcher::Event::InitApply(cm)) => {
                listed = true;
                apply(Some(&cm));
            }
            Ok(watcher::Event::InitDone) if !listed => apply(None),
            Ok(watcher::Event::InitDone) => {}
            Ok(watcher::Event::Apply(cm)) => apply(Some(&cm)),
            Ok(watcher::Event::Delete(_)) => apply(None),
            Err(error) => warn!(%namespace, %error, "effective-config watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_odiglet_level_wins_over_the_default() {
        let yaml =
            "componentLogLevels:\n  default: warn\n  odiglet: debug\n  deviceplugin: debug\n";
        assert_eq!(directives(yaml).expect("valid").as_deref(), Some("debug"));
    }

    #[test]
    fn the_default_level_applies_to_both_components() {
        let yaml = "ignoredField: 3\ncomponentLogLevels:\n  default: ERROR\n  ui: debug\n";
        assert_eq!(directives(yaml).expect("valid").as_deref(), Some("error"));
    }

    #[test]
    fn the_device_plugin_gets_its_own_level() {
        let yaml = "componentLogLevels:\n  odiglet: info\n  deviceplugin: debug\n";
        assert_eq!(
            directives(yaml).expect("valid").as_deref(),
            Some("info,odiglet::device_plugin=debug")
        );
    }

    #[test]
    fn no_levels_means_the_start_up_level() {
        for yaml in [
            "",
            "imagePrefix: x\n",
            "componentLogLevels: {}\n",
            "componentLogLevels:\n  odiglet: ''\n",
        ] {
            assert_eq!(directives(yaml).expect("valid"), None, "{yaml:?}");
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_level() {
        let unknown = directives("componentLogLevels:\n  odiglet: verbose\n");
        assert!(
            matches!(&unknown, Err(LogLevelError::Unknown { component: "odiglet", level }) if level == "verbose"),
            "{unknown:?}"
        );
        assert!(matches!(
            directives("componentLogLevels: [unclosed"),
            Err(LogLevelError::Yaml(_))
        ));
        // A directive smuggled in as a level is refused, not handed to the filter.
        assert!(directives("componentLogLevels:\n  default: 'info,h2=trace'\n").is_err());
    }
}
