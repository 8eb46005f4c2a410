//! Shared test support: privilege checks, deadlines and process helpers.

pub mod events;
pub mod privileges;
