//! Config files written per test: listeners, client auth, registry, admin.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::*;

/// Renders a gateway config with one listener "agents" → upstream "core".
pub struct ConfigBuilder {
    pub listen: String,
    pub servers: Vec<String>,
    pub versions: Option<&'static str>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub mode: &'static str,
    pub ca: Vec<PathBuf>,
    pub crl: Vec<PathBuf>,
    pub extra_listener: String,
    pub extra_upstream: String,
    pub extra_top: String,
    /// Lines added to the [admin] table.
    pub extra_admin: String,
    /// Lines added to [listener.client_auth] (e.g. allow_cn = [...]).
    pub extra_client_auth: String,
    /// Lines added to [listener.tls] (e.g. session_tickets = false).
    pub extra_tls: String,
}

impl ConfigBuilder {
    pub fn new(pki: &Pki, backend: SocketAddr) -> ConfigBuilder {
        ConfigBuilder {
            listen: "127.0.0.1:0".into(),
            servers: vec![backend.to_string()],
            versions: None,
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            mode: "required",
            ca: vec![pki.client_ca.clone()],
            crl: vec![],
            extra_listener: String::new(),
            extra_upstream: String::new(),
            extra_top: String::new(),
            extra_admin: String::new(),
            extra_client_auth: String::new(),
            extra_tls: String::new(),
        }
    }

    pub fn render(&self) -> String {
        let list = |v: &[PathBuf]| {
            v.iter()
                .map(|p| format!("\"{}\"", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let versions = self
            .versions
            .map(|v| format!("versions = {v}\n"))
            .unwrap_or_default();
        let client_auth = if self.mode == "off" {
            "mode = \"off\"\n".to_string()
        } else {
            format!(
                "mode = \"{}\"\nca = [{}]\ncrl = [{}]\n",
                self.mode,
                list(&self.ca),
                list(&self.crl)
            )
        };
        format!(
            r#"{extra_top}
[admin]
listen = "127.0.0.1:0"
{extra_admin}

[[listener]]
name = "agents"
listen = "{listen}"
upstream = "core"
{extra_listener}
[listener.tls]
{versions}{extra_tls}
[[listener.tls.certificate]]
cert = "{cert}"
key = "{key}"

[listener.client_auth]
{client_auth}{extra_client_auth}
[[upstream]]
name = "core"
servers = [{servers}]
{extra_upstream}
"#,
            extra_top = self.extra_top,
            extra_admin = self.extra_admin,
            extra_client_auth = self.extra_client_auth,
            extra_tls = self.extra_tls,
            listen = self.listen,
            extra_listener = self.extra_listener,
            cert = self.cert.display(),
            key = self.key.display(),
            servers = self
                .servers
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", "),
            extra_upstream = self.extra_upstream,
        )
    }

    pub fn write(&self, dir: &Path) -> PathBuf {
        let p = dir.join("certgate.toml");
        std::fs::write(&p, self.render()).unwrap();
        p
    }
}

/// `[registry]` lines for a store in `dir`.
pub fn registry_table(dir: &Path, approval: &str) -> String {
    format!(
        "[registry]\npath = \"{}\"\napproval = \"{approval}\"\n",
        dir.join("devices.redb").display()
    )
}
