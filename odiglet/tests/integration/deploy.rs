//! deploy/ against the code it deploys: the commands the image and the manifests run parse
//! with odiglet's real command line, paths agree between the Dockerfile, the manifests and the
//! CLI defaults, and the CRD schemas accept what odiglet writes (structural validation, as the
//! API server does it, including pruning of unknown fields).
//! `cargo xtask validate-deploy` checks the same files against the upstream schemas.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure panics with its backtrace"
)]

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use clap::{CommandFactory, Parser};
use odiglet::{
    cli::Cli,
    opamp::{DEFAULT_LISTEN, DEFAULT_UNIX_SOCKET, health::Health, k8s_writer::status_json},
};
use serde_json::{Value, json};

/// Odigos' health-probe port (`--health-probe-bind-port`).
const HEALTH_PORT: u64 = 55683;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn documents(relative: &str) -> Vec<Value> {
    let text = read(relative);
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
        .into_iter()
        .filter(|doc| !doc.is_null())
        .collect()
}

/// Every object of the base kustomization, in its `resources` order.
fn base_objects() -> Vec<Value> {
    let kustomization = documents("deploy/kubernetes/kustomization.yaml").remove(0);
    kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .flat_map(|r| documents(&format!("deploy/kubernetes/{}", r.as_str().unwrap())))
        .collect()
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes"))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod[list]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} {name}"))
}

fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("no env {name} in {}", container["name"]))
}

/// The volume mounted at `mount_path` in `container`: (mount, volume).
fn mount<'a>(pod: &'a Value, container: &'a Value, mount_path: &str) -> (&'a Value, &'a Value) {
    let mount = container["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["mountPath"] == mount_path))
        .unwrap_or_else(|| panic!("{} mounts nothing at {mount_path}", container["name"]));
    let volume = pod["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]))
        .unwrap_or_else(|| panic!("mount {} has no volume", mount["name"]));
    (mount, volume)
}

/// What the Dockerfile installs odiglet as, and runs by default.
struct Image {
    binary: String,
    agents_dir: String,
    entrypoint: Vec<String>,
    default_args: Vec<String>,
    text: String,
}

fn image() -> Image {
    let text = read("deploy/Dockerfile");
    let json_array = |instruction: &str| -> Vec<String> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(instruction))
            .unwrap_or_else(|| panic!("no {instruction} in deploy/Dockerfile"));
        serde_json::from_str(line.trim()).unwrap()
    };
    let copy_target = |from: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("COPY --from=builder {from} ")))
            .unwrap_or_else(|| panic!("deploy/Dockerfile copies no {from}"))
            .trim()
            .to_owned()
    };
    Image {
        binary: copy_target("/out/odiglet"),
        agents_dir: copy_target("/out/instrumentations"),
        entrypoint: json_array("ENTRYPOINT "),
        default_args: json_array("CMD "),
        text,
    }
}

/// `argv` (the program then its arguments) parses with odiglet's command line.
fn assert_cli_accepts(argv: &[String], origin: &str) {
    let subcommand = argv
        .get(1)
        .unwrap_or_else(|| panic!("{origin}: no subcommand"));
    let known = Cli::command().find_subcommand(subcommand).is_some();
    assert!(
        known,
        "{origin} runs `odiglet {subcommand}`, which the CLI lacks"
    );
    if let Err(error) = Cli::try_parse_from(argv) {
        panic!("{origin}: `{}` does not parse: {error}", argv.join(" "));
    }
}

fn default_of(subcommand: &str, argument: &str) -> String {
    let cli = Cli::command();
    let command = cli.find_subcommand(subcommand).unwrap();
    let arg = command
        .get_arguments()
        .find(|a| a.get_id() == argument)
        .unwrap_or_else(|| panic!("odiglet {subcommand} has no --{argument}"));
    arg.get_default_values()[0].to_string_lossy().into_owned()
}

