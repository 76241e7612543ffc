//! The configuration file as written: serde types that mirror `runtime.yml`, and the
//! parsers for its durations and sizes. [`super::Config::from_raw`] validates them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::CacheControl;
use crate::datatype::{Placement, TtlOverride};

/// A lifetime as written in the file: a number of hours, or a duration string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlValue(pub Duration);

impl<'de> Deserialize<'de> for TtlValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TtlValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of hours (e.g. 24, 0.5) or a duration such as \"60s\"")
            }
            fn visit_f64<E: de::Error>(self, h: f64) -> std::result::Result<TtlValue, E> {
                hours(h).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, h: u64) -> std::result::Result<TtlValue, E> {
                hours(h as f64).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, h: i64) -> std::result::Result<TtlValue, E> {
                hours(h as f64).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<TtlValue, E> {
                parse_duration(s).map(TtlValue).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

fn hours(h: f64) -> std::result::Result<TtlValue, String> {
    if !h.is_finite() || h <= 0.0 {
        return Err(format!("ttl must be a positive number of hours, got {h}"));
    }
    // Milliseconds are the stored precision; 0.017 h is exactly 61.2 s.
    let ms = (h * 3_600_000.0).round();
    if !(1.0..=100.0 * 365.0 * 86_400_000.0).contains(&ms) {
        return Err(format!("ttl of {h} hours is outside 1ms..100 years"));
    }
    Ok(TtlValue(Duration::from_millis(ms as u64)))
}

/// Parses `60s`, `24h`, `1h 30m`, `250ms`; a bare number is refused to avoid unit guesses.
///
/// # Errors
/// A message saying what was expected.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like \"60s\" or \"24h\": {e}"))?;
    if d < Duration::from_millis(1) {
        return Err(format!("duration {s:?} is shorter than 1ms"));
    }
    Ok(d)
}

/// A byte size: a plain number of bytes or a string such as `64KiB`, `16MB`, `1.5GiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a size such as \"64KiB\" or \"10GB\"")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("size must not be negative, got {n}")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<ByteSize, E> {
                parse_size(s).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses a size string: number plus `B`, `KB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`, `TB`, `TiB`.
///
/// # Errors
/// A message saying what was expected.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like \"64KiB\" or \"10GB\""))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "kib" | "k" => 1024.0,
        "mb" => 1e6,
        "mib" | "m" => 1024.0 * 1024.0,
        "gb" => 1e9,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "tb" => 1e12,
        "tib" | "t" => 1024f64.powi(4),
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    let bytes = n * mult;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("size {s:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

/// `{min, max}` key segment counts, prefix included.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawSegments {
    /// Fewest segments.
    pub min: usize,
    /// Most segments.
    pub max: usize,
}

/// A data type as written under `cache.data_types.<name>`; missing fields keep built-in
/// values for the seed types.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDataType {
    /// Key prefix.
    pub prefix: Option<String>,
    /// Lifetime (hours or a duration string).
    pub ttl: Option<TtlValue>,
    /// Largest value.
    pub max_value_size: Option<ByteSize>,
    /// Tiers that hold the type.
    pub placement: Option<Placement>,
    /// Compress values above this size.
    pub compress_above: Option<ByteSize>,
    /// Allowed segment counts.
    pub segments: Option<RawSegments>,
    /// Per-call TTL policy.
    pub ttl_override: Option<TtlOverride>,
    /// Stale policy: `{policy: never|while_revalidate|if_error, max: 30s}`.
    pub stale: Option<RawStale>,
    /// Refresh-ahead window as a fraction of the lifetime (e.g. 0.1 = the last 10 %).
    pub refresh_ahead: Option<f64>,
}

/// Which stale policy a data type uses.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RawStalePolicy {
    /// Never serve stale.
    Never,
    /// Serve stale while one background refresh runs.
    WhileRevalidate,
    /// Serve stale when the loader fails.
    IfError,
}

/// `stale:` under a data type.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStale {
    /// The policy.
    pub policy: RawStalePolicy,
    /// How long past expiry (a duration such as `30s`); required unless `never`.
    pub max: Option<String>,
}

/// `cache.cleanup`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCleanup {
    /// Cron expression for the scheduled sweep.
    pub interval: Option<String>,
    /// Disk tier size limit in gigabytes (10^9 bytes).
    pub max_size_gb: Option<f64>,
    /// Free space to leave on the cache's filesystem; the disk tier evicts to keep it.
    pub min_free_disk: Option<ByteSize>,
}

