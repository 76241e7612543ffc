//! Connecting to Redis: TLS with a private CA and an ACL user, and start-up errors that keep
//! their kind.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is needed (Debian package openssl; ./scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_and_an_acl_user_works_and_a_wrong_ca_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    for (key, crt, cn) in [
        ("ca.key", "ca.crt", "fc-test-ca"),
        ("other.key", "other.crt", "other-ca"),
    ] {
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                key,
                "-out",
                crt,
                "-days",
                "2",
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
    }
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );

    let server = RedisServer::start_tls(d);
    let port = server.port;
    let acl = server.cli(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">app-secret",
        "~*",
        "&*",
        "+@all",
    ]);
    assert!(acl.contains("OK"));

    let url = format!("rediss://app:app-secret@localhost:{port}");
    let with_ca = |ca: &str| format!("    tls_ca_file: \"{}\"\n", d.join(ca).display());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Cache::builder(config(da.path(), &url, &with_ca("ca.crt")))
        .connect()
        .await
        .unwrap();
    let b = Cache::builder(config(db.path(), &url, &with_ca("ca.crt")))
        .connect()
        .await
        .unwrap();
    a.set(&odds(1), "over tls").await.unwrap();
    let hit = b.get(&odds(1)).await.unwrap().fresh().unwrap();
    assert_eq!(
        (hit.source, hit.value().as_ref()),
        (REDIS, &b"over tls"[..])
    );

    // A server certificate from another CA is refused, with a message about it.
    let dc = tempfile::tempdir().unwrap();
    let err = Cache::builder(config(dc.path(), &url, &with_ca("other.crt")))
        .connect()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Redis { .. }), "{err:?}");
    assert!(!text.contains("app-secret"), "{text}");
    assert!(
        text.to_lowercase().contains("certificate") || text.to_lowercase().contains("tls"),
        "{text}"
    );
    // The wrong ACL password is refused too.
    let bad = format!("rediss://app:nope@localhost:{port}");
    let err = Cache::builder(config(dc.path(), &bad, &with_ca("ca.crt")))
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Redis { .. }) && !err.to_string().contains("nope"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_start_up_errors_keep_their_kind_and_only_transient_ones_say_retry() {
    let redis = RedisServer::start_with(&["--requirepass", "right-horse"]);
    let dir = tempfile::tempdir().unwrap();
    // A wrong password will not fix itself: not transient.
    let url = format!("redis://:wrong-battery@127.0.0.1:{}", redis.port);
    let err = Cache::builder(config(dir.path(), &url, ""))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        err.redis_kind(),
        Some(freshcache::RedisErrorKind::Auth),
        "{err:?}"
    );
    assert!(!err.is_transient(), "{err:?}");
    assert_eq!(err.class(), freshcache::ErrorClass::Redis);
    assert_eq!(
        (err.class().http_status(), err.class().exit_code()),
        (503, 3)
    );

    // Nothing listening: refused, and worth a retry.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("redis://127.0.0.1:{port}");
    let err = Cache::builder(config(dir.path(), &url, ""))
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(err.redis_kind(), Some(freshcache::RedisErrorKind::Refused)),
        "{err:?}"
    );
    assert!(err.is_transient(), "{err:?}");
}
