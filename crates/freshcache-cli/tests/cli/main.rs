//! End-to-end tests of the `freshcache` binary: commands and the HTTP service.

#![allow(missing_docs, clippy::unwrap_used)]

mod batch;
mod commands;
mod console;
mod fetch;
mod hostile;
mod load;
mod observe;
mod ops;
mod server;
mod support;
