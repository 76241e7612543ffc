//! Batches through the service (`POST /v1/batch`) and the command line (`set --jsonl`).

use reqwest::StatusCode;

use crate::support::{Api, Env, stderr, stdout};

#[tokio::test]
async fn the_batch_route_stores_all_or_names_every_bad_item() {
    let env = Env::new();
    let server = env.serve();
    let api = Api::new(&server);
    let body = serde_json::json!({
        "set": [
            {"key": "odds:g1:1700000000", "value": "1.91"},
            {"key": "odds:g2:1700000000", "value": {"home": 1.5}, "ttl": "30s"},
        ],
        "get": ["odds:g1:1700000000", "odds:g2:1700000000", "odds:none:1"],
    });
    let r = api.post("/v1/batch", body.to_string()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["stored"], 2);
    assert_eq!(v["values"][0]["value"], "1.91");
    assert_eq!(v["values"][1]["value"]["home"], 1.5);
    assert!(v["values"][1]["remaining_seconds"].as_f64().unwrap() <= 30.0);
    assert_eq!(v["values"][2]["found"], false);
    // Each value is an ordinary entry.
    let r = api.get("/v1/cache/odds:g2:1700000000").await;
    assert_eq!(r.headers()["content-type"], "application/json");

    // One unknown data type and one TTL the type refuses: both named, nothing written.
    let body = serde_json::json!({
        "set": [
            {"key": "odds:g3:1700000000", "value": "2.0"},
            {"key": "weather:x:1", "value": "sunny"},
            {"key": "odds:g4:1700000000", "value": "2.0", "ttl": "1h"},
        ],
    });
    let r = api.post("/v1/batch", body.to_string()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["error"], "invalid_batch");
    let refused: Vec<u64> = v["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(refused, [1, 2], "{v}");
    assert_eq!(
        api.get("/v1/cache/odds:g3:1700000000").await.status(),
        StatusCode::NOT_FOUND
    );
}

#[test]
fn set_jsonl_stores_a_file_in_one_batch_and_refuses_it_whole_on_a_bad_line() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jsonl");
    let lines: String = (0..50)
        .map(|i| format!("{{\"key\": \"odds:g{i}:1700000000\", \"value\": {i}}}\n"))
        .collect();
    std::fs::write(&good, lines).unwrap();
    let out = env.run(&["set", "--jsonl", good.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["stored"], 50);
    let out = env.run(&["get", "odds:g7:1700000000"]);
    assert_eq!(stdout(&out), "7");

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"key\": \"odds:h1:1700000000\", \"value\": 1}\n{\"key\": \"odds:h2\", \"value\": 2}\n",
    )
    .unwrap();
    let out = env.run(&["set", "--jsonl", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("#1"), "{}", stderr(&out));
    let out = env.run(&["get", "odds:h1:1700000000"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "nothing of a refused batch is stored"
    );
}
