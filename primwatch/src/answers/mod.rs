//! Stage 3, answers: which addresses each name answers with given health (`selection`),
//! the name plan and the pre-rendered RRsets (`records`), their RRSIGs (`signatures`),
//! the same answers for PowerDNS (`pdns_backend`), and what exists in the unsigned zones
//! for negative answers (`zone_data`).
//!
//! May import: `sys`, `dns`, `config`, `health` (its `Health` trait only).

pub mod pdns_backend;
pub mod records;
pub(crate) mod selection;
pub mod signatures;
pub mod zone_data;
