//! The explorer page served at `GET /`: three static files embedded in the binary (no build
//! step). The page is plain JavaScript that polls the JSON API of `docs/api.md` with relative
//! URLs and redraws: chain, validators, peers, tasks with their leaderboards, the champion, an
//! "explain my reward" view per account and a chart of payouts per account.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// The page.
const INDEX_HTML: &str = include_str!("index.html");
/// The script that fetches the API and draws the page.
const APP_JS: &str = include_str!("app.js");
/// The page's style sheet.
const STYLE_CSS: &str = include_str!("style.css");

/// `GET /`, `GET /app.js` and `GET /style.css`.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }))
}

/// One embedded file with its content type; `no-cache` so a browser picks up a new node's page.
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
}
