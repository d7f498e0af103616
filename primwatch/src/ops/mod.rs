//! What operators see and steer: the control socket (`control`), `ctl status` and
//! `explain` (`report`), Prometheus metrics (`metrics`) and the `on_change` hook (`hooks`).
//!
//! May import: every stage below `daemon`.

pub mod control;
pub(crate) mod hooks;
pub(crate) mod metrics;
pub mod report;
