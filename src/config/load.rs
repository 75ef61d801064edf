//! Reading the config file and turning its text into [`Settings`].

use std::path::Path;

use crate::Settings;
use crate::error::ConfigError;

use super::raw::RawConfig;
use super::validate::validate;

impl Settings {
    /// Reads and validates the config file at `path`. Relative paths inside
    /// it are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // The real directory: paths relative to it are then absolute and
        // free of `..` in every message, and a `..` leaving it means what
        // the kernel would make of it.
        let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
        Settings::parse(&text, path, &base)
    }

    /// Validates config text. `source` names it in messages; relative paths
    /// are resolved against `base`. Does no I/O.
    pub fn parse(text: &str, source: &Path, base: &Path) -> Result<Settings, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: source.to_path_buf(),
            message: in_user_words(&e.to_string(), e.span().and_then(|s| key_at(text, s.start))),
        })?;
        let mut errors = Vec::new();
        let settings = validate(raw, source, base, &mut errors);
        match errors.len() {
            0 => Ok(settings),
            1 => Err(errors.remove(0)),
            _ => Err(ConfigError::Many(errors)),
        }
    }
}

/// The key of the `key = value` line that holds byte `at` of `text`.
fn key_at(text: &str, at: usize) -> Option<&str> {
    let start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(start..)?.lines().next()?;
    let (key, _) = line.split_once('=')?;
    Some(key.trim().trim_matches('"'))
}

/// Whether a key holds a duration (they all end so).
fn is_duration_key(key: &str) -> bool {
    ["timeout", "grace", "interval", "refresh", "window"]
        .iter()
        .any(|end| key.ends_with(end))
}

