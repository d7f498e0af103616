//! The daemon: its bring-up order (`bring_up`) and the controller's event loop, which
//! ties the stages together (`controller`).
//!
//! May import: everything.

pub mod bring_up;
pub(crate) mod controller;
pub(crate) mod file_watch;
