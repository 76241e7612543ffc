//! URLs: which are accepted (absolute http/https with a host) and how they are shown (no
//! credentials, no query). Plain rules: configuration checks URLs with them, the fetcher uses
//! them too.

use reqwest::Url;

/// The URL as it may appear in errors and logs: scheme, host, port and path, without
/// credentials, query or fragment (a query shows as `?…`).
#[must_use]
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => redact(&u),
        Err(_) => "<invalid url>".to_owned(),
    }
}

pub(crate) fn redact(u: &Url) -> String {
    let mut out = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
    if let Some(port) = u.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(u.path());
    if u.query().is_some() {
        out.push_str("?…");
    }
    out
}

/// `host:port` of a URL, with the scheme's default port filled in.
pub(crate) fn authority(u: &Url) -> String {
    format!(
        "{}:{}",
        u.host_str().unwrap_or(""),
        u.port_or_known_default().unwrap_or(0)
    )
}

/// Checks an absolute `http(s)://` URL with a host, saying why one is refused (configuration
/// errors quote it; the fetcher wraps it in its own error).
pub(crate) fn check_url(url: &str) -> std::result::Result<Url, String> {
    let u = Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "scheme {:?} is not supported; use http or https",
            u.scheme()
        ));
    }
    if u.scheme() == "https" && !cfg!(feature = "https") {
        return Err("https is not supported by this build (freshcache's `https` feature)".into());
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_of_credentials_and_queries() {
        assert_eq!(
            redact_url("https://user:secret@feeds.example:8443/odds/today?token=abc#x"),
            "https://feeds.example:8443/odds/today?…"
        );
        assert_eq!(redact_url("http://h/p"), "http://h/p");
        assert_eq!(redact_url("::"), "<invalid url>");
    }

    #[test]
    fn authorities_fill_in_default_ports() {
        let a = |s: &str| authority(&Url::parse(s).unwrap());
        assert_eq!(a("http://h/x"), "h:80");
        assert_eq!(a("https://H/x"), "h:443");
        assert_eq!(a("http://h:8080/x"), "h:8080");
    }
}
