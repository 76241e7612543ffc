//! Integration tests for freshcache: real SQLite files in temporary directories, time from a
//! `ManualClock` only.

#![allow(missing_docs)]
#![allow(clippy::unwrap_used)]

mod support;

mod coalescing;
mod crash;
mod diskfault;
mod edges;
mod fetch;
mod footprint;
mod freshness;
mod history;
mod integrity;
mod invalidation;
mod maintenance;
mod metrics;
mod multiprocess;
mod netfault;
mod paths;
mod policy;
mod promotion;
mod props;
mod redis;
mod redis_server;
mod refresh;
mod restart;
mod skew;
mod stale;
mod stall;
mod symlinks;
mod torn;
mod ttl;
mod typed;
mod upkeep;
mod warm;
