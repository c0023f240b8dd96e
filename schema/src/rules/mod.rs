//! Write rules: who may write what in a document of a known kind, enforced by the relay on
//! every change it receives and by devices on changes their peers send (through the engine's
//! gate, [`RulesGate`]).
//!
//! - `kinds/`: [`Kinds`], the types of a kind's rules (`mod.rs`), the built-in kinds
//!   (`builtin.rs`) and those declared in TOML (`declared.rs`).
//! - `eval/`: checking one change against its document's kind.
//! - `gate.rs`: [`RulesGate`], identities (each actor writes for one user) and the rules, as
//!   a `weft_core::engine::Gate`.
//! - `notes.rs`: new messages noted for the relay's push hook ([`NewMessage`]).
//! - [`record`]: documents of declared kinds as records (create, set a field, read as JSON),
//!   with a write checked against the rules before it is made.

mod eval;
mod gate;
mod kinds;
mod notes;
pub mod record;

pub use gate::RulesGate;
pub use kinds::{
    Collection, Entry, FieldSpec, FieldType, KeyRule, KindSpec, Kinds, KindsError, Transition, Who,
};
pub use notes::{NewMessage, MAX_NOTED};

#[cfg(test)]
mod tests;
