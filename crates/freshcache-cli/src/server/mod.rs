//! `freshcache serve`: the HTTP API over a [`Cache`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use axum::Json;
use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use freshcache::config::SourceConfig;
use freshcache::fetch::{FetchOptions, Fetcher};
use freshcache::maintenance::{CleanupOptions, Schedule};
use freshcache::metrics::{Breach, ThresholdWatch};
use freshcache::warm::WarmStatus;
use freshcache::{Cache, Codec, Error, Key, KeyPrefix, Lookup, ReadOptions, Value};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;

use crate::{CmdResult, Failure};

mod batch;
mod request;
mod routes;
mod tasks;
mod ui;

use request::ApiError;
use routes::*;
use tasks::{cleanup_loop, source_loop, threshold_loop};
use ui::FeedBoard;

/// How often counters and access times are written to the index.
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// Window over which alert thresholds are checked.
const WATCH_EVERY: Duration = Duration::from_secs(60);
/// Largest JSON request body (`/v1/invalidate`, `/v1/freshness/check`).
const JSON_BODY_LIMIT: u64 = 1 << 20;
/// Most memory reserved up front for a body that announces its length; more grows as it comes.
const PREALLOCATE_MAX: u64 = 1 << 20;

#[derive(Clone)]
struct AppState {
    cache: Cache,
    token: Option<Arc<str>>,
    registry: Arc<Registry>,
    /// The feeds' latest outcomes, for the console.
    feeds: FeedBoard,
}

type ApiResult<T> = Result<T, ApiError>;

/// The API routes over `cache`; `feeds` is where the feed loops record their outcomes.
///
/// Handlers read request bodies themselves ([`read_body`]), after authorization and with the
/// route's own limit, so no body extractor (and no global body limit) is involved.
fn router(cache: Cache, feeds: FeedBoard) -> Router {
    let token = cache.config().server.auth_token.as_deref().map(Arc::from);
    let mut registry = Registry::default();
    freshcache::metrics::register(&mut registry, &cache);
    let state = AppState {
        cache,
        token,
        registry: Arc::new(registry),
        feeds,
    };
    Router::new()
        .route(
            "/v1/cache/{key}",
            get(get_entry).put(put_entry).delete(delete_entry),
        )
        .route("/v1/batch", post(batch::batch))
        .route("/v1/invalidate", post(invalidate))
        .route("/v1/freshness/check", post(freshness_check))
        .route("/v1/freshness/audit/{run_id}", get(freshness_audit))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/ui", get(ui::page))
        .route("/ui/console.js", get(ui::script))
        .route("/ui/console.css", get(ui::style))
        .route("/ui/data", get(ui::data))
        .route("/ui/audit/{run_id}", get(ui::audit))
        .route("/ui/login", post(ui::login))
        .with_state(state)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// Runs the service until SIGTERM / Ctrl-C.
pub(crate) async fn serve(cache: Cache, listen: Option<SocketAddr>) -> CmdResult {
    let addr = listen.unwrap_or(cache.config().server.listen);
    if !addr.ip().is_loopback() && cache.config().server.auth_token.is_none() {
        return Err(Failure::Invalid(anyhow!(
            "refusing to listen on non-loopback {addr} without server.auth_token \
             (or FRESHCACHE_SERVER__AUTH_TOKEN)"
        )));
    }
    let schedule = Schedule::from_config(cache.config())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::Runtime(anyhow!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    tracing::info!(%local, cache_dir = %cache.config().cache_dir.display(), "freshcache serving");
    println!("freshcache listening on http://{local}");

    let flusher = {
        let cache = cache.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = cache.flush() {
                    tracing::warn!(error = %e, "could not persist counters");
                }
            }
        })
    };
    let cleaner = tokio::spawn(cleanup_loop(cache.clone(), schedule));
    let watcher = tokio::spawn(threshold_loop(cache.clone()));
    let fetcher = Fetcher::new(FetchOptions::default())?;
    let board = FeedBoard::new(&cache.config().sources);
    let feeds: Vec<_> = cache
        .config()
        .sources
        .iter()
        .map(|s| {
            tokio::spawn(source_loop(
                cache.clone(),
                fetcher.clone(),
                s.clone(),
                board.clone(),
            ))
        })
        .collect();
    let warmer = {
        let (cache, fetcher) = (cache.clone(), fetcher.clone());
        tokio::spawn(async move {
            let items = cache.config().warm.clone();
            if items.is_empty() {
                return;
            }
            match cache.warm(&items, &fetcher, |_, _, _| {}).await {
                Ok(r) => tracing::info!(
                    fresh = r.count(WarmStatus::Fresh),
                    loaded = r.count(WarmStatus::Loaded),
                    failed = r.count(WarmStatus::Failed),
                    "start-up warming done"
                ),
                Err(e) => tracing::warn!(error = %e, "start-up warming failed"),
            }
        })
    };
    let result = axum::serve(listener, router(cache.clone(), board))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    flusher.abort();
    cleaner.abort();
    watcher.abort();
    feeds.iter().for_each(tokio::task::JoinHandle::abort);
    warmer.abort();
    if let Err(e) = cache.flush() {
        tracing::warn!(error = %e, "could not persist counters at shutdown");
    }
    result.map_err(|e| Failure::Runtime(anyhow!("server error: {e}")))
}
