//! Random identifiers — instance ids, lease tokens, temp file names — drawn from the operating
//! system. A per-thread generator would not do: `fork()` copies its state, so a parent and the
//! children it forks would draw the same ids (and ignore each other's change-feed rows). Blob
//! names still come from the per-thread generator, which the crash and link tests seed.

/// 64 random bits.
pub(crate) fn u64() -> u64 {
    let mut b = [0u8; 8];
    fill(&mut b);
    u64::from_le_bytes(b)
}

fn fill(dest: &mut [u8]) {
    if getrandom::fill(dest).is_err() {
        // The kernel's generator failing is close to impossible; still, never the same
        // identifiers in two processes: a local draw mixed with this process's id and the time.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut rng = fastrand::Rng::with_seed(
            fastrand::u64(..) ^ u64::from(std::process::id()).rotate_left(32) ^ nanos as u64,
        );
        rng.fill(dest);
    }
}
