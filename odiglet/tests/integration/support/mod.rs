//! Shared test support: privilege checks, deadlines and process helpers.

pub mod build;
pub mod events;
pub mod guards;
pub mod kubelet;
pub mod otlp;
pub mod privileges;
pub mod runtimes;
