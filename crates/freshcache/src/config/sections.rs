//! One validator per section of `cache:` and `server:`: each turns its raw section into the
//! validated one, or names the field (with its line in the file) and the reason.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::position::locate;
use super::{
    CleanupConfig, DiskConfig, FreshnessConfig, KIB, MIB, MemoryConfig, MonitoringConfig,
    RawCleanup, RawDataType, RawDisk, RawFreshness, RawMemory, RawMonitoring, RawRedis, RawServer,
    RawStale, RawStalePolicy, RedisConfig, RedisUrl, Schedule, ServerConfig, TtlValue,
    builtin_types, parse_duration,
};
use crate::datatype::{DataTypeSpec, Placement, Registry, StalePolicy, TtlOverride};
use crate::error::ConfigError;

/// Where the raw configuration came from, for errors.
pub(super) struct Ctx<'a> {
    pub file: Option<&'a Path>,
    pub text: &'a str,
}

impl Ctx<'_> {
    /// The error for `field`, with its line in the file when it can be found.
    pub fn err(&self, field: &str, reason: String) -> ConfigError {
        ConfigError {
            file: self.file.map(Path::to_path_buf),
            line: locate(self.text, field),
            field: field.to_owned(),
            reason,
        }
    }

    /// A duration field (`60s`, `1h 30m`); absent: `default`.
    pub fn duration(
        &self,
        field: &str,
        value: Option<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(text) => parse_duration(&text).map_err(|reason| self.err(field, reason)),
        }
    }

    /// A fraction field in 0..=1; absent: `default`.
    fn fraction(&self, field: &str, value: Option<f64>, default: f64) -> Result<f64, ConfigError> {
        let v = value.unwrap_or(default);
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(self.err(field, format!("must be a fraction in 0..=1, got {v}")))
        }
    }
}

