//! The vocabulary every stage shares: DNS names in wire and presentation form, zone keys
//! and RRSIG signing (RFC 4034), and the lookup from a client's address to its view and
//! ECS scope prefix.
//!
//! May import: `sys`.

pub mod dnssec;
pub mod name;
pub(crate) mod view_index;
