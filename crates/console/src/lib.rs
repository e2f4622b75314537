//! Sluice's web console: the page at `/` and its assets under `/console/`.
//!
//! It owns only static files: plain HTML, CSS and ES modules, embedded in
//! the binary at compile time, so serving the console needs no files on disk
//! and no build step outside cargo. Everything the console shows it asks of
//! the same origin's API (SPEC 6 and 8) from the browser, with the operator
//! token that the person signed in with, kept in the tab's session storage.
//!
//! It must never hold state, talk to PostgreSQL or NATS, or see a token: it
//! serves the same bytes to everyone, and the API decides what they may do.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};

/// One embedded file and the route it is served on.
struct Asset {
    route: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// Every file of the console. A new module must be listed here too, or the
/// browser's import of it gets the API's 404.
const ASSETS: &[Asset] = &[
    Asset {
        route: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../assets/index.html"),
    },
    Asset {
        route: "/console/console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../assets/console.css"),
    },
    Asset {
        route: "/console/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/app.js"),
    },
    Asset {
        route: "/console/api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/api.js"),
    },
    Asset {
        route: "/console/dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/dom.js"),
    },
    Asset {
        route: "/console/fields.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/fields.js"),
    },
    Asset {
        route: "/console/tokens.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/tokens.js"),
    },
    Asset {
        route: "/console/view.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/view.js"),
    },
    Asset {
        route: "/console/connector.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/connector.js"),
    },
    Asset {
        route: "/console/limits.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/limits.js"),
    },
    Asset {
        route: "/console/audit.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../assets/audit.js"),
    },
];

/// Same origin only: the console runs no inline script or style and talks
/// to no other host, so an injected string can neither run nor phone home.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The console's routes: `GET /` and `GET /console/...`. Stateless, so it
/// merges into any service's router.
pub fn router() -> Router {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.route, serve(asset))
    })
}

fn serve(asset: &'static Asset) -> MethodRouter {
    get(move || async move { asset_response(asset) }).fallback(|| async { method_not_allowed() })
}

fn asset_response(asset: &Asset) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            // The files change with the binary; revalidating is cheap and
            // keeps a browser from mixing modules of two versions.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            ),
        ],
        asset.body,
    )
        .into_response()
}

/// The API's problem+json shape, so that no route of the process answers
/// with a bare 405.
fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        )],
        r#"{"type":"urn:sluice:problem:method_not_allowed","title":"Method Not Allowed","status":405,"detail":"the console only answers GET","code":"method_not_allowed"}"#,
    )
        .into_response()
}
