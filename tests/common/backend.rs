//! A real HTTP backend that records what reached it, and the bodies tests
//! stream through the gateway.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What the backend saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub version: http::Version,
    pub headers: HeaderMap,
}

/// A real HTTP/1.1 backend on an ephemeral loopback port.
///
/// Routes: `/download/N` streams N pattern bytes, `/upload` answers the
/// SHA-256 and length of the body, `/slow/MS` answers after MS ms, `/ws`
/// is a WebSocket echo, anything else answers 200 "ok".
pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Backend::serve(listener, Arc::default())
    }

    /// Starts a backend on `addr` again after [`Backend::kill`] (the
    /// listener sets SO_REUSEADDR, so the port is free at once); requests
    /// are recorded in the same `seen` list.
    pub async fn start_on(addr: SocketAddr, seen: Arc<Mutex<Vec<Seen>>>) -> Backend {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot bind {addr} again: {e}"),
            }
        };
        Backend::serve(listener, seen)
    }

    fn serve(listener: TcpListener, seen: Arc<Mutex<Vec<Seen>>>) -> Backend {
        let addr = listener.local_addr().unwrap();
        let seen2 = seen.clone();
        // Connections live in the accept task's JoinSet: aborting the task
        // (drop, kill) closes every one of them, as a killed process would.
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    r = listener.accept() => {
                        let Ok((tcp, _)) = r else { return };
                        let seen = seen2.clone();
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                backend_route(seen.clone(), req)
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), svc)
                                .with_upgrades()
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Backend { addr, seen, task }
    }

    /// Stops accepting and closes every open connection at once, mid-request
    /// or not (a killed backend process).
    pub fn kill(self) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
        self.task.abort();
        (self.addr, self.seen.clone())
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("backend saw no request")
    }

    /// Every request seen so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

type BackendBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub fn full(b: impl Into<Bytes>) -> BackendBody {
    Full::new(b.into()).boxed()
}

/// The deterministic byte pattern `/download/N` serves: byte i is
/// `(i * 31 + i / 4096) mod 251`, so shifted or repeated chunks are caught.
pub fn pattern_chunk(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|j| {
            let i = offset + j;
            ((i.wrapping_mul(31) + i / 4096) % 251) as u8
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of the first `size` pattern bytes.
pub fn pattern_sha256(size: u64) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut off = 0;
    while off < size {
        let n = (size - off).min(256 * 1024) as usize;
        ctx.update(&pattern_chunk(off, n));
        off += n as u64;
    }
    hex(ctx.finish().as_ref())
}

/// A streaming body of `size` pattern bytes, produced chunk by chunk.
pub fn pattern_body(size: u64) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    let chunk = 64 * 1024u64;
    let stream = futures_util::stream::unfold(0u64, move |off| async move {
        if off >= size {
            return None;
        }
        let n = (size - off).min(chunk);
        let data = Bytes::from(pattern_chunk(off, n as usize));
        Some((Ok::<_, Infallible>(Frame::data(data)), off + n))
    });
    BodyExt::boxed(StreamBody::new(stream))
}

pub async fn backend_route(
    seen: Arc<Mutex<Vec<Seen>>>,
    mut req: Request<Incoming>,
) -> Result<Response<BackendBody>, Infallible> {
    let path = req.uri().path().to_string();
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: path.clone(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    if let Some(n) = path.strip_prefix("/download/") {
        let size: u64 = n.parse().unwrap_or(0);
        let mut resp = Response::new(pattern_body(size));
        resp.headers_mut()
            .insert(http::header::CONTENT_LENGTH, size.into());
        return Ok(resp);
    }
    if path == "/upload" {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut len = 0u64;
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        len += d.len() as u64;
                        ctx.update(d);
                    }
                }
                Err(_) => {
                    return Ok(Response::builder()
                        .status(400)
                        .body(full("body error"))
                        .unwrap());
                }
            }
        }
        return Ok(Response::new(full(format!(
            "{} {}",
            len,
            hex(ctx.finish().as_ref())
        ))));
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(Response::new(full("slow done")));
    }
    if path == "/ws" {
        let key = req.headers().get("sec-websocket-key").cloned();
        let Some(key) = key else {
            return Ok(Response::builder()
                .status(400)
                .body(full("no key"))
                .unwrap());
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    if ws.send(msg).await.is_err() {
                        return;
                    }
                } else if msg.is_close() {
                    return;
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(full(""))
            .unwrap());
    }
    Ok(Response::new(full("ok")))
}
