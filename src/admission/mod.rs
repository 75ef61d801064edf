//! Admission: one typed decision from the CA verdict, the `allow_*` rules
//! and the registry status of the device to admit or refuse, and the one
//! vocabulary of reasons everything else derives its words from.
//!
//! # Layout
//!
//! - `reason` — a leaf: [`Admitted`], [`Refusal`], [`Failure`].
//! - `policy` — [`Policy`] and its [`Verdict`]; the `allow_*` rules.

mod policy;
mod reason;

pub use policy::Policy;
pub(crate) use policy::Verdict;
pub(crate) use reason::{Admitted, Failure, FailureClass, Refusal};
