//! Any YAML text: loading never panics; errors name a field.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match freshcache::Config::from_yaml_str(text, None, Vec::new()) {
        Ok(config) => assert!(!config.data_types.types().is_empty()),
        Err(e) => assert!(!e.field.is_empty()),
    }
});
