//! The kept-alive connections to one backend server: a request checks one
//! out (or connects), holds it until its response body is done, and gives
//! it back; idle ones are closed after `pool_idle_timeout`, and at most
//! `pool_max_idle` are kept.
//!
//! Our own, not hyper-util's legacy client: that client keys its pool by
//! scheme and authority in a hash map, spawns a task per request to wait
//! for the connection to be ready again, and rewrites every URI, all for
//! the one server this pool serves. Here a checkout is a lock and a pop.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::connector::{AttemptError, ConnectError, connect};

use crate::proxy::body::CountedBody;

/// How many times a request that never left is sent again on another
/// connection after a kept-alive one turned out to be closed (the server
/// closed it while it was idle). Bounded so that a server that closes
/// every connection at once is answered with an error, not a loop.
const RESEND_UNSENT: usize = 3;

/// Why a request to a server got no response head.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection: the server did not accept one.
    #[error("cannot connect")]
    Connect(#[source] ConnectError),
    /// The connection broke, or the server's answer was not HTTP/1.1.
    #[error("upstream connection failed")]
    Http(#[source] hyper::Error),
}

impl SendError {
    /// The connect failure, if that is what it was.
    pub(crate) fn connect(&self) -> Option<&AttemptError> {
        match self {
            SendError::Connect(c) => Some(&c.error),
            SendError::Http(_) => None,
        }
    }
}

struct Idle {
    tx: SendRequest<CountedBody>,
    since: Instant,
}

/// The connections to one server.
pub(crate) struct Conns {
    server: SocketAddr,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    /// Oldest first: expired ones are a prefix, the newest is reused.
    idle: Mutex<Vec<Idle>>,
}

impl Conns {
    pub(super) fn new(
        server: SocketAddr,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Conns {
        Conns {
            server,
            connect_timeout,
            idle_timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `req` on a kept-alive connection or a new one; the response
    /// head and the connection, to be held until the response body is done.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: Request<CountedBody>,
    ) -> Result<(Response<Incoming>, Conn), SendError> {
        let mut resent = 0;
        loop {
            let (mut tx, reused) = match self.take() {
                Some(tx) => (tx, true),
                None => (self.connect().await?, false),
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    let conn = Conn {
                        tx: Some(tx),
                        pool: Arc::downgrade(self),
                    };
                    return Ok((resp, conn));
                }
                Err(mut e) => match e.take_message() {
                    // Not a byte of it was written: the kept-alive
                    // connection was closed under it. Nothing is repeated
                    // by sending it on another one.
                    Some(back) if reused && resent < RESEND_UNSENT => {
                        resent += 1;
                        req = back;
                    }
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    /// The newest idle connection that is still open, once it is ready.
    /// Never waits: a connection that is open but not ready is still
    /// sending the body of its last request (the server answered before
    /// reading all of it, say a 413 to a slow upload), and a request that
    /// waited for it could wait as long as that upload. It stays in the
    /// pool and this request takes another or a new one.
    fn take(&self) -> Option<SendRequest<CountedBody>> {
        let mut idle = self.idle.lock().ok()?;
        self.expire(&mut idle, Instant::now());
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(i) = idle.pop() {
            if i.tx.is_ready() {
                found = Some(i.tx);
                break;
            }
            if !i.tx.is_closed() {
                busy.push(i);
            }
        }
        // Popped newest first: pushed back oldest first, the list stays in
        // order of `since`.
        idle.extend(busy.into_iter().rev());
        found
    }

    async fn connect(&self) -> Result<SendRequest<CountedBody>, SendError> {
        let tcp = connect(self.server, self.connect_timeout)
            .await
            .map_err(SendError::Connect)?;
        let (tx, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            // Its errors reach the request that was in flight.
            let _ = connection.with_upgrades().await;
        });
        Ok(tx)
    }

    fn expire(&self, idle: &mut Vec<Idle>, now: Instant) {
        let Some(cut) = now.checked_sub(self.idle_timeout) else {
            return;
        };
        let old = idle.partition_point(|i| i.since <= cut);
        idle.drain(..old);
    }

    fn give_back(&self, tx: SendRequest<CountedBody>) {
        if tx.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(Idle {
                tx,
                since: Instant::now(),
            });
        }
    }

    /// Closes the connections idle for longer than `pool_idle_timeout`.
    fn reap(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            self.expire(&mut idle, Instant::now());
            idle.retain(|i| !i.tx.is_closed());
        }
    }

    /// How many connections are idle (for tests and logs).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}

/// Closes idle connections when they expire, even when no request comes
/// to notice, until the pool is gone.
pub(super) async fn reap_loop(conns: Weak<Conns>, every: Duration) {
    let every = every.max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let Some(c) = conns.upgrade() else { return };
        c.reap();
    }
}

/// A connection in use by one request; back in its pool when dropped,
/// unless it was closed or taken over by an upgrade.
pub(crate) struct Conn {
    tx: Option<SendRequest<CountedBody>>,
    pool: Weak<Conns>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

impl Conn {
    /// The connection now carries an upgraded protocol: never reused.
    pub(crate) fn upgraded(mut self) {
        self.tx = None;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let (Some(tx), Some(pool)) = (self.tx.take(), self.pool.upgrade()) {
            pool.give_back(tx);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_connection_is_reused_then_closed_after_the_idle_timeout() {
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = backend.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = backend.accept().await else {
                    return;
                };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(tcp),
                    hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"ok"),
                        )))
                    }),
                ));
            }
        });
        let conns = Arc::new(Conns::new(
            addr,
            Duration::from_secs(1),
            Duration::from_millis(300),
            4,
        ));
        let stats = Arc::new(crate::proxy::body::BodyStats::default());
        for _ in 0..3 {
            let req = Request::get("/")
                .body(CountedBody::empty(stats.clone()))
                .unwrap();
            let (resp, conn) = conns.send(req).await.unwrap();
            assert_eq!(resp.status(), http::StatusCode::OK);
            http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap();
            drop(conn);
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "three requests in a row share one kept-alive connection"
        );
        assert_eq!(conns.idle_count(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        conns.reap();
        assert_eq!(
            conns.idle_count(),
            0,
            "an idle connection older than pool_idle_timeout is closed"
        );
    }
}
