//! Running state: start-up, reload and handover. File watching, SIGHUP
//! and `POST /api/reload` all lead here. A reload loads the config file
//! again, builds the complete new runtime state (every certificate, key,
//! CA and CRL read and validated), plans which sockets to keep, bind and
//! stop, binds every new address, and only then swaps the state in. Any
//! error leaves the old state in force.
//!
//! One task, the [`Controller`], owns the running listeners and is the
//! only writer of their state; everything else sends it
//! [`Command`](crate::control::Command)s.
//!
//! # Layout
//!
//! - `build` — [`Built`]: the next state from [`Settings`](crate::config::Settings),
//!   nothing bound; what [`Reuse`] carries over from the state in force.
//! - `plan` — pure: which socket each listener keeps, binds or stops.
//! - `bind` — taking inherited sockets over, binding new ones.
//! - `apply` — binding the plan, then committing it and publishing.
//! - `changes` — the words of the reload report.
//! - `expiry` — certificate expiry rows and warnings.
//! - `controller` — the controller's state, the one writer of it.
//! - `run` — the task: start, the event loop.
//! - `attempt` — one reload attempt and how its outcome is recorded.
//! - `watch` — file watcher, file digest, debounce timings.
//! - `stale_crls` — a CRL past its nextUpdate, logged once.
//! - `succession` — handing the sockets to a successor process.

mod apply;
mod attempt;
mod bind;
mod build;
mod changes;
mod controller;
mod expiry;
mod plan;
mod run;
mod stale_crls;
mod succession;
mod watch;

pub(crate) use build::Built;
pub(crate) use controller::Controller;
pub use watch::QUIET;
