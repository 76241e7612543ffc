//! Any text: `Key::parse` either refuses it or returns a key that round-trips and contains no
//! path separators or dot segments; a data type resolves or is a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = freshcache::Key::parse(text) {
        assert_eq!(key.as_str(), text);
        assert!(!text.contains('/') && !text.contains('\\') && !text.contains('\0'));
        assert!(text.split(':').all(|s| !s.is_empty() && s != "." && s != ".."));
        assert_eq!(key.to_string().parse::<freshcache::Key>().unwrap(), key);
        let _ = freshcache::Config::default().data_types.resolve(&key);
    }
    if let Ok(prefix) = freshcache::KeyPrefix::parse(text) {
        if let Some(upper) = prefix.upper_bound() {
            assert!(upper.as_str() > text);
        }
    }
});
