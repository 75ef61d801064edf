//! The TOML as written: serde types that mirror the file one to one,
//! unknown keys refused. Nothing outside `config` sees them.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) shutdown_grace: Option<String>,
    pub(super) handover_socket: Option<String>,
    pub(super) log: Option<RawLog>,
    pub(super) admin: Option<RawAdmin>,
    pub(super) registry: Option<RawRegistry>,
    #[serde(default)]
    pub(super) listener: Vec<RawListener>,
    #[serde(default)]
    pub(super) upstream: Vec<RawUpstream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<String>,
    pub(super) level: Option<String>,
    pub(super) access: Option<String>,
    pub(super) access_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: String,
    pub(super) token_file: Option<String>,
    #[serde(default)]
    pub(super) allowed_hosts: Vec<String>,
    pub(super) tls: Option<RawAdminTls>,
    pub(super) client_auth: Option<RawAdminClientAuth>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdminTls {
    pub(super) cert: String,
    pub(super) key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdminClientAuth {
    #[serde(default)]
    pub(super) ca: Vec<String>,
    #[serde(default)]
    pub(super) crl: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub(super) path: String,
    pub(super) approval: Option<String>,
    pub(super) audit_log: Option<String>,
    pub(super) update_queue: Option<usize>,
    pub(super) backend: Option<String>,
    pub(super) url: Option<String>,
    pub(super) url_file: Option<String>,
    pub(super) database_ca: Option<String>,
    pub(super) instance: Option<String>,
    pub(super) resync_every: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) name: String,
    pub(super) listen: String,
    pub(super) upstream: String,
    pub(super) handshake_timeout: Option<String>,
    pub(super) request_header_timeout: Option<String>,
    pub(super) idle_timeout: Option<String>,
    pub(super) max_request_header_bytes: Option<usize>,
    pub(super) max_request_headers: Option<usize>,
    pub(super) max_uri_bytes: Option<usize>,
    pub(super) max_request_body_bytes: Option<u64>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_source: Option<usize>,
    pub(super) handshake_rate_per_source: Option<u32>,
    pub(super) tls: Option<RawTls>,
    pub(super) client_auth: Option<RawClientAuth>,
    pub(super) allow_from: Option<Vec<String>>,
    pub(super) proxy_protocol: Option<String>,
    pub(super) proxy_from: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) versions: Option<Vec<String>>,
    pub(super) session_cache: Option<usize>,
    pub(super) session_tickets: Option<bool>,
    #[serde(default)]
    pub(super) certificate: Vec<RawCertificate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCertificate {
    pub(super) cert: String,
    pub(super) key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientAuth {
    pub(super) mode: String,
    #[serde(default)]
    pub(super) ca: Vec<String>,
    #[serde(default)]
    pub(super) crl: Vec<String>,
    #[serde(default)]
    pub(super) allow_cn: Vec<String>,
    #[serde(default)]
    pub(super) allow_ou: Vec<String>,
    #[serde(default)]
    pub(super) allow_dns: Vec<String>,
    #[serde(default)]
    pub(super) allow_uri: Vec<String>,
    pub(super) crl_stale: Option<String>,
    pub(super) require_crl: Option<bool>,
    #[serde(default)]
    pub(super) crl_urls: Vec<String>,
    pub(super) crl_from_certificates: Option<bool>,
    pub(super) crl_refresh: Option<String>,
    pub(super) crl_cache_dir: Option<String>,
    pub(super) ocsp: Option<String>,
    pub(super) ocsp_url: Option<String>,
    pub(super) ocsp_timeout: Option<String>,
    pub(super) renewal: Option<String>,
    pub(super) renewal_identity: Option<String>,
    pub(super) renewal_grace: Option<String>,
    pub(super) supersede_grace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) name: String,
    pub(super) servers: Vec<String>,
    pub(super) connect_timeout: Option<String>,
    pub(super) response_timeout: Option<String>,
    pub(super) pool_idle_timeout: Option<String>,
    pub(super) pool_max_idle: Option<usize>,
    pub(super) max_connections: Option<usize>,
    pub(super) queue_timeout: Option<String>,
    pub(super) strategy: Option<String>,
    pub(super) max_fails: Option<u32>,
    pub(super) fail_timeout: Option<String>,
    pub(super) health_check: Option<RawHealthCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    pub(super) path: String,
    pub(super) host: Option<String>,
    pub(super) interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) healthy_threshold: Option<u32>,
    pub(super) unhealthy_threshold: Option<u32>,
}

