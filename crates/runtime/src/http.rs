//! HTTP pieces every service shares: problem+json errors (RFC 9457), the
//! bearer token extractor, the health and metrics routes, request ids and
//! tracing, and serving with graceful shutdown.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::FutureExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer: `application/problem+json` with `type`, `title`,
/// `status`, `detail` and a stable snake_case `code` (SPEC 4).
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// Members added to the body, such as `errors` for validation failures.
    pub extra: Map<String, Value>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            code,
            detail: detail.into(),
            extra: Map::new(),
            headers: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Problem {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Problem {
        self.headers.push((name, value));
        self
    }

    /// 401 with the `WWW-Authenticate` challenge SPEC 3 asks for.
    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    pub fn forbidden() -> Problem {
        Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token does not grant access to this resource",
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 503 with `Retry-After`, for a dependency that does not answer.
    pub fn unavailable(
        code: &'static str,
        detail: impl Into<String>,
        retry_after_secs: u32,
    ) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
            .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after_secs))
    }

    /// The opaque answer to anything unexpected; the cause goes to the log.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Problem {
        let mut chain = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            chain.push_str(": ");
            chain.push_str(&cause.to_string());
            source = cause.source();
        }
        tracing::error!(error = %chain, "internal error");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "something went wrong on our side; it has been logged",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let mut body = Map::new();
        body.insert(
            "type".into(),
            format!("urn:sluice:problem:{}", self.code).into(),
        );
        body.insert("title".into(), title.into());
        body.insert("status".into(), self.status.as_u16().into());
        body.insert("detail".into(), self.detail.into());
        body.insert("code".into(), self.code.into());
        body.extend(self.extra);
        let mut response = (self.status, Json(Value::Object(body))).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}

/// The token of an `Authorization: Bearer` header. Missing or malformed:
/// 401. Which token grants what is for each service to decide.
pub struct BearerToken(pub String);

impl<S: Send + Sync> FromRequestParts<S> for BearerToken {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| Problem::unauthorized("an Authorization: Bearer token is required"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header must be 'Bearer <token>'")
            })?;
        Ok(BearerToken(token.to_owned()))
    }
}

/// The process-wide Prometheus recorder; the all-in-one binary and tests run
/// several services in one process, and they share it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (by an embedding
            // program); metrics then go there and ours renders empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// `/healthz` and `/metrics`; each service adds its own `/readyz` and
/// `/openapi.json`.
pub fn operational_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let handle = metrics_handle();
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        handle.render(),
                    )
                }
            }),
        )
}

/// The answer of `/readyz`, from the checks a service runs.
pub fn readiness(checks: &[(&str, bool)]) -> Response {
    let ready = checks.iter().all(|(_, ok)| *ok);
    let body: Map<String, Value> = checks
        .iter()
        .map(|(name, ok)| {
            (
                (*name).to_owned(),
                Value::from(if *ok { "ok" } else { "unavailable" }),
            )
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(Value::Object(body))).into_response()
}

/// Readiness checks of a service, run on each `/readyz`.
pub type ReadinessCheck =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, Vec<(&'static str, bool)>> + Send + Sync>;

/// The whole router a process serves: the API routes, `/openapi.json`,
/// `/readyz`, `/healthz`, `/metrics`, problem+json for unknown routes, all
/// instrumented. Each service's binary and the all-in-one binary use it.
pub fn app(api: Router, openapi: &impl serde::Serialize, ready: ReadinessCheck) -> Router {
    let openapi = serde_json::to_value(openapi).unwrap_or_default();
    let routes = Router::new()
        .route("/openapi.json", get(move || async move { Json(openapi) }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move { readiness(&ready().await) }
            }),
        )
        .merge(operational_routes());
    instrument(
        api.merge(routes)
            .method_not_allowed_fallback(method_not_allowed)
            .fallback(no_such_route),
    )
}

/// A service as a process serves it. Each service crate's `Service`
/// implements it, so its own binary and the all-in-one binary run it alike
/// with [`run`].
pub trait Served: Send + Sync + 'static {
    /// The API routes, state applied; [`app`] adds the operational ones.
    fn router(&self) -> Router;
    fn openapi(&self) -> utoipa::openapi::OpenApi;
    fn readiness(&self) -> impl Future<Output = Vec<(&'static str, bool)>> + Send;
    /// Resolves once background work has wound down after shutdown.
    fn stopped(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Serves `service` on `listener` until `shutdown`, lets in-flight requests
/// finish (up to `grace`), then waits for the service's background work.
pub async fn run<S: Served>(
    listener: TcpListener,
    service: Arc<S>,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let checked = service.clone();
    let ready: ReadinessCheck = Arc::new(move || {
        let service = checked.clone();
        async move { service.readiness().await }.boxed()
    });
    let router = app(service.router(), &service.openapi(), ready);
    tracing::info!(address = %listener.local_addr()?, "listening");
    serve(listener, router, shutdown, grace).await?;
    service.stopped().await;
    Ok(())
}

/// A started service with its listener bound: what each service crate's
/// `Application` wraps, so binding, `local_addr` and `run` are written once.
pub struct Bound<S> {
    listener: TcpListener,
    local_addr: std::net::SocketAddr,
    service: S,
    shutdown: CancellationToken,
    grace: Duration,
}

impl<S: Served> Bound<S> {
    /// Binds `listen` (from `SLUICE_LISTEN`) for `service`, which shuts down
    /// on `shutdown` and lets in-flight requests run up to `grace`.
    pub async fn bind(
        listen: std::net::SocketAddr,
        service: S,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> anyhow::Result<Bound<S>> {
        use anyhow::Context as _;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen} (SLUICE_LISTEN)"))?;
        let local_addr = listener.local_addr()?;
        Ok(Bound {
            listener,
            local_addr,
            service,
            shutdown,
            grace,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    /// Serves until shutdown; see [`run`].
    pub async fn run(self) -> std::io::Result<()> {
        run(
            self.listener,
            Arc::new(self.service),
            self.shutdown,
            self.grace,
        )
        .await
    }
}

/// Declares the bearer scheme of SPEC 3 in an OpenAPI document.
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not answer this method",
    )
}

/// Problem+json for routes that do not exist.
pub async fn no_such_route() -> Problem {
    Problem::not_found("no such route")
}

/// Wraps a service's router with what every request gets: a request id
/// (taken from `X-Request-Id` or made), a trace span naming the matched
/// route and that id, and request metrics.
pub fn instrument(router: Router) -> Router {
    router
        .layer(middleware::from_fn(record_metrics))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or(request.uri().path(), MatchedPath::as_str);
                let request_id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %request.method(), route, request_id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("sluice_http_requests_total", &labels).increment(1);
    metrics::histogram!("sluice_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Serves `router` until `shutdown` fires, then lets in-flight requests
/// finish (up to `grace`) before returning.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    // ConnectInfo: the client address that failed authentication is
    // throttled by (`crate::throttle`).
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    tokio::select! {
        result = server => result,
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("requests still running after the grace period; stopping anyway");
            Ok(())
        }
    }
}

/// Fires the returned token on SIGTERM or Ctrl-C.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        fire.cancel();
    });
    token
}
