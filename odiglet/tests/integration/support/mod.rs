//! Shared test support: privilege checks, deadlines and process helpers.

pub mod kubelet;
pub mod privileges;
