//! Admission: one typed decision from the CA verdict, the `allow_*` rules
//! and the registry status of the device to admit or refuse, and the one
//! vocabulary of reasons everything else derives its words from.
//!
//! # Layout
//!
//! - `reason` — a leaf: [`Admitted`], [`Refusal`], [`Failure`].
//! - `policy` — [`Policy`] and its [`Verdict`]; the `allow_*` rules.
//! - `renewal` — the renewal rule: which device a newcomer renews.

mod policy;
mod reason;
mod renewal;

pub use policy::Policy;
pub use policy::Verdict;
pub(crate) use reason::{Admitted, Failure, FailureClass, Refusal};
