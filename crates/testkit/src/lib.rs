//! Test support shared by freshcache's integration tests and benches (a dev-dependency only,
//! never published).
//!
//! # Layout
//!
//! - [`redis`]: `redis-server` processes of the caller's own on free loopback ports — start,
//!   pause, resume, kill -9 and restart, all by the child's pid — and a three-master cluster.
//!   Never the shared server on 6379.
//! - [`serve`]: a `freshcache serve` child on `127.0.0.1:0`, its address read from its first
//!   line of output within a deadline; killed on drop.
//! - [`poll`]: wait for an event by polling a condition until a deadline, instead of sleeping
//!   a fixed time and hoping.

pub mod poll;
pub mod redis;
pub mod serve;

pub use poll::Poll;
pub use redis::{RedisCluster, RedisServer, free_port};
pub use serve::Serve;