/// The parser's message in the words of the config file: "a whole number",
/// "a duration such as \"120s\"", not Rust's type names.
fn in_user_words(message: &str, key: Option<&str>) -> String {
    let mut m = message.to_string();
    for t in ["usize", "u64", "u32", "u16", "u8", "i64", "i32"] {
        m = m.replace(
            &format!("expected {t}"),
            "expected a whole number (0 or more), such as 100",
        );
    }
    if key.is_some_and(is_duration_key) {
        m = m.replace(
            "expected a string",
            "expected a duration such as \"120s\" (a number and a unit: ms, s, m, h, d or w, in quotes)",
        );
    }
    m
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::config::*;

    const MINIMAL: &str = r#"
        [[listener]]
        name = "agents"
        listen = "127.0.0.1:8443"
        upstream = "core"
        [listener.tls]
        [[listener.tls.certificate]]
        cert = "certs/server.pem"
        key = "certs/server.key"
        [listener.client_auth]
        mode = "required"
        ca = ["certs/client-ca.pem"]

        [[upstream]]
        name = "core"
        servers = ["127.0.0.1:8080"]
    "#;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::parse(text, Path::new("test.toml"), Path::new("/etc/certgate"))
    }

    #[test]
    fn minimal_config_gets_safe_defaults() -> Result<(), ConfigError> {
        let s = parse(MINIMAL)?;
        let l = &s.listeners[0];
        assert_eq!(l.tls.as_ref().unwrap().versions, vec![TlsVersion::V1_2]);
        assert_eq!(l.limits.handshake_timeout, Duration::from_secs(10));
        assert_eq!(l.limits.max_request_header_bytes, 64 * 1024);
        assert_eq!(
            l.tls.as_ref().unwrap().client_auth.mode,
            ClientAuthMode::Required
        );
        assert_eq!(
            l.tls.as_ref().unwrap().certificates[0].key.resolved,
            PathBuf::from("/etc/certgate/certs/server.key")
        );
        assert_eq!(s.shutdown_grace, Duration::from_secs(30));
        Ok(())
    }

    #[test]
    fn the_shared_registry_is_configured_and_its_mistakes_are_named() {
        let with = |lines: &str| {
            parse(&format!(
                "[registry]\npath = \"/var/lib/certgate/devices.redb\"\n{lines}\n{MINIMAL}"
            ))
        };
        let errors = |lines: &str| match with(lines) {
            Ok(_) => panic!("accepted: {lines}"),
            Err(e) => e
                .into_list()
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        };
        let s = with("backend = \"postgres\"\nurl = \"postgres://certgate:secret@db1,db2/certgate?target_session_attrs=read-write\"\ninstance = \"gw1\"\nresync_every = \"5m\"").unwrap();
        let Some(RegistryBackend::Postgres(pg)) = s.registry.map(|r| r.backend) else {
            panic!("not the postgres backend");
        };
        assert_eq!(pg.instance, "gw1");
        assert_eq!(pg.resync_every, Duration::from_secs(300));
        // The password never reaches a log through Debug.
        assert!(!format!("{pg:?}").contains("secret"));
        assert!(
            with("").unwrap().registry.unwrap().backend == RegistryBackend::Redb,
            "redb stays the default"
        );
        let e = errors("url = \"postgres://db/certgate\"");
        assert!(
            e.contains("registry.url") && e.contains("backend = \"postgres\""),
            "{e}"
        );
        let e = errors("backend = \"postgres\"");
        assert!(e.contains("url_file"), "{e}");
        let e = errors("backend = \"postgres\"\nurl = \"postgres://db/x\"\nurl_file = \"u\"");
        assert!(e.contains("not both"), "{e}");
        let e = errors("backend = \"postgres\"\nurl = \"postgres://db/x?sslmode=require\"");
        assert!(e.contains("database_ca"), "{e}");
        let e =
            errors("backend = \"postgres\"\nurl = \"postgres://u:hunter2@db/x?sslmode=nonsense\"");
        assert!(e.contains("registry.url") && !e.contains("hunter2"), "{e}");
        let e = errors("backend = \"postgres\"\nurl_file = \"/nonexistent/registry-url\"");
        assert!(
            e.contains("/nonexistent/registry-url") && e.contains("cannot be read"),
            "{e}"
        );
        let e = errors("backend = \"mysql\"");
        assert!(e.contains("\"redb\"") && e.contains("\"postgres\""), "{e}");
        let e = errors("backend = \"postgres\"\nurl = \"postgres://db/x\"\ninstance = \"a b\"");
        assert!(e.contains("registry.instance"), "{e}");
    }

    #[test]
    fn renewal_rules_parse_and_mistakes_are_named() {
        let with = |lines: &str| {
            parse(&MINIMAL.replace(
                "ca = [\"certs/client-ca.pem\"]",
                &format!("ca = [\"certs/client-ca.pem\"]\n{lines}"),
            ))
        };
        let renewal = |s: &Settings| {
            s.listeners[0]
                .tls
                .as_ref()
                .unwrap()
                .client_auth
                .renewal
                .clone()
        };
        let d = renewal(&with("").unwrap());
        assert_eq!(d.identity, Some(RenewalIdentity::Subject));
        assert_eq!(d.grace, Duration::from_secs(30 * 86_400));
        assert_eq!(d.supersede_grace, Duration::from_secs(7 * 86_400));
        let r = renewal(&with("renewal_identity = \"2.5.4.5\"\nsupersede_grace = \"1d\"").unwrap());
        assert_eq!(r.identity, Some(RenewalIdentity::Oid("2.5.4.5".into())));
        assert_eq!(r.supersede_grace, Duration::from_secs(86_400));
        assert_eq!(
            renewal(&with("renewal = \"same_key\"").unwrap()).identity,
            Some(RenewalIdentity::Key)
        );
        assert_eq!(renewal(&with("renewal = \"off\"").unwrap()).identity, None);
        for (lines, says) in [
            (
                "renewal = \"same_key\"\nrenewal_identity = \"cn\"",
                "renewal_identity applies to renewal = \"same_subject\"",
            ),
            (
                "renewal_identity = \"serial\"",
                "\"serial\" is not an identity",
            ),
            ("renewal_identity = \"2.5.\"", "is not an identity"),
            ("renewal = \"same\"", "\"same\" is not a renewal rule"),
            ("renewal_grace = \"1y\"", "unknown unit \"y\""),
        ] {
            let err = with(lines).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                err.contains(says) && err.contains("client_auth.renewal"),
                "{lines}: {err}"
            );
        }
    }

    #[test]
    fn type_errors_are_in_the_config_files_words() {
        let err = |from: &str, to: &str| {
            parse(&MINIMAL.replace(from, to))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let e = err(
            "upstream = \"core\"\n",
            "upstream = \"core\"\nhandshake_timeout = 120\n",
        );
        assert!(e.contains("expected a duration such as \"120s\""), "{e}");
        let e = err(
            "upstream = \"core\"\n",
            "upstream = \"core\"\nmax_connections = \"many\"\n",
        );
        assert!(
            e.contains("expected a whole number") && !e.contains("usize"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let text = MINIMAL.replace("upstream = \"core\"", "upstream = \"core\"\nbogus = 1");
        let err = parse(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn old_tls_versions_are_refused() {
        let text = MINIMAL.replace(
            "[listener.tls]",
            "[listener.tls]\nversions = [\"1.1\", \"1.2\"]",
        );
        let err = parse(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("TLS 1.1 is not allowed"), "{err}");
    }

    #[test]
    fn missing_upstream_is_named() {
        let text = MINIMAL.replace("upstream = \"core\"", "upstream = \"nope\"");
        let err = parse(&text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no [[upstream]] named \"nope\""), "{err}");
    }

    #[test]
    fn upstream_strategy_and_health_check_are_validated_with_their_keys() {
        let ok = MINIMAL.replace(
            "servers = [\"127.0.0.1:8080\"]",
            "servers = [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]\nstrategy = \"least_conn\"\n\
             [upstream.health_check]\npath = \"/healthz\"",
        );
        let s = parse(&ok).unwrap();
        let u = &s.upstreams[0];
        assert_eq!(u.strategy, Strategy::LeastConn);
        assert_eq!(u.max_fails, 1);
        let h = u.health_check.as_ref().unwrap();
        assert_eq!(
            (h.interval, h.timeout),
            (Duration::from_secs(5), Duration::from_secs(2))
        );
        assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (2, 3));

        let bad = MINIMAL.replace(
            "servers = [\"127.0.0.1:8080\"]",
            "servers = [\"127.0.0.1:8080\", \"127.0.0.1:8080\"]\nstrategy = \"random\"\n\
             [upstream.health_check]\npath = \"healthz\"\ninterval = \"1s\"\ntimeout = \"2s\"\n\
             healthy_threshold = 0",
        );
        let err = parse(&bad).err().map(|e| e.to_string()).unwrap_or_default();
        for want in [
            "servers[1]: 127.0.0.1:8080 is listed twice",
            "strategy: \"random\" is not a strategy",
            "health_check.path",
            "health_check.timeout",
            "health_check.healthy_threshold",
        ] {
            assert!(err.contains(want), "{want} missing from: {err}");
        }
    }

    #[test]
    fn annotated_example_config_is_valid() -> Result<(), ConfigError> {
        let text = include_str!("../../config/certgate.toml");
        let s = Settings::parse(text, Path::new("config/certgate.toml"), Path::new("config"))?;
        assert_eq!(s.listeners.len(), 1);
        assert_eq!(
            s.listeners[0].tls.as_ref().unwrap().client_auth.crl.len(),
            1
        );
        assert!(s.admin.is_some());
        Ok(())
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(parse_duration("5d"), Ok(Duration::from_secs(5 * 86_400)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert!(parse_duration("5y").is_err());
    }
}
