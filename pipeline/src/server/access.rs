//! Who may call what: the access rule of each endpoint, the credentials a request presents
//! (read once, by one filter, for both the access check and the rate limit), the checks of
//! API keys and tokens, and the per-credential rate limit.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use warp::{Filter, Rejection};

use super::{listener, Api, ApiError};
use crate::auth::{Claims, Principal, Role};
use crate::ratelimit::{Class, Verdict};

/// The credentials a request presents: an `X-API-Key`, a bearer token (the `Authorization`
/// header's, or `?token=` for browsers' WebSockets), and the client's address.
#[derive(Clone, Debug, Default)]
pub(super) struct Credentials {
    /// A node's API key.
    pub api_key: Option<String>,
    /// A person's token (`Authorization: Bearer …`, else `?token=`).
    pub token: Option<String>,
    /// Where the request came from (absent in `warp::test` requests).
    pub peer: Option<listener::Peer>,
}

/// Reads a request's [`Credentials`] (a header that is not text is refused, 400).
pub(super) fn credentials() -> impl Filter<Extract = (Credentials,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::header::optional::<String>("x-api-key"))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::ext::optional::<listener::Peer>())
        .map(
            |bearer: Option<String>,
             api_key: Option<String>,
             query: String,
             peer: Option<listener::Peer>| {
                let token = bearer
                    .as_deref()
                    .and_then(|b| b.strip_prefix("Bearer "))
                    .map(str::to_string)
                    .or_else(|| query_token(&query));
                Credentials {
                    api_key,
                    token,
                    peer,
                }
            },
        )
}

/// Who may call an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health checks, Prometheus scrapes).
    Public,
    /// A person whose token's role is at least this one.
    AtLeast(Role),
    /// A sensor node with its API key (`X-API-Key`).
    Node,
    /// A node's API key for that node's own data (the handler holds it to its node), or a
    /// person whose token's role is at least this one: nodes that cannot use MQTT poll their
    /// clock's output over HTTP.
    OwnNodeOr(Role),
}

pub(super) fn rank(r: Role) -> u8 {
    match r {
        Role::Admin => 3,
        Role::Researcher => 2,
        Role::Observer => 1,
    }
}

pub(super) fn refuse(e: ApiError) -> Rejection {
    warp::reject::custom(e)
}

/// Checks the caller against `need`: a bearer token (or `?token=`, for browsers' WebSockets)
/// or an `X-API-Key`.
pub(super) fn authorise(
    api: Arc<Api>,
    need: Access,
) -> impl Filter<Extract = (Principal,), Error = Rejection> + Clone {
    credentials().and_then(move |creds: Credentials| {
        let api = Arc::clone(&api);
        async move {
            let Credentials {
                api_key: key,
                token,
                peer,
            } = creds;
            let need = match need {
                Access::OwnNodeOr(_) if key.is_some() => Access::Node,
                Access::OwnNodeOr(role) => Access::AtLeast(role),
                other => other,
            };
            match need {
                Access::OwnNodeOr(_) => unreachable!("mapped above"),
                Access::Public => Ok(Principal::User(Claims {
                    sub: "anonymous".into(),
                    role: Role::Observer,
                    iat: 0,
                    exp: 0,
                })),
                Access::Node => {
                    let key = key.ok_or_else(|| {
                        refuse(ApiError::AuthenticationFailed(
                            "X-API-Key is required".into(),
                        ))
                    })?;
                    let ip = peer.map(|p| p.0.ip());
                    // A key checked before passes without a turn; a new one waits for
                    // its address's turn, and is refused without a check once that
                    // address has failed its share this minute.
                    let _turn = match ip {
                        Some(ip) if !api.registry.verified(&key) => {
                            let turn = api.checks.turn(ip).await;
                            if let Some(left) = api.failed_auth.blocked(ip) {
                                return Err(refuse(blocked(left)));
                            }
                            Some(turn)
                        }
                        _ => None,
                    };
                    // argon2 is slow by design: off the async threads.
                    let reg = Arc::clone(&api.registry);
                    let node = tokio::task::spawn_blocking(move || reg.authenticate(&key))
                        .await
                        .map_err(|e| refuse(ApiError::Internal(e.to_string())))?
                        .map_err(|e| {
                            if let Some(ip) = ip {
                                api.failed_auth.failed(ip);
                            }
                            refuse(ApiError::AuthenticationFailed(e.to_string()))
                        })?;
                    Ok(Principal::Node(node))
                }
                Access::AtLeast(role) => {
                    let token = token.ok_or_else(|| {
                        refuse(ApiError::AuthenticationFailed(
                            "a bearer token is required (Authorization: Bearer …)".into(),
                        ))
                    })?;
                    let claims = api
                        .jwt
                        .verify(&token)
                        .map_err(|e| refuse(ApiError::AuthenticationFailed(e.to_string())))?;
                    if rank(claims.role) < rank(role) {
                        return Err(refuse(ApiError::PermissionDenied(format!(
                            "role {:?} may not do this (needs {role:?})",
                            claims.role
                        ))));
                    }
                    Ok(Principal::User(claims))
                }
            }
        }
    })
}

/// The answer to an address that failed its share of key checks, `left` before its minute is
/// over (rounded up: a client that waits this long is let in).
fn blocked(left: std::time::Duration) -> ApiError {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    ApiError::RateLimitExceeded {
        message: format!(
            "more than {} failed key checks from this address in a minute; retry in {secs} s",
            kaiabc_connectors::address_limits::FAILED_PER_MINUTE
        ),
        retry_after_seconds: secs,
    }
}

/// The `token` parameter of a raw query string (JWTs need no percent-decoding).
fn query_token(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// Takes a request from its credential's bucket for the request's class (requests without a
/// credential are not limited: they can only reach the public endpoints).
pub(super) fn rate_limit(
    api: Arc<Api>,
) -> impl Filter<Extract = (Option<Verdict>,), Error = Rejection> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(credentials())
        .and_then(
            move |method: warp::http::Method, path: warp::path::FullPath, creds: Credentials| {
                let api = Arc::clone(&api);
                async move {
                    // The credential `authorise` checks, not merely the header that came: a
                    // junk `Authorization` beside a `?token=` must not open a new bucket.
                    let Some(cred) = creds.api_key.or(creds.token) else {
                        return Ok(None);
                    };
                    // A path no endpoint serves is answered 404 or 405, but still costs a
                    // query: probing must not be free.
                    let class = super::endpoint(method.as_str(), path.as_str())
                        .map_or(Class::Query, |e| e.class);
                    let v = api.limiter.check(class, &cred, Instant::now());
                    if v.allowed {
                        Ok(Some(v))
                    } else {
                        Err(warp::reject::custom(Limited(v)))
                    }
                }
            },
        )
}

/// A request over its rate limit.
#[derive(Debug)]
pub(super) struct Limited(pub(super) Verdict);

impl warp::reject::Reject for Limited {}

pub(super) fn rate_headers(h: &mut warp::http::HeaderMap, v: &Verdict) {
    let mut set = |name: &'static str, value: u64| {
        if let Ok(v) = warp::http::HeaderValue::from_str(&value.to_string()) {
            h.insert(name, v);
        }
    };
    set("x-ratelimit-limit", u64::from(v.limit));
    set("x-ratelimit-remaining", u64::from(v.remaining));
    // The contract's reset is a time (Unix seconds) at which the bucket is full again.
    set(
        "x-ratelimit-reset",
        (Utc::now().timestamp().max(0) as u64).saturating_add(v.reset_seconds),
    );
}
