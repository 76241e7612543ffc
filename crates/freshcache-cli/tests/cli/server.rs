//! The HTTP service over a real socket on 127.0.0.1.

use std::time::Duration;

use reqwest::StatusCode;

use crate::support::{Api, Env};

#[tokio::test]
async fn put_then_get_returns_the_value_with_cache_headers() {
    let env = Env::new();
    let server = env.serve();
    let api = Api::new(&server);
    let path = "/v1/cache/odds:g1:1700000000";
    let r = api
        .client
        .put(api.url(path))
        .header("content-type", "application/json")
        .body("{\"home\":1.91}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["data_type"], "odds_data");

    let r = api.get(path).await;
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert_eq!(h["x-cache-tier"], "memory");
    assert_eq!(h["content-type"], "application/json");
    assert!(h["age"].to_str().unwrap().parse::<u64>().unwrap() <= 1);
    let expires = httpdate::parse_http_date(h["expires"].to_str().unwrap()).unwrap();
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left > Duration::from_secs(55) && left <= Duration::from_secs(60),
        "{left:?}"
    );
    assert_eq!(r.bytes().await.unwrap(), "{\"home\":1.91}");
}

#[tokio::test]
async fn bad_keys_are_400_misses_404_and_big_bodies_413() {
    let env = Env::new();
    let server = env.serve();
    let api = Api::new(&server);
    for key in ["news:..:x", "weather:x:1", "odds:g1", "news:a%20b:c"] {
        let r = api.put(&format!("/v1/cache/{key}"), "v").await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{key}");
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert!(v["error"].is_string() && v["message"].is_string());
        let r = api.get(&format!("/v1/cache/{key}")).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{key}");
    }
    let r = api.get("/v1/cache/odds:nothing:1").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // On a client of its own: the server answers before reading the body and then closes the
    // connection, and a pooled client could send the next request on it as it closes (HTTP/1.1
    // leaves that retry to the client; the request would fail with an incomplete message).
    let r = reqwest::Client::new()
        .put(server.url("/v1/cache/odds:g1:1"))
        .body(vec![0u8; 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = api.put("/v1/cache/odds:g1:1?ttl=2h", "v").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let stats: serde_json::Value = api.json("/v1/stats").await;
    let disk = stats["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == "disk")
        .unwrap();
    assert_eq!(disk["entries"], 0, "a refused write stored something");
}

#[tokio::test]
async fn delete_and_prefix_invalidation() {
    let env = Env::new();
    let server = env.serve();
    let api = Api::new(&server);
    for k in ["news:espn:1", "news:espn:2", "news:bbc:1", "odds:g1:1"] {
        let r = api.put(&format!("/v1/cache/{k}"), "v").await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = api.delete("/v1/cache/odds:g1:1").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = api.delete("/v1/cache/odds:g1:1").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = api
        .post("/v1/invalidate", "{\"prefix\": \"news:espn:\"}")
        .await;
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["removed"], 2);
    assert_eq!(
        api.get("/v1/cache/news:espn:1").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get("/v1/cache/news:bbc:1").await.status(),
        StatusCode::OK
    );
    let r = api.post("/v1/invalidate", "{\"nope\": 1}").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn health_readiness_and_stats() {
    let env = Env::new();
    let server = env.serve();
    let api = Api::new(&server);
    assert_eq!(api.get("/healthz").await.text().await.unwrap(), "ok");
    let r: serde_json::Value = api.json("/readyz").await;
    assert_eq!(r["status"], "ready");
    assert_eq!(r["tiers"]["disk"], "up");
    assert_eq!(r["tiers"]["redis"], "disabled");
    api.put("/v1/cache/odds:g1:1", "v").await;
    api.get("/v1/cache/odds:g1:1").await;
    api.get("/v1/cache/odds:g2:1").await;
    let s: serde_json::Value = api.json("/v1/stats").await;
    let odds = s["data_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["data_type"] == "odds_data")
        .unwrap();
    assert_eq!(
        (odds["hits"].as_u64(), odds["misses"].as_u64()),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn mutating_routes_need_the_bearer_token_when_one_is_set() {
    let env = Env::with_extra("server:\n  auth_token: \"s3cret\"\n");
    let server = env.serve();
    let api = Api::new(&server);
    let path = "/v1/cache/odds:g1:1";
    let url = api.url(path);
    assert_eq!(api.put(path, "v").await.status(), StatusCode::UNAUTHORIZED);
    let wrong = api
        .client
        .put(&url)
        .bearer_auth("s3cre")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.get(path).await.status(), StatusCode::NOT_FOUND);
    let ok = api
        .client
        .put(&url)
        .bearer_auth("s3cret")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    assert_eq!(api.get(path).await.status(), StatusCode::OK);
    assert_eq!(api.delete(path).await.status(), StatusCode::UNAUTHORIZED);
    let r = api.post("/v1/invalidate", "{\"all\": true}").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sigterm_stops_gracefully_and_a_restart_serves_from_disk() {
    let env = Env::new();
    let server = env.serve();
    let api = Api::new(&server);
    let r = api
        .put("/v1/cache/llm:features:c1:2026-11-24", vec![3u8; 100_000])
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");

    let server = env.serve();
    let api = Api::new(&server);
    let r = api.get("/v1/cache/llm:features:c1:2026-11-24").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-cache-tier"], "disk");
    assert_eq!(r.bytes().await.unwrap().len(), 100_000);
    let r = api.get("/v1/cache/llm:features:c1:2026-11-24").await;
    assert_eq!(
        r.headers()["x-cache-tier"],
        "memory",
        "a disk hit is promoted"
    );
}
