//! The WebSocket upgrade of `GET /v1/ws`, done here rather than by `warp::ws()` so that each
//! connection's buffers are sized by us.
//!
//! warp 0.4 builds every socket with tungstenite's default 128 KiB read buffer and no way to
//! change it, and tungstenite zero-fills that buffer before each read: 10 000 subscribers held
//! 1.44 GB (136 KB each, from their first message), and every client message cost a 128 KiB
//! `memset`. Here the socket reads 4 KiB at a time (a client message of up to
//! [`crate::ws::MAX_CLIENT_MESSAGE`] still arrives whole, over several reads).
//!
//! The hand-off: [`keep_pending`] (called by the listener on every request, before warp sees
//! it) moves hyper's `OnUpgrade` of a request that asks for an upgrade into a [`Pending`] the
//! filters can clone; [`handshake`] checks the request's headers and answers `101 Switching
//! Protocols`; once hyper has sent that answer, [`Pending::open`] yields the socket.

use std::sync::{Arc, Mutex};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;
use warp::http::{header, HeaderMap, StatusCode};
use warp::reply::Response as Reply;

use super::error::ApiError;

/// An upgraded `/v1/ws` connection.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Bytes read from a client's socket at a time (tungstenite clears this much before a read).
const READ_CHUNK: usize = 4096;

/// A request's pending upgrade, taken out of hyper's extensions (where it cannot be cloned,
/// so warp filters cannot get it) by [`keep_pending`].
#[derive(Clone, Default)]
pub struct Pending(Arc<Mutex<Option<OnUpgrade>>>);

impl Pending {
    /// The socket once the `101` answer is out; `None` if the request was not upgraded (the
    /// upgrade was already taken, or the client went away).
    pub async fn open(self, max_message: usize) -> Option<Socket> {
        let on = self.0.lock().ok()?.take()?;
        match on.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .read_buffer_size(READ_CHUNK)
                    .max_message_size(Some(max_message))
                    .max_frame_size(Some(max_message));
                Some(
                    WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(config),
                    )
                    .await,
                )
            }
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed");
                None
            }
        }
    }
}

/// Moves the upgrade of a request that asks for one (an `Upgrade` header) into a [`Pending`]
/// extension; other requests are left as they are.
pub fn keep_pending<B>(req: &mut warp::http::Request<B>) {
    if !req.headers().contains_key(header::UPGRADE) {
        return;
    }
    if let Some(on) = req.extensions_mut().remove::<OnUpgrade>() {
        req.extensions_mut()
            .insert(Pending(Arc::new(Mutex::new(Some(on)))));
    }
}

/// Whether a comma-separated header holds `token` (case-insensitive), as `Connection` lists
/// `keep-alive, Upgrade`.
fn lists(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// The `101` answer to a WebSocket handshake (RFC 6455 §4.2), or the contract's `400
/// INVALID_REQUEST` naming what is missing.
pub fn handshake(headers: &HeaderMap) -> Result<Reply, ApiError> {
    if !lists(headers, header::CONNECTION, "upgrade")
        || !lists(headers, header::UPGRADE, "websocket")
    {
        return Err(ApiError::InvalidRequest(
            "/v1/ws takes a WebSocket upgrade (Connection: upgrade, Upgrade: websocket)".into(),
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(ApiError::InvalidRequest(
            "the WebSocket version must be 13 (Sec-WebSocket-Version: 13)".into(),
        ));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(ApiError::InvalidRequest(
            "a WebSocket upgrade needs a Sec-WebSocket-Key header".into(),
        ));
    };
    let accept = derive_accept_key(key.as_bytes());
    let mut reply = Reply::default();
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = reply.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    let accept = header::HeaderValue::from_str(&accept)
        .map_err(|e| ApiError::Internal(format!("WebSocket handshake: {e}")))?;
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_handshake_answers_with_rfc_6455s_accept_key() {
        // RFC 6455 §1.3's example: this key's accept value is s3pPLMBiTxaQ9kYGzzhZRbK+xOo=.
        let ok = handshake(&headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]))
        .unwrap();
        assert_eq!(ok.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            ok.headers()[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn a_request_that_is_not_a_handshake_is_told_what_is_missing() {
        let base = [
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        for (drop, says) in [
            ("connection", "Connection: upgrade"),
            ("upgrade", "Upgrade: websocket"),
            ("sec-websocket-version", "version must be 13"),
            ("sec-websocket-key", "Sec-WebSocket-Key"),
        ] {
            let h: Vec<_> = base.iter().copied().filter(|(k, _)| *k != drop).collect();
            let e = handshake(&headers(&h)).unwrap_err();
            assert_eq!(e.code(), "INVALID_REQUEST");
            assert!(e.to_string().contains(says), "{drop}: {e}");
        }
        let old = handshake(&headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "8"),
            ("sec-websocket-key", "x"),
        ]));
        assert!(old.is_err());
    }
}
