//! Shared test fixtures: a PKI made with rcgen per test, a real HTTP
//! backend that records what reached it, a gateway started on ephemeral
//! loopback ports, and a rustls client.
//!
//! One file per concern: `pki`, `backend`, `config_builder`, `gateway`,
//! `clients`, `processes`, `rotation`, `load`, `crl_der` and `crl_server`
//! (CRLs built field by field, and a publication point to serve them). Test files `use common::*`.
#![allow(dead_code, unreachable_pub, missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backend;
mod clients;
mod config_builder;
mod crl_der;
mod crl_server;
mod gateway;
mod haproxy;
mod load;
mod ocsp_responder;
mod pki;
mod postgres;
mod processes;
mod rotation;

// Each test binary uses a part of these.
#[allow(unused_imports)]
pub use {
    backend::*, clients::*, config_builder::*, crl_der::*, crl_server::*, gateway::*, haproxy::*,
    load::*, ocsp_responder::*, pki::*, postgres::*, processes::*, rotation::*,
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
