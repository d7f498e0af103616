//! The process's plumbing, below every stage: child processes and their users, privileges,
//! files and directories, Unix sockets, log output, panic supervision, and what this host
//! is (its interfaces and addresses).
//!
//! May import: nothing of the crate outside `sys/`.

pub(crate) mod host;
pub(crate) mod http_listener;
pub(crate) mod local_socket;
pub mod log_output;
pub mod paths;
pub(crate) mod privileges;
pub(crate) mod process;
pub mod supervise;
