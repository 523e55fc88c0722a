//! `GET /docs`: interactive API documentation (RapiDoc 9.3.8, MIT, built into the binary from
//! `pipeline/assets/`) reading `/v1/openapi.json`; nothing is loaded from another site.

use warp::Reply;

/// RapiDoc's script, gzip-compressed as its package ships it.
const RAPIDOC_GZ: &[u8] = include_bytes!("../../assets/rapidoc-9.3.8-min.js.gz");

/// The page: RapiDoc over our OpenAPI document, with the system's fonts (its own default font
/// would be fetched from another site) and a bearer-token field for "try it".
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>KaiABC Stream API</title>
<script type="module" src="/docs/rapidoc-min.js"></script>
</head>
<body>
<rapi-doc spec-url="/v1/openapi.json" render-style="read" show-header="false"
  allow-authentication="true" allow-server-selection="false" theme="dark"
  regular-font="system-ui, sans-serif" mono-font="ui-monospace, monospace"
  heading-text="KaiABC Stream API"></rapi-doc>
</body>
</html>
"#;

/// What the documentation may load: its own script and this origin's API, nothing else.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

fn locked(resp: warp::reply::Response) -> warp::reply::Response {
    super::dashboard::locked(resp, warp::http::HeaderValue::from_static(DOCS_CSP))
}

/// `GET /docs`.
pub(super) fn page() -> warp::reply::Response {
    locked(warp::reply::html(PAGE).into_response())
}

/// `GET /docs/rapidoc-min.js` (sent compressed; every browser takes gzip).
pub(super) fn script() -> warp::reply::Response {
    let mut resp = warp::reply::Response::new(RAPIDOC_GZ.into());
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        warp::http::HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        "content-encoding",
        warp::http::HeaderValue::from_static("gzip"),
    );
    h.insert(
        "cache-control",
        warp::http::HeaderValue::from_static("public, max-age=86400"),
    );
    locked(resp)
}
