//! The dashboard: one static page built into the binary, served with a policy that lets only
//! its own script run and no other site frame it.

use warp::Reply;

/// The dashboard's Content-Security-Policy: its own script (by its SHA-256, so no other inline
/// script runs) and inline style, data from this origin only (REST and WebSocket), no frames,
/// plugins or forms elsewhere.
static DASHBOARD_CSP: std::sync::LazyLock<warp::http::HeaderValue> =
    std::sync::LazyLock::new(|| {
        use base64::Engine;
        use sha2::Digest;
        let script = DASHBOARD
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map_or("", |(s, _)| s);
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
        let csp = format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
             img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        );
        warp::http::HeaderValue::from_str(&csp).expect("the policy is ASCII")
    });

/// The dashboard page (`pipeline/assets/dashboard.html`): HTML, CSS and script in one file.
const DASHBOARD: &str = include_str!("../../assets/dashboard.html");

/// A page's answer locked down: its content policy, no framing by other sites (clickjacking),
/// no type sniffing. The dashboard and the API documentation share it.
pub(super) fn locked(
    mut resp: warp::reply::Response,
    csp: warp::http::HeaderValue,
) -> warp::reply::Response {
    let h = resp.headers_mut();
    h.insert("content-security-policy", csp);
    h.insert(
        "x-frame-options",
        warp::http::HeaderValue::from_static("DENY"),
    );
    h.insert(
        "x-content-type-options",
        warp::http::HeaderValue::from_static("nosniff"),
    );
    resp
}

/// `GET /`: the page, public like any web page (it asks for a token and calls the API with it).
pub(super) fn page() -> warp::reply::Response {
    // Its script and style are inline in the page; it talks to this origin only.
    let mut resp = locked(
        warp::reply::html(DASHBOARD).into_response(),
        DASHBOARD_CSP.clone(),
    );
    let h = resp.headers_mut();
    h.insert(
        "referrer-policy",
        warp::http::HeaderValue::from_static("no-referrer"),
    );
    resp
}
