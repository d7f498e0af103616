//! primwatch: a health-checking DNS load balancer whose hot path is an XDP program.
//!
//! The data path, one module per stage:
//! `config` (TOML → validated `Config`) → `records` (chosen addresses → pre-rendered
//! answers) → `map_writer` (→ the `names` BPF map) → `dataplane` (the XDP program).
pub mod config;
pub mod dataplane;
pub mod dns_name;
pub mod map_writer;
pub mod records;
