//! Test support for weft: the in-memory network simulator ([`sim`]) and helpers shared by the
//! integration tests under `tests/tests/`.
#![deny(missing_docs)]

pub mod sim;
