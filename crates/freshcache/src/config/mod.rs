//! Configuration: the raw file as written (`config/runtime.yml`) and the validated [`Config`].
//!
//! The seed's file loads unchanged: numbers under `ttl:` are hours, strings are durations
//! (`60s`, `24h`, `1h 30m`). Environment variables `FRESHCACHE_<SECTION>__<FIELD>` override the
//! file (`FRESHCACHE_CACHE__CACHE_DIR=/var/cache/fc`). Every error names the file, the line
//! when known, the field and the reason.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::datatype::{DataTypeSpec, Placement, Registry, StalePolicy, TtlOverride};
use crate::error::{ConfigError, Result};

/// The prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "FRESHCACHE_";

pub(super) const KIB: u64 = 1024;
pub(super) const MIB: u64 = 1024 * KIB;

mod env;
mod manifest;
mod position;
mod raw;
mod schedule;
mod sections;
mod sources;

use env::{env_overrides, scalar, set_path};
use position::parse_yaml;
use sections::Ctx;

pub use manifest::{RawWarmItem, WarmItem, WarmSource, load_manifest, validate};
pub use schedule::Schedule;

pub use sources::{CacheControl, SourceConfig};
use sources::{locate_source, sources};

pub use raw::RawSource;
pub use raw::{
    ByteSize, RawCache, RawCleanup, RawConfig, RawDataType, RawDisk, RawFreshness, RawMemory,
    RawMonitoring, RawRedis, RawSegments, RawServer, TtlValue, parse_duration, parse_size,
};
pub use raw::{RawStale, RawStalePolicy};

/// Memory tier settings.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryConfig {
    /// Byte budget.
    pub max_bytes: u64,
}

/// Disk tier settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskConfig {
    /// Entries up to this stored size live inline in the index.
    pub inline_max: u64,
    /// Zero: every write is committed to the index before it returns. Otherwise writes are
    /// queued and committed together by a background thread at most this long after the
    /// first of them (see `DiskTier::put_behind`).
    pub write_behind: std::time::Duration,
}

/// Cleanup settings.
#[derive(Clone, Debug, PartialEq)]
pub struct CleanupConfig {
    /// Cron expression (5 or 6 fields).
    pub interval: String,
    /// Disk tier limit in bytes.
    pub max_size_bytes: u64,
    /// Free space to leave on the filesystem, in bytes (0: no watermark).
    pub min_free_disk: u64,
}

/// Alert thresholds.
#[derive(Clone, Debug, PartialEq)]
pub struct MonitoringConfig {
    /// Fraction of checked signals.
    pub ttl_violation_threshold: f64,
    /// Fraction of lookups.
    pub cache_hit_ratio_threshold: f64,
}

/// A Redis URL; its password never appears in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// The URL with its password, for connecting.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    #[must_use]
    pub fn redacted(&self) -> String {
        let s = &self.0;
        let Some(scheme_end) = s.find("://") else {
            return s.clone();
        };
        let rest = &s[scheme_end + 3..];
        let authority_end = rest.find('/').unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) => {
                let userinfo = &rest[..at];
                let user = userinfo.split(':').next().unwrap_or("");
                let shown = if userinfo.contains(':') {
                    format!("{user}:***")
                } else {
                    "***".to_owned()
                };
                format!("{}{shown}{}", &s[..scheme_end + 3], &rest[at..])
            }
            None => s.clone(),
        }
    }

    /// True for `redis+cluster://` URLs.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        self.0.starts_with("redis+cluster://") || self.0.starts_with("rediss+cluster://")
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Redis tier settings (used when `redis_url` is set).
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    /// Key prefix for everything freshcache writes.
    pub namespace: String,
    /// Deadline of one call.
    pub timeout: Duration,
    /// Deadline of connecting.
    pub connect_timeout: Duration,
    /// Values larger than this stay out of Redis.
    pub max_value_size: u64,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe.
    pub breaker_open_for: Duration,
    /// Cross-instance load lease.
    pub lease: Duration,
    /// Password from the config or environment (overrides the URL's).
    pub password: Option<String>,
    /// ACL user from the config or environment (overrides the URL's).
    pub username: Option<String>,
    /// CA certificate (PEM) for `rediss://`, instead of the system trust store.
    pub tls_ca_file: Option<PathBuf>,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_value_size", &self.max_value_size)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_open_for", &self.breaker_open_for)
            .field("lease", &self.lease)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("username", &self.username)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

/// Inference guard settings.
#[derive(Clone, Debug, PartialEq)]
pub struct FreshnessConfig {
    /// Audit rows older than this are removed by cleanup.
    pub audit_retention: Duration,
    /// Accepted lateness for clock skew between hosts (zero by default).
    pub clock_skew_tolerance: Duration,
}

/// Service settings.
#[derive(Clone, PartialEq)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Bearer token for mutating routes.
    pub auth_token: Option<String>,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// Redis URL (the Redis tier); `None` runs embedded.
    pub redis_url: Option<RedisUrl>,
    /// Redis tier options.
    pub redis: RedisConfig,
    /// Directory for blobs.
    pub cache_dir: PathBuf,
    /// SQLite index file.
    pub metadata_path: PathBuf,
    /// Data types by prefix.
    pub data_types: Registry,
    /// Memory tier.
    pub memory: MemoryConfig,
    /// Disk tier.
    pub disk: DiskConfig,
    /// Cleanup.
    pub cleanup: CleanupConfig,
    /// Alert thresholds.
    pub monitoring: MonitoringConfig,
    /// Inference guard.
    pub freshness: FreshnessConfig,
    /// Keys warmed by `serve` at start.
    pub warm: Vec<WarmItem>,
    /// Service.
    pub server: ServerConfig,
    /// Feeds kept fresh by `serve`.
    pub sources: Vec<SourceConfig>,
}

