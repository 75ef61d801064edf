//! `certgate devices ...`: the command-line client of the admin device API
//! of a running gateway. Tables for people, `--json` for scripts.
//!
//! # Layout
//!
//! - `target` — which admin API, which token; `api` — one call to it.
//! - `actions` — each `devices` subcommand; `import` — what it reads.
//! - `print` — tables for people (`--json` prints the API's JSON).
//! - `readiness` — `certgate readiness`; `revocation` — `certgate revocation`.

mod actions;
mod api;
mod import;
mod print;
mod readiness;
mod revocation;
mod target;

pub(crate) use actions::{Action, run};
pub(crate) use readiness::readiness;
pub(crate) use revocation::revocation;
pub(crate) use target::{Target, first_token};
