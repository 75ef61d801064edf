//! Which gateway the CLI talks to, and with which token.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context as _, anyhow};

use crate::config::Settings;

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Admin listener address.
    pub addr: SocketAddr,
    /// Bearer token, if the gateway has a token file.
    pub token: Option<String>,
}

impl Target {
    /// From the gateway's config file: `[admin] listen` (a wildcard address
    /// is reached on loopback) and the first token of `token_file`.
    pub(crate) fn from_config(path: &Path) -> anyhow::Result<Target> {
        let settings = Settings::load(path)?;
        let admin = settings.admin.as_ref().ok_or_else(|| {
            anyhow!(
                "{} has no [admin] table; the devices command talks to the admin API",
                path.display()
            )
        })?;
        let mut addr = admin.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let token = match &admin.token_file {
            Some(t) => Some(first_token(&t.resolved)?),
            None => None,
        };
        Ok(Target { addr, token })
    }
}

/// The first token of a token file (`name:token` lines).
pub(crate) fn first_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(':').map_or(l, |(_, t)| t).trim().to_string())
        .ok_or_else(|| anyhow!("token file {} contains no token", path.display()))
}