impl Default for Config {
    /// The embedded default: memory + disk under `data/cache`, seed TTLs 24 h / 1 h / 60 s.
    fn default() -> Self {
        match Self::from_raw(RawConfig::default(), None, "") {
            Ok(c) => c,
            Err(e) => unreachable!("built-in defaults are valid: {e}"),
        }
    }
}

pub(super) fn builtin_types() -> Vec<(&'static str, DataTypeSpec)> {
    let spec =
        |name: &str, prefix: &str, ttl: u64, max: u64, compress: u64, seg: (usize, usize)| {
            DataTypeSpec {
                id: 0,
                name: name.into(),
                prefix: prefix.into(),
                ttl: Duration::from_secs(ttl),
                max_value_size: max,
                placement: Placement::MemoryRedisDisk,
                compress_above: compress,
                segments: seg.0..=seg.1,
                ttl_override: TtlOverride::ShorterOnly,
                stale: StalePolicy::Never,
                refresh_ahead: 0.0,
            }
        };
    vec![
        (
            "llm_features",
            spec(
                "llm_features",
                "llm:features:",
                24 * 3600,
                64 * MIB,
                16 * KIB,
                (4, 4),
            ),
        ),
        (
            "news_articles",
            spec("news_articles", "news:", 3600, 16 * MIB, 4 * KIB, (3, 4)),
        ),
        (
            "odds_data",
            spec("odds_data", "odds:", 60, MIB, 16 * KIB, (3, 3)),
        ),
    ]
}

impl Config {
    /// Loads `path`, applying overrides from the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line, field and reason.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Loads `path`, applying overrides from `env` (name, value) pairs.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line, field and reason.
    pub fn load_with_env<I>(path: &Path, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, &e))?;
        Self::from_yaml_str(&text, Some(path), env)
    }

    /// Parses YAML text (`file` is used in messages), applying `env` overrides.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, line, field and reason.
    pub fn from_yaml_str<I>(text: &str, file: Option<&Path>, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        // First pass straight from the text, so errors in the file carry their line.
        let mut raw: RawConfig = if text.trim().is_empty() {
            RawConfig::default()
        } else {
            parse_yaml(file, text)?
        };
        let overrides = env_overrides(env);
        if !overrides.is_empty() {
            let mut tree: serde_json::Value = if text.trim().is_empty() {
                serde_json::Value::Object(serde_json::Map::new())
            } else {
                parse_yaml(file, text)?
            };
            for (path, var, value) in &overrides {
                if !set_path(&mut tree, path, scalar(value)) {
                    return Err(ConfigError {
                        file: None,
                        line: None,
                        field: var.clone(),
                        reason: "does not name a configuration field".into(),
                    });
                }
            }
            raw = serde_json::from_value(tree).map_err(|e| ConfigError {
                file: None,
                line: None,
                field: overrides
                    .iter()
                    .map(|(_, var, _)| var.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                reason: format!("environment override is invalid: {e}"),
            })?;
        }
        Self::from_raw(raw, file, text)
    }

    /// Validates a raw config; `text` is the file content used to locate fields.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field and reason.
    pub fn from_raw(raw: RawConfig, file: Option<&Path>, text: &str) -> Result<Self, ConfigError> {
        let ctx = Ctx { file, text };
        let cache = raw.cache.unwrap_or_default();
        let data_types = sections::data_types(
            &ctx,
            cache.data_types.unwrap_or_default(),
            cache.ttl.unwrap_or_default(),
            cache.default_data_type,
        )?;
        let (cache_dir, metadata_path) =
            sections::paths(&ctx, cache.cache_dir, cache.metadata_path)?;
        let (redis_url, redis) =
            sections::redis(&ctx, cache.redis_url, cache.redis.unwrap_or_default())?;
        let sources = sources(
            cache.sources.unwrap_or_default(),
            &data_types,
            |i, name, reason| ConfigError {
                file: file.map(Path::to_path_buf),
                line: locate_source(text, i, name),
                field: format!("cache.sources[{i}].{name}"),
                reason,
            },
        )?;
        Ok(Config {
            source: file.map(Path::to_path_buf),
            redis_url,
            redis,
            cache_dir,
            metadata_path,
            data_types,
            memory: sections::memory(&ctx, cache.memory)?,
            disk: sections::disk(&ctx, cache.disk)?,
            cleanup: sections::cleanup(&ctx, cache.cleanup.unwrap_or_default())?,
            monitoring: sections::monitoring(&ctx, cache.monitoring.unwrap_or_default())?,
            freshness: sections::freshness(&ctx, cache.freshness.unwrap_or_default())?,
            warm: validate(cache.warm.unwrap_or_default(), file, "cache.warm")?,
            server: sections::server(&ctx, raw.server.unwrap_or_default())?,
            sources,
        })
    }

    /// The same configuration with its cache directory (and index) moved under `dir`.
    #[must_use]
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = dir.into();
        self.metadata_path = self.cache_dir.join("metadata.db");
        self
    }
}

#[cfg(test)]
mod tests;
