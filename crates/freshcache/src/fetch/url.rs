//! The fetcher's URL parsing: the crate's URL rules (`crate::url`) with its own error.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Parses an absolute `http(s)://` URL with a host.
///
/// # Errors
/// [`Error::Fetch`] with [`FetchErrorKind::InvalidUrl`].
pub fn parse_url(url: &str) -> Result<Url> {
    check_url(url).map_err(|reason| Error::Fetch {
        url: redact_url(url),
        kind: FetchErrorKind::InvalidUrl,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_http_urls_are_accepted() {
        assert!(parse_url("http://127.0.0.1:8080/x").is_ok());
        assert_eq!(
            parse_url("https://feeds.example/x").is_ok(),
            cfg!(feature = "https")
        );
        for bad in ["ftp://h/x", "file:///etc/passwd", "/relative", "http://"] {
            let e = parse_url(bad).unwrap_err();
            assert_eq!(e.fetch_kind(), Some(FetchErrorKind::InvalidUrl), "{bad}");
            assert!(e.is_invalid_input());
        }
    }
}
