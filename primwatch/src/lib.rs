#![warn(unreachable_pub, missing_docs)]

//! primwatch: a health-checking DNS load balancer whose hot path is an XDP program.
//!
//! The folders are the stages, each importing only those above it in this list:
//! - `sys`: processes, privileges, paths, sockets, log output, the host's addresses;
//! - `dns`: names, zone keys and RRSIGs, the client-address → view index;
//! - `config`: TOML → a validated `Config`;
//! - `health`: probes, rise/fall, overrides (stage 2);
//! - `feeds`: health, weights, names and views from the operator's own programs (stage 2);
//! - `answers`: which addresses each name answers with, rendered RRsets, the PowerDNS
//!   backend, negative answers (stage 3);
//! - `tap`: frames the XDP program recorded, read from its ring: dnstap, `primwatch
//!   capture` (stage 4);
//! - `dataplane`: the XDP program and its maps (stage 4);
//! - `fleet`: nodes sharing state through etcd;
//! - `ops`: the control socket, reports, metrics, hooks;
//! - `daemon`: the event loop that ties them together.
pub mod answers;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod dns;
pub mod feeds;
pub mod fleet;
pub mod health;
pub mod ops;
pub mod sys;
pub mod tap;
