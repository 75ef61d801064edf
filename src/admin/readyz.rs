//! `/readyz`: ready when every listener has at least one upstream server up.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::context::AdminContext;
use super::reply::json;

/// `GET /readyz`: 200 when every listener is bound and reaches at least
/// one server of its upstream (a TCP connect, at most 1 s each), else 503;
/// the body says which.
pub(super) async fn readyz(ctx: &AdminContext) -> Response<Full<Bytes>> {
    let view = ctx.view.load_full();
    let mut ready = !view.listeners.is_empty();
    let mut listeners = Vec::new();
    let mut probed: std::collections::HashMap<String, Vec<(std::net::SocketAddr, bool)>> =
        std::collections::HashMap::new();
    for (name, up) in &view.upstreams {
        let servers = match probed.get(&up.settings.name) {
            Some(s) => s.clone(),
            None => {
                let s = up.probe().await;
                probed.insert(up.settings.name.clone(), s.clone());
                s
            }
        };
        let ok = servers.iter().any(|(_, up)| *up);
        ready &= ok;
        listeners.push(serde_json::json!({
            "listener": name,
            "addr": view.listeners.iter().find(|(n, _)| n == name).map(|(_, a)| a.to_string()),
            "upstream": up.settings.name,
            "ready": ok,
            "servers": servers.iter().map(|(s, up)| serde_json::json!({"server": s.to_string(), "up": up})).collect::<Vec<_>>(),
        }));
    }
    json(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        serde_json::json!({"ready": ready, "listeners": listeners}),
    )
}
