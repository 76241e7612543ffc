//! One HTTP exchange: the conditional request, the response's headers judged (validators,
//! `Cache-Control`), and the body read within its limits.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Fetcher {
    /// One header value, checked; `None` when absent.
    pub(super) fn header<'h>(
        &self,
        url: &Url,
        headers: &'h HeaderMap,
        name: header::HeaderName,
    ) -> Result<Option<&'h str>> {
        let Some(v) = headers.get(&name) else {
            return Ok(None);
        };
        match policy::check_header_value(v.as_bytes(), self.opts.max_header_bytes) {
            Ok(s) => Ok(Some(s)),
            Err(HeaderProblem::TooLong) => Err(self.error(
                url,
                FetchErrorKind::Header,
                format!(
                    "{name} header is {} bytes, more than the {} allowed",
                    v.len(),
                    self.opts.max_header_bytes
                ),
            )),
            Err(HeaderProblem::BadByte) => Err(self.error(
                url,
                FetchErrorKind::Header,
                format!("{name} header contains control or non-ASCII bytes (CR/LF?)"),
            )),
        }
    }

    /// The directives and `Age` of a response, every `Cache-Control` line checked.
    pub(super) fn freshness(
        &self,
        url: &Url,
        headers: &HeaderMap,
    ) -> Result<(Directives, Option<u64>)> {
        let mut lines = Vec::new();
        for v in headers.get_all(header::CACHE_CONTROL) {
            match policy::check_header_value(v.as_bytes(), self.opts.max_header_bytes) {
                Ok(s) => lines.push(s),
                Err(_) => {
                    return Err(self.error(
                        url,
                        FetchErrorKind::Header,
                        "cache-control header is too long or contains control bytes",
                    ));
                }
            }
        }
        let age = self
            .header(url, headers, header::AGE)?
            .and_then(|a| a.parse::<u64>().ok());
        Ok((policy::parse_cache_control(lines), age))
    }

    pub(super) fn response_validators(&self, url: &Url, headers: &HeaderMap) -> Result<Validators> {
        Ok(Validators {
            etag: self
                .header(url, headers, header::ETAG)?
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            last_modified: self
                .header(url, headers, header::LAST_MODIFIED)?
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        })
    }

    /// Sends one GET (conditional when `validators` is given) and reads an accepted answer.
    // One function on purpose (~100 lines): each branch is a status RFC 9110 gives its own
    // meaning (200, 304, redirects refused, errors), read top to bottom against the RFC.
    pub(super) async fn exchange(
        &self,
        url: &Url,
        validators: Option<&Validators>,
        ty: &DataTypeSpec,
        mode: CacheControl,
    ) -> Result<Exchange> {
        let mut req = self
            .client
            .get(url.clone())
            .header(header::ACCEPT_ENCODING, "gzip");
        if !self.opts.content_types.is_empty()
            && let Ok(v) = HeaderValue::from_str(&self.opts.content_types.join(", "))
        {
            req = req.header(header::ACCEPT, v);
        }
        if let Some(v) = validators {
            // Sent exactly as stored: a weak `W/"x"` goes back weak.
            if let Some(etag) = v
                .etag
                .as_deref()
                .and_then(|e| HeaderValue::from_str(e).ok())
            {
                req = req.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(lm) = v
                .last_modified
                .as_deref()
                .and_then(|e| HeaderValue::from_str(e).ok())
            {
                req = req.header(header::IF_MODIFIED_SINCE, lm);
            }
        }
        let mut resp = req.send().await.map_err(|e| self.map_reqwest(url, e))?;
        let status = resp.status();
        let final_url = resp.url().clone();
        let headers = resp.headers().clone();
        match status {
            StatusCode::NOT_MODIFIED => {
                let validators = self.response_validators(&final_url, &headers)?;
                let (directives, age) = self.freshness(&final_url, &headers)?;
                Ok(Exchange {
                    answer: Answer::NotModified {
                        validators,
                        storage: policy::storage(mode, &directives, age, ty),
                    },
                    status: status.as_u16(),
                    body_bytes: 0,
                })
            }
            StatusCode::OK => {
                let content_type = self.header(&final_url, &headers, header::CONTENT_TYPE)?;
                if !policy::content_type_allowed(content_type, &self.opts.content_types) {
                    return Err(self.error(
                        &final_url,
                        FetchErrorKind::ContentType,
                        format!(
                            "content-type {:?} is not one of {}",
                            content_type.unwrap_or("(none)"),
                            self.opts.content_types.join(", ")
                        ),
                    ));
                }
                let codec = content_type.map_or(Codec::Bytes, Codec::from_media_type);
                let validators = self.response_validators(&final_url, &headers)?;
                let (directives, age) = self.freshness(&final_url, &headers)?;
                let encoding_header =
                    self.header(&final_url, &headers, header::CONTENT_ENCODING)?;
                let Some(encoding) = Encoding::from_header(encoding_header) else {
                    return Err(self.error(
                        &final_url,
                        FetchErrorKind::Encoding,
                        format!(
                            "content-encoding {:?} was not asked for",
                            encoding_header.unwrap_or_default()
                        ),
                    ));
                };
                let (body, body_bytes) =
                    self.read_body(&final_url, &mut resp, encoding, ty).await?;
                Ok(Exchange {
                    answer: Answer::Full(Body {
                        bytes: body,
                        codec,
                        validators,
                        storage: policy::storage(mode, &directives, age, ty),
                    }),
                    status: status.as_u16(),
                    body_bytes,
                })
            }
            other => Err(self.error(
                &final_url,
                FetchErrorKind::Status(other.as_u16()),
                format!("the origin answered {other}"),
            )),
        }
    }

    /// Streams the body within the wire limit and the decoded limit (the smaller of
    /// [`FetchOptions::max_decoded_bytes`] and the type's `max_value_size`).
    pub(super) async fn read_body(
        &self,
        url: &Url,
        resp: &mut reqwest::Response,
        encoding: Encoding,
        ty: &DataTypeSpec,
    ) -> Result<(Bytes, u64)> {
        let wire_limit = self.opts.max_body_bytes;
        let decoded_limit = self.opts.max_decoded_bytes.min(ty.max_value_size);
        let too_large = |e: BodyError| match e {
            BodyError::WireTooLarge { limit } => self.error(
                url,
                FetchErrorKind::BodyTooLarge,
                format!("the body is larger than {limit} bytes"),
            ),
            BodyError::DecodedTooLarge { limit } => self.error(
                url,
                FetchErrorKind::DecodedTooLarge,
                format!("the decoded body is larger than {limit} bytes (data type {ty})"),
            ),
            BodyError::Corrupt(reason) => self.error(url, FetchErrorKind::Encoding, reason),
        };
        // A declared length over the limit is refused before reading; a smaller one is not
        // trusted: bytes are counted as they arrive.
        if let Some(len) = resp.content_length() {
            if len > wire_limit {
                return Err(too_large(BodyError::WireTooLarge { limit: wire_limit }));
            }
            if encoding == Encoding::Identity && len > decoded_limit {
                return Err(too_large(BodyError::DecodedTooLarge {
                    limit: decoded_limit,
                }));
            }
        }
        let mut reader = BodyReader::new(encoding, wire_limit, decoded_limit);
        loop {
            let chunk = resp.chunk().await.map_err(|e| self.map_reqwest(url, e))?;
            let Some(chunk) = chunk else { break };
            reader.push(&chunk).map_err(too_large)?;
        }
        let wire = reader.wire_bytes();
        let body = reader.finish().map_err(too_large)?;
        Ok((body, wire))
    }
}