// ---------------------------------------------------------------------------
// Validated settings
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    //! The annotated example (`config/certgate.toml`) says it lists every
    //! key: compare its keys, commented or not, with the keys these
    //! structs accept, so the two cannot drift apart.
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// A deserializer that only records the fields a struct asks for.
    struct Probe<'a>(&'a mut Vec<&'static str>);

    #[derive(Debug)]
    struct Stop;

    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("probe")
        }
    }

    impl std::error::Error for Stop {}

    impl serde::de::Error for Stop {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Stop
        }
    }

    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = Stop;

        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }

        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.extend(fields);
            Err(Stop)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    fn fields<T: Deserialize<'static>>() -> BTreeSet<&'static str> {
        let mut v = Vec::new();
        let _ = T::deserialize(Probe(&mut v));
        v.into_iter().collect()
    }

    /// Keys (and sub-tables) of each table of the example, commented out
    /// or not.
    fn example_keys() -> BTreeMap<String, BTreeSet<String>> {
        let text = include_str!("../../config/certgate.toml");
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut table = String::new();
        for line in text.lines() {
            let l = line.trim_start().trim_start_matches('#').trim();
            if let Some(h) = l.strip_prefix('[') {
                let name = h.trim_start_matches('[');
                if let Some(end) = name.find(']') {
                    table = name[..end].trim().to_string();
                    // A table is a key of its parent.
                    let (parent, last) = table.rsplit_once('.').unwrap_or(("", &table));
                    out.entry(parent.to_string())
                        .or_default()
                        .insert(last.to_string());
                }
                continue;
            }
            if let Some((k, _)) = l.split_once(" = ")
                && !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
            {
                out.entry(table.clone()).or_default().insert(k.to_string());
            }
        }
        out
    }

    #[test]
    fn the_annotated_example_lists_every_key() {
        let example = example_keys();
        let schema: [(&str, BTreeSet<&'static str>); 12] = [
            ("", fields::<RawConfig>()),
            ("log", fields::<RawLog>()),
            ("admin", fields::<RawAdmin>()),
            ("admin.tls", fields::<RawAdminTls>()),
            ("admin.client_auth", fields::<RawAdminClientAuth>()),
            ("registry", fields::<RawRegistry>()),
            ("listener", fields::<RawListener>()),
            ("listener.tls", fields::<RawTls>()),
            ("listener.tls.certificate", fields::<RawCertificate>()),
            ("listener.client_auth", fields::<RawClientAuth>()),
            ("upstream", fields::<RawUpstream>()),
            ("upstream.health_check", fields::<RawHealthCheck>()),
        ];
        let mut missing = Vec::new();
        for (table, keys) in &schema {
            assert!(!keys.is_empty(), "no fields probed for [{table}]");
            for k in keys {
                if !example.get(*table).is_some_and(|e| e.contains(*k)) {
                    missing.push(format!("[{table}] {k}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "config/certgate.toml lacks these keys (add each, with its default and what it does): {missing:?}"
        );
        // And it names no key certgate would refuse.
        let known: BTreeMap<&str, &BTreeSet<&str>> = schema.iter().map(|(t, k)| (*t, k)).collect();
        let mut unknown = Vec::new();
        for (table, keys) in &example {
            let Some(schema_keys) = known.get(table.as_str()) else {
                unknown.push(format!("[{table}]"));
                continue;
            };
            for k in keys {
                if !schema_keys.contains(k.as_str()) {
                    unknown.push(format!("[{table}] {k}"));
                }
            }
        }
        assert!(
            unknown.is_empty(),
            "config/certgate.toml names keys certgate does not know: {unknown:?}"
        );
    }
}
