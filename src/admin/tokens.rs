//! What the admin API admits: bearer tokens from `[admin] token_file`, and the Host rules.

use http::{StatusCode, header};

use std::sync::Arc;

use crate::config::ConfigPath;
use crate::error::ConfigError;
use crate::tls::admin::AdminTls;

use super::guard;

/// What the admin API admits, built from `[admin]` on every (re)load.
#[derive(Debug, Clone, Default)]
pub(crate) struct Access {
    /// Bearer tokens (none: loopback only, everyone is `local`).
    pub tokens: Tokens,
    /// The names `Host` may carry.
    pub hosts: guard::HostRules,
    /// `[admin.tls]`: the TLS each new admin connection is served with
    /// (`None`: plain HTTP).
    pub tls: Option<Arc<AdminTls>>,
}

/// The admin API's bearer tokens, from `[admin] token_file`: lines of
/// `name:token` (a line without `name:` is named `admin`); `#` comments.
/// The name is what the audit log records as "who".
#[derive(Debug, Clone, Default)]
pub(crate) struct Tokens {
    /// (name, SHA-256 of the token): compared digest to digest, so every
    /// comparison has the same length whatever the caller sends.
    tokens: Vec<(String, [u8; 32])>,
}

fn token_digest(token: &str) -> [u8; 32] {
    crate::identity::sha256(token.as_bytes())
}

impl Tokens {
    /// Reads and checks a token file.
    pub(crate) fn load(path: &ConfigPath) -> Result<Tokens, ConfigError> {
        let err = |message: String| ConfigError::File {
            context: "admin.token_file".into(),
            message: format!("{path}: {message}"),
        };
        let text = std::fs::read_to_string(&path.resolved)
            .map_err(|e| err(format!("cannot be read ({e})")))?;
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, token) = match line.split_once(':') {
                Some((n, t)) => (n.trim().to_string(), t.trim().to_string()),
                None => ("admin".to_string(), line.to_string()),
            };
            if token.len() < 16 {
                return Err(err(format!(
                    "line {}: the token for \"{name}\" is shorter than 16 characters; use e.g. `openssl rand -hex 32`",
                    i + 1
                )));
            }
            tokens.push((name, token_digest(&token)));
        }
        if tokens.is_empty() {
            return Err(err("contains no token; add a line name:token".into()));
        }
        Ok(Tokens { tokens })
    }

    /// The caller's name, or the status to answer. Without configured
    /// tokens (only allowed on a loopback admin listener) everyone is
    /// `local`.
    pub(super) fn authorize(&self, headers: &http::HeaderMap) -> Result<String, StatusCode> {
        if self.tokens.is_empty() {
            return Ok("local".into());
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(StatusCode::UNAUTHORIZED)?;
        self.named(&token_digest(given))
            .map(str::to_string)
            .ok_or(StatusCode::UNAUTHORIZED)
    }

    /// Whether tokens are configured (else the listener is loopback-only
    /// and everyone is `local`).
    pub(super) fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The name of the token `token` and its digest (what a console
    /// session keeps, never the token itself), if it is one of ours.
    pub(super) fn sign_in(&self, token: &str) -> Option<(String, [u8; 32])> {
        let digest = token_digest(token.trim());
        self.named(&digest).map(|n| (n.to_string(), digest))
    }

    /// The name of the token whose digest is `digest`: a console session
    /// ends when its token leaves the token file.
    pub(super) fn named(&self, digest: &[u8; 32]) -> Option<&str> {
        // Every token is compared, in constant time each, so the time taken
        // says neither which token nor how much of one matched.
        let mut who = None;
        for (name, d) in &self.tokens {
            let equal = aws_lc_rs::constant_time::verify_slices_are_equal(d, digest).is_ok();
            if equal && who.is_none() {
                who = Some(name.as_str());
            }
        }
        who
    }
}
