//! Shared test support: privilege checks, deadlines and process helpers.

pub mod apiserver;
pub mod build;
pub mod cri;
pub mod events;
pub mod go;
pub mod guards;
pub mod kubelet;
pub mod opamp;
pub mod otlp;
pub mod postgres;
pub mod privileges;
pub mod prometheus;
pub mod runtimes;
