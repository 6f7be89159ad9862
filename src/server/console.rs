//! The operator console: one static page on the admin listener (`GET /console`, and `/`
//! redirecting there) that shows every route's flags, live figures, shadow diffs and the audit,
//! and steers the migration through the admin API.
//!
//! The page, its script and its style sheet are compiled into the binary (`console/` at the
//! repository root) and hold no data, so they are served without a token; everything the page
//! shows it fetches from `/admin/...` with the admin token the operator typed, kept in the tab's
//! `sessionStorage` and sent as `Authorization: Bearer` (never a cookie, so there is no CSRF
//! surface). Every answer carries a strict Content-Security-Policy — same-origin scripts, styles
//! and fetches only, nothing inline — so a gateway string that slipped into the page as markup
//! still could not run.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::server::Endpoint;
use crate::server::openapi::{Answer, Auth, Doc};

/// Where the console lives on the admin listener.
const CONSOLE_PATH: &str = "/console";

/// Same origin for everything; no inline script or style (the page has none), no plugins, no
/// `<base>` rewriting, no form posts, no framing by another page.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("../../console/index.html");
const CONSOLE_JS: &str = include_str!("../../console/console.js");
const CONSOLE_CSS: &str = include_str!("../../console/console.css");

/// The console's endpoints, among the admin listener's that need no token: the assets hold no
/// data.
pub(crate) fn endpoints() -> Vec<Endpoint> {
    let asset = |path: &str, media_type, handler, summary| {
        let doc = Doc::new(summary, Answer::Asset(media_type), Auth::None);
        Endpoint::new(Method::GET, path, handler, doc)
    };
    vec![
        Endpoint::new(
            Method::GET,
            "/",
            get(root),
            Doc::new("redirects to the console", Answer::Redirect, Auth::None),
        ),
        asset(
            CONSOLE_PATH,
            "text/html",
            get(index),
            "the operator console's page",
        ),
        asset(
            "/console/console.js",
            "text/javascript",
            get(script),
            "the console's script",
        ),
        asset(
            "/console/console.css",
            "text/css",
            get(style),
            "the console's style sheet",
        ),
    ]
}

/// `GET /console`.
async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /console/console.js`.
async fn script() -> Response {
    asset("text/javascript; charset=utf-8", CONSOLE_JS)
}

/// `GET /console/console.css`.
async fn style() -> Response {
    asset("text/css; charset=utf-8", CONSOLE_CSS)
}

/// `GET /`: the admin listener's front door is the console.
async fn root() -> Redirect {
    Redirect::to(CONSOLE_PATH)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (CONTENT_TYPE, content_type),
        (CONTENT_SECURITY_POLICY, CSP),
        (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (REFERRER_POLICY, "no-referrer"),
        (X_FRAME_OPTIONS, "DENY"),
        // The assets change with the binary; a cached copy could outlive an upgrade.
        (CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
