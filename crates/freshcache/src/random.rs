//! Random identifiers — instance ids, lease tokens, temp file names — drawn from the operating
//! system. A per-thread generator would not do: `fork()` copies its state, so a parent and the
//! children it forks would draw the same ids (and ignore each other's change-feed rows). Blob
//! names still come from the per-thread generator, which the link test seeds to predict a
//! name: [`crate::after_fork_in_child`] reseeds it from here in a forked child.

/// 64 random bits.
pub(crate) fn u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        // The kernel's generator failing is close to impossible; still, never the same
        // identifiers in two processes: a local draw mixed with this process's id and the time.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        fastrand::u64(..) ^ u64::from(std::process::id()).rotate_left(32) ^ nanos as u64
    })
}