/// `cache.data_types`, the `cache.ttl` map and `cache.default_data_type`: built-in types, then
/// declarations and overrides, then TTLs, then checks across types.
pub(super) fn data_types(
    ctx: &Ctx<'_>,
    declared: BTreeMap<String, RawDataType>,
    ttl: BTreeMap<String, TtlValue>,
    default_type: Option<String>,
) -> Result<Registry, ConfigError> {
    let mut types: Vec<(String, DataTypeSpec)> = builtin_types()
        .into_iter()
        .map(|(n, s)| (n.to_owned(), s))
        .collect();
    for (name, rt) in declared {
        declare_type(ctx, &mut types, name, rt)?;
    }
    for (name, ttl) in ttl {
        match types.iter_mut().find(|(n, _)| *n == name) {
            Some((_, spec)) => spec.ttl = ttl.0,
            None => {
                return Err(ctx.err(
                    &format!("cache.ttl.{name}"),
                    format!(
                        "unknown data type {name:?}; declare it under cache.data_types (known: {})",
                        types
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
    }
    check_types(ctx, &types)?;
    let default = match default_type {
        None => None,
        Some(d) => Some(types.iter().position(|(n, _)| *n == d).ok_or_else(|| {
            ctx.err(
                "cache.default_data_type",
                format!("unknown data type {d:?}"),
            )
        })?),
    };
    Ok(Registry::new(
        types.into_iter().map(|(_, s)| s).collect(),
        default,
    ))
}

/// One entry of `cache.data_types`: a new type (which needs a prefix and a TTL) or overrides
/// of a known one.
fn declare_type(
    ctx: &Ctx<'_>,
    types: &mut Vec<(String, DataTypeSpec)>,
    name: String,
    rt: RawDataType,
) -> Result<(), ConfigError> {
    let field = format!("cache.data_types.{name}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(ctx.err(&field, "type names use a-z, 0-9 and _".into()));
    }
    let idx = match types.iter().position(|(n, _)| *n == name) {
        Some(i) => i,
        None => {
            let Some(prefix) = rt.prefix.clone() else {
                return Err(ctx.err(&field, "a new data type needs a prefix".into()));
            };
            let Some(ttl) = rt.ttl else {
                return Err(ctx.err(&field, "a new data type needs a ttl".into()));
            };
            types.push((
                name.clone(),
                DataTypeSpec {
                    id: 0,
                    name: name.as_str().into(),
                    prefix,
                    ttl: ttl.0,
                    max_value_size: MIB,
                    placement: Placement::MemoryRedisDisk,
                    compress_above: 16 * KIB,
                    segments: 2..=16,
                    ttl_override: TtlOverride::ShorterOnly,
                    stale: StalePolicy::Never,
                    refresh_ahead: 0.0,
                },
            ));
            types.len() - 1
        }
    };
    let spec = &mut types[idx].1;
    if let Some(p) = rt.prefix {
        spec.prefix = p;
    }
    if let Some(t) = rt.ttl {
        spec.ttl = t.0;
    }
    if let Some(m) = rt.max_value_size {
        spec.max_value_size = m.0;
    }
    if let Some(p) = rt.placement {
        spec.placement = p;
    }
    if let Some(c) = rt.compress_above {
        spec.compress_above = c.0;
    }
    if let Some(s) = rt.segments {
        spec.segments = s.min..=s.max;
    }
    if let Some(o) = rt.ttl_override {
        spec.ttl_override = o;
    }
    if let Some(st) = rt.stale {
        spec.stale = stale_policy(ctx, &field, st)?;
    }
    if let Some(r) = rt.refresh_ahead {
        if !(0.0..1.0).contains(&r) {
            return Err(ctx.err(
                &format!("{field}.refresh_ahead"),
                format!("must be a fraction in 0..1, got {r}"),
            ));
        }
        spec.refresh_ahead = r;
    }
    Ok(())
}

/// A type's `stale:` policy: `never`, or `while_revalidate` / `if_error` with a `max`.
fn stale_policy(ctx: &Ctx<'_>, field: &str, st: RawStale) -> Result<StalePolicy, ConfigError> {
    let max = match (st.policy, st.max) {
        (RawStalePolicy::Never, _) => Duration::ZERO,
        (_, None) => {
            return Err(ctx.err(
                &format!("{field}.stale.max"),
                "a stale policy needs `max`, e.g. 30s".into(),
            ));
        }
        (_, Some(text)) => parse_duration(&text)
            .map_err(|reason| ctx.err(&format!("{field}.stale.max"), reason))?,
    };
    Ok(match st.policy {
        RawStalePolicy::Never => StalePolicy::Never,
        RawStalePolicy::WhileRevalidate => StalePolicy::WhileRevalidate(max),
        RawStalePolicy::IfError => StalePolicy::IfError(max),
    })
}

/// Checks across the data types: prefixes that parse and are not shared, sizes, segment counts.
fn check_types(ctx: &Ctx<'_>, types: &[(String, DataTypeSpec)]) -> Result<(), ConfigError> {
    for (name, spec) in types {
        let field = format!("cache.data_types.{name}");
        if let Err(e) = crate::key::KeyPrefix::parse(&spec.prefix) {
            return Err(ctx.err(&format!("{field}.prefix"), e.to_string()));
        }
        if spec.max_value_size == 0 {
            return Err(ctx.err(&format!("{field}.max_value_size"), "must be > 0".into()));
        }
        if spec.segments.start() < &2 || spec.segments.start() > spec.segments.end() {
            return Err(ctx.err(&format!("{field}.segments"), "needs 2 <= min <= max".into()));
        }
        if let Some((other, _)) = types
            .iter()
            .find(|(n, s)| n != name && s.prefix == spec.prefix)
        {
            return Err(ctx.err(
                &format!("{field}.prefix"),
                format!("prefix {:?} is also used by {other}", spec.prefix),
            ));
        }
    }
    Ok(())
}

/// `cache.cache_dir` and `cache.metadata_path` (by default `<cache_dir>/metadata.db`).
pub(super) fn paths(
    ctx: &Ctx<'_>,
    cache_dir: Option<PathBuf>,
    metadata_path: Option<PathBuf>,
) -> Result<(PathBuf, PathBuf), ConfigError> {
    let cache_dir = cache_dir.unwrap_or_else(|| PathBuf::from("data/cache"));
    if cache_dir.as_os_str().is_empty() {
        return Err(ctx.err("cache.cache_dir", "must not be empty".into()));
    }
    let metadata_path = metadata_path.unwrap_or_else(|| cache_dir.join("metadata.db"));
    Ok((cache_dir, metadata_path))
}

/// `cache.cleanup`: the cron schedule and the disk limits.
pub(super) fn cleanup(ctx: &Ctx<'_>, raw: RawCleanup) -> Result<CleanupConfig, ConfigError> {
    let interval = raw.interval.unwrap_or_else(|| "0 2 * * *".into());
    if let Err(reason) = Schedule::parse(&interval) {
        return Err(ctx.err("cache.cleanup.interval", reason));
    }
    let gb = raw.max_size_gb.unwrap_or(10.0);
    if !gb.is_finite() || gb <= 0.0 {
        return Err(ctx.err(
            "cache.cleanup.max_size_gb",
            format!("must be > 0, got {gb}"),
        ));
    }
    Ok(CleanupConfig {
        interval,
        max_size_bytes: (gb * 1e9) as u64,
        min_free_disk: raw.min_free_disk.map_or(0, |b| b.0),
    })
}

/// `cache.monitoring`: alert thresholds.
pub(super) fn monitoring(
    ctx: &Ctx<'_>,
    raw: RawMonitoring,
) -> Result<MonitoringConfig, ConfigError> {
    Ok(MonitoringConfig {
        ttl_violation_threshold: ctx.fraction(
            "cache.monitoring.ttl_violation_threshold",
            raw.ttl_violation_threshold,
            0.01,
        )?,
        cache_hit_ratio_threshold: ctx.fraction(
            "cache.monitoring.cache_hit_ratio_threshold",
            raw.cache_hit_ratio_threshold,
            0.8,
        )?,
    })
}

/// `cache.memory`: the L1 budget.
pub(super) fn memory(ctx: &Ctx<'_>, raw: Option<RawMemory>) -> Result<MemoryConfig, ConfigError> {
    let max_bytes = raw.and_then(|m| m.max_bytes).map_or(256 * MIB, |b| b.0);
    if max_bytes < 64 * KIB {
        return Err(ctx.err("cache.memory.max_bytes", "must be at least 64KiB".into()));
    }
    Ok(MemoryConfig { max_bytes })
}

/// `cache.disk`: what lives inline in the index.
pub(super) fn disk(ctx: &Ctx<'_>, raw: Option<RawDisk>) -> Result<DiskConfig, ConfigError> {
    let (inline_max, write_behind) = raw.map_or((None, None), |d| (d.inline_max, d.write_behind));
    let inline_max = inline_max.map_or(8 * KIB, |b| b.0);
    if inline_max > MIB {
        return Err(ctx.err("cache.disk.inline_max", "must be at most 1MiB".into()));
    }
    let field = "cache.disk.write_behind";
    let write_behind = match write_behind.as_deref().map(str::trim) {
        None | Some("0" | "0s" | "0ms" | "off") => Duration::ZERO,
        Some(_) => ctx.duration(field, write_behind, Duration::ZERO)?,
    };
    if write_behind > Duration::from_secs(1) {
        return Err(ctx.err(
            field,
            "must be at most 1s (0 commits every write at once)".into(),
        ));
    }
    Ok(DiskConfig {
        inline_max,
        write_behind,
    })
}

/// `cache.redis_url` and `cache.redis`.
pub(super) fn redis(
    ctx: &Ctx<'_>,
    url: Option<String>,
    raw: RawRedis,
) -> Result<(Option<RedisUrl>, RedisConfig), ConfigError> {
    let redis_url = url.filter(|u| !u.trim().is_empty());
    if let Some(url) = &redis_url
        && ![
            "redis://",
            "rediss://",
            "redis+cluster://",
            "rediss+cluster://",
            "unix://",
        ]
        .iter()
        .any(|scheme| url.starts_with(scheme))
    {
        return Err(ctx.err(
            "cache.redis_url",
            "must start with redis://, rediss://, redis+cluster:// or unix://".into(),
        ));
    }
    let raw_redis = raw;
    let namespace = raw_redis.namespace.unwrap_or_else(|| "freshcache:".into());
    if namespace.is_empty()
        || namespace.len() > 64
        || !namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err(ctx.err(
            "cache.redis.namespace",
            "use 1..=64 characters of letters, digits, '-', '_', '.', ':'".into(),
        ));
    }
    let redis = RedisConfig {
        namespace,
        timeout: ctx.duration(
            "cache.redis.timeout",
            raw_redis.timeout,
            Duration::from_millis(50),
        )?,
        connect_timeout: ctx.duration(
            "cache.redis.connect_timeout",
            raw_redis.connect_timeout,
            Duration::from_secs(2),
        )?,
        max_value_size: raw_redis.max_value_size.map_or(MIB, |b| b.0),
        breaker_failures: raw_redis.breaker_failures.unwrap_or(5).max(1),
        breaker_open_for: ctx.duration(
            "cache.redis.breaker_open_for",
            raw_redis.breaker_open_for,
            Duration::from_secs(1),
        )?,
        lease: ctx.duration(
            "cache.redis.lease",
            raw_redis.lease,
            Duration::from_secs(10),
        )?,
        password: raw_redis.password.filter(|p| !p.is_empty()),
        username: raw_redis.username.filter(|u| !u.is_empty()),
        tls_ca_file: raw_redis.tls_ca_file,
    };
    Ok((redis_url.map(RedisUrl), redis))
}

/// `cache.freshness`: audit retention and the guard's clock-skew allowance.
pub(super) fn freshness(ctx: &Ctx<'_>, raw: RawFreshness) -> Result<FreshnessConfig, ConfigError> {
    let audit_retention = ctx.duration(
        "cache.freshness.audit_retention",
        raw.audit_retention,
        Duration::from_secs(30 * 86_400),
    )?;
    let clock_skew_tolerance = match raw.clock_skew_tolerance {
        Some(text) if text.trim() == "0" || text.trim() == "0s" => Duration::ZERO,
        other => ctx.duration(
            "cache.freshness.clock_skew_tolerance",
            other,
            Duration::ZERO,
        )?,
    };
    Ok(FreshnessConfig {
        audit_retention,
        clock_skew_tolerance,
    })
}

/// `server:`: the listen address and the bearer token.
pub(super) fn server(ctx: &Ctx<'_>, raw: RawServer) -> Result<ServerConfig, ConfigError> {
    let listen_text = raw.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
    let listen: SocketAddr = listen_text.parse().map_err(|e| {
        ctx.err(
            "server.listen",
            format!("{listen_text:?} is not an address like 127.0.0.1:8080: {e}"),
        )
    })?;
    let auth_token = raw.auth_token.filter(|t| !t.is_empty());
    Ok(ServerConfig { listen, auth_token })
}