#[test]
fn image_and_manifests_run_commands_the_cli_has() {
    let image = image();
    let binary = Path::new(env!("CARGO_BIN_EXE_odiglet"));
    assert_eq!(
        Path::new(&image.binary).file_name(),
        binary.file_name(),
        "the image installs another binary"
    );
    assert!(
        image.text.contains("--bin odiglet") && image.text.contains("cargo xtask build-ebpf"),
        "the builder must build the eBPF objects before odiglet embeds them"
    );
    assert_eq!(image.entrypoint, std::slice::from_ref(&image.binary));
    let argv: Vec<String> = image
        .entrypoint
        .iter()
        .chain(&image.default_args)
        .cloned()
        .collect();
    assert_cli_accepts(&argv, "the image's CMD");

    let objects = base_objects();
    let pod = &object(&objects, "DaemonSet", "odiglet")["spec"]["template"]["spec"];
    for (list, name, subcommand) in [
        ("initContainers", "init", "init"),
        ("containers", "odiglet", "run"),
    ] {
        let c = container(pod, list, name);
        let command = strings(&c["command"]);
        assert_eq!(command[0], image.binary, "{name} runs another binary");
        assert_eq!(command[1], subcommand);
        let argv: Vec<String> = command.into_iter().chain(strings(&c["args"])).collect();
        assert_cli_accepts(&argv, &format!("container {name}"));
    }
    // The unprivileged overlay only patches: it runs the same commands.
    let patch = documents("deploy/kubernetes-unprivileged/daemonset.yaml").remove(0);
    let patched = container(&patch["spec"]["template"]["spec"], "containers", "odiglet");
    assert!(patched.get("command").is_none() && patched.get("args").is_none());
}

