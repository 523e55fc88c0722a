//! The HTTP server's accept loop and its guard: at most so many connections at once (one more
//! is answered 503 and closed as soon as it is accepted), a request's head must arrive within
//! a bound, and a connection is closed after so long without a byte from the client, so slow,
//! idle or abandoned clients cannot hold descriptors for good (20 500 idle connections once
//! used up the process's descriptors and stopped the lake's commits). warp's own server takes
//! only a plain listener, so the loop is warp's (hyper-util's auto connection with upgrades
//! for WebSockets, graceful shutdown) around guarded connections.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutStream;

use kaiabc_connectors::address_limits::{Connections, Place};

/// How the listener guards itself.
#[derive(Clone, Copy, Debug)]
pub struct Guard {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_per_address: usize,
    /// A connection from which nothing arrives for this long is closed (WebSocket clients
    /// answer the server's pings every 20 s, so they stay).
    pub idle: Duration,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_per_address: DEFAULT_MAX_PER_ADDRESS,
            idle: Duration::from_secs(120),
        }
    }
}

/// The default of [`Guard::max_per_address`]: a site's nodes behind one router, or one
/// office's dashboards, fit; one client cannot hold the server's whole cap.
pub const DEFAULT_MAX_PER_ADDRESS: usize = 256;

/// HTTP connections open now, over every listener of the process (the API's
/// `active_connections`).
pub static OPEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Drop for Guarded {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// An accepted connection, holding its place among the open ones until it is dropped.
pub struct Guarded {
    io: Pin<Box<TimeoutStream<TcpStream>>>,
    _place: OwnedSemaphorePermit,
    _address_place: Place,
    peer: SocketAddr,
}

impl Guarded {
    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

/// The client's address, in every request's extensions (read with
/// `warp::ext::optional::<Peer>()`; absent in `warp::test` requests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// A service that puts its connection's [`Peer`] in each request before `inner` sees it
/// (warp's own server does this for `warp::addr::remote`, but only its own), and a pending
/// WebSocket upgrade where the `/v1/ws` route can take it ([`super::upgrade`]).
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: Peer,
}

impl<S, B> tower_service::Service<warp::http::Request<B>> for WithPeer<S>
where
    S: tower_service::Service<warp::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: warp::http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.peer);
        super::upgrade::keep_pending(&mut req);
        self.inner.call(req)
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_shutdown(cx)
    }
}

/// The answer to a connection beyond a limit: 503 `OVERLOADED`, then closed.
fn busy(message: &str) -> String {
    let body = super::ApiError::Overloaded(message.to_string())
        .body(&super::request_id())
        .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Retry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// How long a request's head may take to arrive.
const HEADER_READ: Duration = Duration::from_secs(10);

/// Serves `filter` on the guarded connections of `listener` until `stop` resolves, then lets
/// the open connections finish.
pub async fn serve<F>(
    listener: TcpListener,
    guard: Guard,
    filter: F,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) where
    F: warp::Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    use futures_util::StreamExt;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut conns = std::pin::pin!(guarded(listener, guard));
    let mut stop = std::pin::pin!(stop);
    loop {
        let conn = tokio::select! {
            c = conns.next() => match c {
                Some(Ok(c)) => c,
                Some(Err(_)) | None => continue,
            },
            () = &mut stop => break,
        };
        let svc = hyper_util::service::TowerToHyperService::new(WithPeer {
            inner: warp::service(filter.clone()),
            peer: Peer(conn.peer()),
        });
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let mut http =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            http.http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ);
            let io = hyper_util::rt::TokioIo::new(conn);
            let served = watcher.watch(http.serve_connection_with_upgrades(io, svc));
            if let Err(e) = served.await {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        });
    }
    graceful.shutdown().await;
}

/// The connections `listener` accepts, guarded as `guard` says.
pub fn guarded(
    listener: TcpListener,
    guard: Guard,
) -> impl futures_util::Stream<Item = io::Result<Guarded>> + Send {
    let places = Arc::new(Semaphore::new(guard.max_connections.max(1)));
    let per_address = Connections::new(guard.max_per_address);
    futures_util::stream::unfold(
        (listener, places, per_address),
        move |(listener, places, per_address)| async move {
            loop {
                let (sock, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: keep serving the others.
                        tracing::warn!(error = %e, "HTTP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let place = Arc::clone(&places).try_acquire_owned().ok();
                let address_place = per_address.take(peer.ip());
                let crowded = address_place.is_none();
                let (Some(place), Some(address_place)) = (place, address_place) else {
                    let why = if crowded {
                        format!(
                            "too many open connections from this address (at most {}); close some",
                            per_address.max()
                        )
                    } else {
                        "too many open connections; retry in a second".to_string()
                    };
                    tracing::debug!(%peer, %why, "HTTP connection refused");
                    tokio::spawn(async move {
                        let mut sock = sock;
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            let _ = sock.write_all(busy(&why).as_bytes()).await;
                            let _ = sock.shutdown().await;
                            // Read what the client sent until it closes too: a socket closed
                            // with unread input sends a reset, which can reach the client
                            // before it has read the answer.
                            let mut sink = [0u8; 1024];
                            while matches!(sock.read(&mut sink).await, Ok(n) if n > 0) {}
                        })
                        .await;
                    });
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let mut io = TimeoutStream::new(sock);
                io.set_read_timeout(Some(guard.idle));
                OPEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let conn = Guarded {
                    io: Box::pin(io),
                    _place: place,
                    _address_place: address_place,
                    peer,
                };
                return Some((Ok(conn), (listener, places, per_address)));
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_is_well_formed() {
        let answer = busy("too many \"open\" connections");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), len);
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "OVERLOADED");
        assert_eq!(v["error"]["message"], "too many \"open\" connections");
    }

    /// One address holds at most its share: the next is answered 503 at once, while another
    /// address still gets in; a closed connection gives its place back.
    #[tokio::test]
    async fn one_address_cannot_hold_every_connection() {
        use futures_util::StreamExt;
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let guard = Guard {
            max_per_address: 2,
            ..Guard::default()
        };
        let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let held = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut conns = std::pin::pin!(guarded(listener, guard));
            while let Some(Ok(c)) = conns.next().await {
                held.lock().unwrap().push(c);
            }
        });
        let from = |ip: &str| {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            async move {
                let s = tokio::net::TcpSocket::new_v4().unwrap();
                s.bind(SocketAddr::new(ip, 0)).unwrap();
                s.connect(addr).await.unwrap()
            }
        };
        let _a1 = from("127.0.0.1").await;
        let _a2 = from("127.0.0.1").await;
        let mut a3 = from("127.0.0.1").await;
        let mut answer = String::new();
        a3.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("from this address"), "{answer}");
        let _b1 = from("127.0.0.2").await;
        for _ in 0..100 {
            if accepted.lock().unwrap().len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            accepted.lock().unwrap().len(),
            3,
            "two from one address, one from another"
        );
        // The server closes one of the first address's connections: its place is free again.
        accepted.lock().unwrap().remove(0);
        let _a4 = from("127.0.0.1").await;
        for _ in 0..100 {
            if accepted.lock().unwrap().len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(accepted.lock().unwrap().len(), 3);
    }
}
