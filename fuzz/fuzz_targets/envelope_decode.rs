//! Any bytes: decoding never panics, and whatever decodes re-encodes to an envelope that
//! decodes to the same entry.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = freshcache::codec::decode("news:fuzz:1", data) {
        let again = freshcache::codec::encode("news:fuzz:1", &entry, u64::MAX).unwrap();
        assert_eq!(freshcache::codec::decode("news:fuzz:1", &again).unwrap(), entry);
    }
});
