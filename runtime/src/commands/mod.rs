//! One module per command.

pub mod build;
pub mod config;
pub mod destroy;
pub mod doctor;
pub mod leftover;
pub mod lock;
pub mod preview;
pub mod status;
pub mod up;
