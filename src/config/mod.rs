//! The TOML schema and its validation.
//!
//! The pipeline, after sozu: `file → RawConfig (serde, deny_unknown_fields)
//! → validate → Settings`. The raw shape mirrors the file one to one; the
//! validated [`Settings`] are what the rest of the crate sees, with defaults
//! filled in, paths resolved against the config file's directory and every
//! cross-reference (listener → upstream) checked. This module reads the
//! config file itself and nothing else: loading the certificates and keys it
//! names belongs to `tls`, so parsing stays a pure function that
//! tests can feed from a string.
//!
//! # Layout
//! - `raw`: the file's shape; `load`: file → text → [`Settings`].
//! - `validate`, `listener`, `upstream`, `values`: the checks, by section.
//! - [`settings`]: the validated types; [`defaults`]: every default.

pub mod defaults;
mod listener;
mod load;
mod raw;
pub mod settings;
mod upstream;
mod validate;
mod values;

pub use defaults::*;
pub use settings::*;
pub use values::parse_duration;