/// `cache.monitoring`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMonitoring {
    /// Alert when TTL violations exceed this fraction of checked signals.
    pub ttl_violation_threshold: Option<f64>,
    /// Alert when the hit ratio falls below this fraction.
    pub cache_hit_ratio_threshold: Option<f64>,
}

/// `cache.freshness`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFreshness {
    /// How long freshness audit rows are kept (a duration such as `30d`).
    pub audit_retention: Option<String>,
    /// Clock-skew tolerance between hosts (a duration; default `0s`): a signal at most this
    /// far past its TTL is still accepted by the guard.
    pub clock_skew_tolerance: Option<String>,
}

/// `cache.redis`: how the shared tier is used when `redis_url` is set.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// Prefix of every Redis key freshcache writes (default `freshcache:`).
    pub namespace: Option<String>,
    /// Deadline of one Redis call (default `50ms`).
    pub timeout: Option<String>,
    /// Deadline of connecting (default `2s`).
    pub connect_timeout: Option<String>,
    /// Values larger than this stay out of Redis (default `1MiB`).
    pub max_value_size: Option<ByteSize>,
    /// Consecutive failures that open the circuit breaker (default 5).
    pub breaker_failures: Option<u32>,
    /// How long the breaker stays open before a probe (default `1s`).
    pub breaker_open_for: Option<String>,
    /// How long a cross-instance load lease lasts (default `10s`).
    pub lease: Option<String>,
    /// Password, when not in the URL (prefer the environment:
    /// `FRESHCACHE_CACHE__REDIS__PASSWORD`).
    pub password: Option<String>,
    /// ACL user name, when not in the URL.
    pub username: Option<String>,
    /// PEM file of the CA that signed the server certificate (`rediss://`); the system's
    /// trust store is used when absent.
    pub tls_ca_file: Option<PathBuf>,
}

/// `cache.memory`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemory {
    /// Byte budget of the memory tier (keys, values and bookkeeping).
    pub max_bytes: Option<ByteSize>,
}

/// `cache.disk`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDisk {
    /// Entries whose stored form is at most this size live inline in SQLite.
    pub inline_max: Option<ByteSize>,
    /// Queue writes and commit them together this long after the first (`2ms`); absent or
    /// zero: each write commits before it returns.
    pub write_behind: Option<String>,
}

/// One item of `cache.sources`: a feed `serve` keeps fresh with conditional fetches.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// The feed's `http://` or `https://` URL.
    pub url: String,
    /// The key its body is stored under.
    pub key: String,
    /// Time between fetches, a duration such as `5m`.
    pub refresh: String,
    /// What the feed's `Cache-Control` may do to the TTL (default `may_shorten`).
    pub cache_control: Option<CacheControl>,
}

/// The `cache:` section as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Redis URL; absent means embedded mode (memory + disk).
    pub redis_url: Option<String>,
    /// Directory for blobs and, by default, the index.
    pub cache_dir: Option<PathBuf>,
    /// SQLite index path; defaults to `<cache_dir>/metadata.db`.
    pub metadata_path: Option<PathBuf>,
    /// TTL per data type name.
    pub ttl: Option<BTreeMap<String, TtlValue>>,
    /// Cleanup schedule and limits.
    pub cleanup: Option<RawCleanup>,
    /// Alert thresholds.
    pub monitoring: Option<RawMonitoring>,
    /// Memory tier.
    pub memory: Option<RawMemory>,
    /// Disk tier.
    pub disk: Option<RawDisk>,
    /// The inference guard.
    pub freshness: Option<RawFreshness>,
    /// Redis tier options.
    pub redis: Option<RawRedis>,
    /// Keys `serve` makes fresh at start (and whose critical ones gate readiness).
    pub warm: Option<Vec<super::RawWarmItem>>,
    /// Data type declarations and overrides.
    pub data_types: Option<BTreeMap<String, RawDataType>>,
    /// Type used for keys whose prefix matches no declared type.
    pub default_data_type: Option<String>,
    /// Feeds kept fresh by `serve`.
    pub sources: Option<Vec<RawSource>>,
}

/// The `server:` section as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Listen address.
    pub listen: Option<String>,
    /// Bearer token required on mutating routes.
    pub auth_token: Option<String>,
}

/// The whole file. Sections other than `cache:` and `server:` belong to the rest of the
/// pipeline's `runtime.yml` and are ignored.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RawConfig {
    /// The cache section.
    pub cache: Option<RawCache>,
    /// The service section.
    pub server: Option<RawServer>,
}
