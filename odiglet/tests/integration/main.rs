//! odiglet's integration tests: one binary, one module per component. Privileged tests (eBPF,
//! cgroups, namespaces) run as root; elsewhere they print a loud skip, and with `CI=true` they
//! fail instead of skipping.

mod support;

mod agents_dir;
mod cli;
mod deploy;
mod device_plugin;
mod export;
mod go_http;
mod go_libraries;
mod goelf;
mod inspect;
mod k8s;
mod manager;
mod node_setup;
mod opamp;
mod ops;
mod process_lifecycle;
