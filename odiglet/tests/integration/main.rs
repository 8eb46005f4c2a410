//! odiglet's integration tests: one binary, one module per component. Privileged tests (eBPF,
//! cgroups, namespaces) run as root; elsewhere they print a loud skip, and with `CI=true` they
//! fail instead of skipping.

mod support;

mod cli;
mod device_plugin;
mod export;
mod go_http;
mod go_libraries;
mod goelf;
mod inspect;
mod opamp;
mod process_lifecycle;
