//! Shared test support: privilege checks, deadlines and process helpers.

pub mod privileges;
pub mod opamp;
pub mod apiserver;
