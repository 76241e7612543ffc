//! Integration tests for freshcache: real SQLite files in temporary directories, time from a
//! `ManualClock` only.

#![allow(missing_docs)]
#![allow(clippy::unwrap_used)]

mod support;

mod batch;
mod coalescing;
mod crash;
mod diskfault;
mod edges;
mod fetch;
mod fetch_rules;
mod footprint;
mod freshness;
mod history;
mod integrity;
mod invalidation;
mod lineage;
mod lineage_guard;
mod located;
mod maintenance;
mod metrics;
mod multiprocess;
mod netfault;
mod paths;
mod placement;
mod policy;
mod promotion;
mod props;
mod recall;
mod redis;
mod refresh;
mod restart;
mod samehost;
mod skew;
mod stale;
mod stall;
mod symlinks;
mod tags;
mod torn;
mod ttl;
mod typed;
mod upkeep;
mod warm;
mod write_behind;