#[test]
fn init_moves_the_agents_from_the_image_to_the_directory_pods_mount() {
    let image = image();
    let objects = base_objects();
    let pod = &object(&objects, "DaemonSet", "odiglet")["spec"]["template"]["spec"];
    let init = container(pod, "initContainers", "init");
    let args = strings(&init["args"]);
    let flag = |name: &str| {
        let at = args.iter().position(|a| a == name).unwrap();
        args[at + 1].clone()
    };
    assert_eq!(flag("--source"), image.agents_dir);
    assert_eq!(
        env(init, "NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName",
        "init labels its own node"
    );
    assert_eq!(default_of("init", "source"), image.agents_dir);
    let target = flag("--target");
    assert_eq!(default_of("init", "target"), target);
    let (init_mount, volume) = mount(pod, init, &target);
    assert_ne!(init_mount["readOnly"], true, "init writes the agents");
    assert_eq!(volume["hostPath"]["path"], target.as_str());

    // odiglet reads them, and writes only its OpAMP socket, under the same host directory.
    let odiglet = container(pod, "containers", "odiglet");
    let (agents, _) = mount(pod, odiglet, &target);
    assert_eq!(agents["readOnly"], true);
    let socket_dir = Path::new(DEFAULT_UNIX_SOCKET).parent().unwrap();
    let (exchange, volume) = mount(pod, odiglet, socket_dir.to_str().unwrap());
    assert_ne!(exchange["readOnly"], true);
    assert_eq!(volume["hostPath"]["type"], "DirectoryOrCreate");
    assert!(socket_dir.starts_with(&target));
    let preserved = default_of("init", "preserve");
    assert_eq!(
        socket_dir.strip_prefix(&target).unwrap(),
        Path::new(&preserved),
        "init must leave the exchange directory alone"
    );
}

#[test]
fn daemonset_gives_odiglet_what_it_reads() {
    let objects = base_objects();
    let daemonset = object(&objects, "DaemonSet", "odiglet");
    let pod = &daemonset["spec"]["template"]["spec"];
    let odiglet = container(pod, "containers", "odiglet");
    for (name, field) in [
        ("NODE_NAME", "spec.nodeName"),
        ("NODE_IP", "status.hostIP"),
        ("CURRENT_NS", "metadata.namespace"),
    ] {
        assert_eq!(
            env(odiglet, name)["valueFrom"]["fieldRef"]["fieldPath"],
            field
        );
    }
    let cgroup_root = env(odiglet, "ODIGOS_CGROUP_ROOT")["value"]
        .as_str()
        .unwrap();
    let (cgroup, volume) = mount(pod, odiglet, cgroup_root);
    assert_eq!(cgroup["readOnly"], true);
    assert_eq!(volume["hostPath"]["path"], "/sys/fs/cgroup");
    // The CRI sockets: the host's /run where `ODIGOS_HOST_RUN_DIR` says, read-only.
    let run_dir = env(odiglet, "ODIGOS_HOST_RUN_DIR")["value"]
        .as_str()
        .unwrap();
    let (run, volume) = mount(pod, odiglet, run_dir);
    assert_eq!(run["readOnly"], true);
    assert_eq!(volume["hostPath"]["path"], "/run");
    for host in [
        "/var/lib/kubelet/device-plugins",
        "/var/lib/kubelet/pod-resources",
        "/sys/kernel",
    ] {
        let (_, volume) = mount(pod, odiglet, host);
        assert_eq!(volume["hostPath"]["path"], host);
    }
    // Every mount of every container names a declared volume.
    for list in ["initContainers", "containers"] {
        for c in pod[list].as_array().unwrap() {
            for m in c["volumeMounts"].as_array().unwrap() {
                mount(pod, c, m["mountPath"].as_str().unwrap());
            }
        }
    }

    let port = |name: &str| {
        odiglet["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    let opamp_port: u64 = DEFAULT_LISTEN.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(port("opamp"), opamp_port);
    assert_eq!(port("health"), HEALTH_PORT);
    assert_eq!(odiglet["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(odiglet["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(odiglet[probe]["httpGet"]["port"], "health");
    }
    let service = object(&objects, "Service", "odiglet-local");
    assert_eq!(service["spec"]["internalTrafficPolicy"], "Local");
    assert_eq!(
        service["spec"]["ports"][0]["port"].as_u64(),
        Some(opamp_port)
    );

    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(odiglet["securityContext"]["privileged"], true);
    let update = &daemonset["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!(update["maxSurge"], 0);
    assert!(update["maxUnavailable"].is_string() || update["maxUnavailable"].is_u64());
    assert_eq!(pod["serviceAccountName"], "odiglet");
}

#[test]
fn unprivileged_variant_has_exactly_odigos_capabilities() {
    let patch = documents("deploy/kubernetes-unprivileged/daemonset.yaml").remove(0);
    let template = &patch["spec"]["template"];
    let odiglet = container(&template["spec"], "containers", "odiglet");
    let security = &odiglet["securityContext"];
    assert_eq!(security["privileged"], false);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    let added: BTreeSet<String> = strings(&security["capabilities"]["add"])
        .into_iter()
        .collect();
    let odigos: BTreeSet<String> = [
        "SYS_ADMIN",
        "BPF",
        "PERFMON",
        "SYS_PTRACE",
        "DAC_READ_SEARCH",
        "IPC_LOCK",
        "SYS_RESOURCE",
        "SETUID",
        "SETGID",
    ]
    .map(String::from)
    .into();
    assert_eq!(added, odigos);
    assert_eq!(
        template["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/odiglet"],
        "unconfined"
    );
    let kustomization = documents("deploy/kubernetes-unprivileged/kustomization.yaml").remove(0);
    assert_eq!(strings(&kustomization["resources"]), ["../kubernetes"]);
}

#[test]
fn dockerfile_uses_the_workspace_toolchain() {
    let image = image();
    let setup = read("xtask/src/setup.rs");
    let pinned = setup
        .lines()
        .find_map(|l| l.strip_prefix("const BPF_LINKER_VERSION: &str = \""))
        .and_then(|rest| rest.strip_suffix("\";"))
        .expect("BPF_LINKER_VERSION in setup.rs");
    assert!(
        image
            .text
            .contains(&format!("ARG BPF_LINKER_VERSION={pinned}")),
        "the Dockerfile's bpf-linker is not setup.rs's {pinned}"
    );
    let manifest = read("Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("rust-version in Cargo.toml");
    assert!(
        image.text.contains(&format!("FROM rust:{rust_version}-")),
        "the builder's Rust is not the workspace's {rust_version}"
    );
}

// === CRD schemas ===

/// The `openAPIV3Schema` of a CRD's only version, after checking its names.
fn crd_schema(file: &str, plural: &str, kind: &str) -> Value {
    let crd = documents(file).remove(0);
    assert_eq!(crd["metadata"]["name"], format!("{plural}.odigos.io"));
    let spec = &crd["spec"];
    assert_eq!(spec["group"], "odigos.io");
    assert_eq!(spec["names"]["plural"], plural);
    assert_eq!(spec["names"]["kind"], kind);
    assert_eq!(spec["scope"], "Namespaced");
    let version = &spec["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(
        (version["served"].clone(), version["storage"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(version["subresources"]["status"], json!({}));
    version["schema"]["openAPIV3Schema"].clone()
}

/// Structural-schema validation as the API server applies it: types, required fields, enums,
/// lengths, and fields the schema does not know (which the API server would silently prune).
fn violations(schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
    let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
    let type_ok = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        _ => true,
    };
    if !type_ok {
        out.push(format!("{at}: {value} is not of type {}", schema["type"]));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        out.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(text) = value.as_str() {
        let length = text.chars().count() as u64;
        if schema["minLength"].as_u64().is_some_and(|min| length < min)
            || schema["maxLength"].as_u64().is_some_and(|max| length > max)
        {
            out.push(format!("{at}: length {length} out of bounds"));
        }
        if schema["format"] == "date-time" && !(text.len() >= 20 && text.contains('T')) {
            out.push(format!("{at}: {text} is not an RFC 3339 time"));
        }
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            violations(&schema["items"], item, &format!("{at}[{i}]"), out);
        }
    }
    if let Some(fields) = value.as_object() {
        for required in strings(&schema["required"]) {
            if !fields.contains_key(&required) {
                out.push(format!("{at}: missing required {required}"));
            }
        }
        for (name, field) in fields {
            let field_at = format!("{at}.{name}");
            // ObjectMeta is validated by the API server itself, never by the CRD schema.
            if at.is_empty() && name == "metadata" {
                continue;
            }
            match (&schema["properties"][name], &schema["additionalProperties"]) {
                (Value::Null, Value::Null) if preserve => {}
                (Value::Null, Value::Null) => {
                    out.push(format!("{field_at}: unknown field (pruned)"))
                }
                (Value::Null, additional) => violations(additional, field, &field_at, out),
                (property, _) => violations(property, field, &field_at, out),
            }
        }
    }
}

fn assert_valid(schema: &Value, object: &Value) {
    let mut found = Vec::new();
    violations(schema, object, "", &mut found);
    assert!(found.is_empty(), "{object:#}\nviolates the CRD: {found:#?}");
}

#[test]
fn instrumentation_instance_crd_accepts_what_odiglet_writes() {
    let schema = crd_schema(
        "deploy/kubernetes/crds/instrumentationinstances.yaml",
        "instrumentationinstances",
        "InstrumentationInstance",
    );
    let attributes = [
        ("telemetry.sdk.language".to_owned(), "python".to_owned()),
        ("process.vpid".to_owned(), "7".to_owned()),
    ];
    let health = Health {
        healthy: false,
        status: "AgentFailure".into(),
        last_error: "exporter failed".into(),
        components: vec![
            (
                "flask".into(),
                true,
                r#"{"version":"0.48b0","enabled":true}"#.into(),
            ),
            ("requests".into(), false, "not json".into()),
        ],
    };
    for status in [
        status_json(&attributes, Some(&health)),
        status_json(&attributes, None),
    ] {
        let written = json!({
            "apiVersion": "odigos.io/v1alpha1",
            "kind": "InstrumentationInstance",
            "metadata": {"name": "frontend-7d4f-7", "namespace": "shop"},
            "spec": {"containerName": "app"},
            "status": status,
        });
        assert_valid(&schema, &written);
    }
    // The validator can fail: Odigos requires lastStatusTime and non-empty keys.
    let mut broken = status_json(&attributes, None);
    broken.as_object_mut().unwrap().remove("lastStatusTime");
    broken["identifyingAttributes"][0]["key"] = json!("");
    broken["unknown"] = json!(1);
    let mut found = Vec::new();
    violations(
        &schema["properties"]["status"],
        &broken,
        "status",
        &mut found,
    );
    assert_eq!(found.len(), 3, "{found:#?}");
}

#[test]
fn instrumentation_config_crd_keeps_odigos_fields() {
    let schema = crd_schema(
        "deploy/kubernetes/crds/instrumentationconfigs.yaml",
        "instrumentationconfigs",
        "InstrumentationConfig",
    );
    // An object as Odigos' instrumentor and odiglet write it, with fields this schema does
    // not type (sdkConfigs, workloadRolloutHash): kept, not pruned.
    let object = json!({
        "apiVersion": "odigos.io/v1alpha1",
        "kind": "InstrumentationConfig",
        "metadata": {"name": "deployment-frontend", "namespace": "shop"},
        "spec": {
            "serviceName": "frontend",
            "agentInjectionEnabled": true,
            "agentsMetaHash": "abc",
            "sdkConfigs": [{"language": "go", "instrumentationLibraryConfigs": []}],
            "containers": [{
                "containerName": "app",
                "agentEnabled": true,
                "agentEnabledReason": "EnabledSuccessfully",
                "otelDistroName": "golang-community",
                "distroParams": {"libc": "glibc"},
                "traces": {},
                "metrics": {"spanMetrics": {"intervalMs": 60000}},
            }],
        },
        "status": {
            "runtimeDetailsByContainer": [{
                "containerName": "app",
                "language": "go",
                "runtimeVersion": "1.22.10",
                "envVars": [{"name": "GOMAXPROCS", "value": "2"}],
                "envFromContainerRuntime": [],
                "otherAgent": {"name": "datadog"},
                "libCType": "glibc",
                "secureExecutionMode": false,
            }],
            "conditions": [{
                "type": "RuntimeDetection",
                "status": "True",
                "reason": "DetectedSuccessfully",
                "message": "runtime detection completed",
                "lastTransitionTime": "2026-12-02T00:00:00Z",
                "observedGeneration": 3,
            }],
            "workloadRolloutHash": "def",
        },
    });
    assert_valid(&schema, &object);
    let mut broken = object.clone();
    broken["status"]["runtimeDetailsByContainer"][0]["secureExecutionMode"] = json!("no");
    broken["status"]["conditions"][0]["status"] = json!("Maybe");
    let mut found = Vec::new();
    violations(&schema, &broken, "", &mut found);
    assert_eq!(found.len(), 2, "{found:#?}");
}
