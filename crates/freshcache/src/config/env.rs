//! Environment overrides: `FRESHCACHE_<SECTION>__<FIELD>=value` set the field at that path
//! before the configuration is validated (the value read as YAML would read it).

use super::ENV_PREFIX;

/// Collects `FRESHCACHE_A__B=v` pairs as (`["a","b"]`, var name, value).
pub(super) fn env_overrides<I>(vars: I) -> Vec<(Vec<String>, String, String)>
where
    I: IntoIterator<Item = (String, String)>,
{
    let mut out: Vec<_> = vars
        .into_iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(ENV_PREFIX)?;
            if !rest.contains("__") {
                return None;
            }
            let path = rest.split("__").map(str::to_ascii_lowercase).collect();
            Some((path, k, v))
        })
        .collect();
    out.sort();
    out
}

pub(super) fn set_path(
    root: &mut serde_json::Value,
    path: &[String],
    value: serde_json::Value,
) -> bool {
    let mut cur = root;
    for (i, seg) in path.iter().enumerate() {
        if cur.is_null() {
            *cur = serde_json::Value::Object(serde_json::Map::new());
        }
        let Some(obj) = cur.as_object_mut() else {
            return false;
        };
        if i + 1 == path.len() {
            obj.insert(seg.clone(), value);
            return true;
        }
        cur = obj.entry(seg.clone()).or_insert(serde_json::Value::Null);
    }
    false
}

/// An environment value read as a YAML scalar (so `30`, `true`, `1.5` keep their types).
pub(super) fn scalar(v: &str) -> serde_json::Value {
    serde_saphyr::from_str::<serde_json::Value>(v)
        .ok()
        .filter(|j| !j.is_object() && !j.is_array() && !j.is_null())
        .unwrap_or_else(|| serde_json::Value::String(v.to_owned()))
}
