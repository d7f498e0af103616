//! primwatch: a health-checking DNS load balancer whose hot path is an XDP program.
//!
//! The data path, one module per stage:
//! `config` (TOML → validated `Config`) → `checks` (probes) → `state` (rise/fall,
//! target health) → `selection` (which addresses each name answers with) → `records`
//! (pre-rendered answers) → `map_writer` (→ the `names` BPF map) → `dataplane` (the
//! XDP program). `controller` runs the loop that ties them together.
pub mod checks;
pub mod config;
pub mod control;
pub mod controller;
pub mod cookies;
pub mod dataplane;
pub mod dns_name;
pub mod dnssec;
pub mod fleet;
pub mod hooks;
pub mod host;
pub mod local_socket;
pub mod log_output;
pub mod map_batch;
pub mod map_writer;
pub mod metrics;
pub mod paths;
pub mod pdns_backend;
pub mod privileges;
pub mod process;
pub mod records;
pub mod report;
pub mod resolve;
pub mod selection;
pub mod signatures;
pub mod state;
pub mod supervise;
pub mod view_index;
pub mod zone_data;
