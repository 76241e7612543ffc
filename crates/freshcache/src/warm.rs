//! Warming: preload a list of keys (from a manifest file or the `warm:` config) so the signals
//! a run needs are fresh before it starts — fetched from a URL, read from a file, or only
//! checked when the producer writes them itself.

use std::path::Path;

use serde::Serialize;

use crate::cache::{Cache, Value};
use crate::entry::Codec;
use crate::error::Result;
use crate::fetch::{FetchOutcome, Fetcher};
use crate::key::Key;

pub use crate::config::{RawWarmItem, WarmItem, WarmSource, load_manifest, validate};

/// What warming did for one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WarmStatus {
    /// Already fresh: nothing done.
    Fresh,
    /// Loaded (fetched, re-validated or read from its file).
    Loaded,
    /// Not fresh and nothing could be loaded.
    Failed,
}

/// One line of the warming report.
#[derive(Clone, Debug, Serialize)]
pub struct WarmResult {
    /// The key the item was listed under.
    pub key: String,
    /// What happened.
    pub status: WarmStatus,
    /// Why it failed, when it did.
    pub reason: Option<String>,
    /// Whether readiness waits for it.
    pub critical: bool,
}

/// What a warm-up did: one result per manifest item, in manifest order.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WarmReport {
    /// One result per item, in order.
    pub items: Vec<WarmResult>,
}

impl WarmReport {
    /// Items with `status`.
    #[must_use]
    pub fn count(&self, status: WarmStatus) -> usize {
        self.items.iter().filter(|i| i.status == status).count()
    }

    /// True when no item failed.
    #[must_use]
    pub fn all_ok(&self) -> bool {
        self.count(WarmStatus::Failed) == 0
    }
}

fn codec_for(path: &Path) -> Codec {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Codec::Json,
        Some("txt" | "html" | "xml" | "md") => Codec::Text,
        Some("msgpack") => Codec::MsgPack,
        _ => Codec::Bytes,
    }
}

/// Items read from files stored per batch when warming.
const WARM_BATCH: usize = 512;

impl Cache {
    /// Makes each item fresh: already-fresh items are left alone, the rest are fetched or read;
    /// `progress(done, total, result)` is called after each item.
    ///
    /// # Errors
    /// Only for a fetcher that cannot be built; per-item failures are in the report.
    pub async fn warm(
        &self,
        items: &[WarmItem],
        fetcher: &Fetcher,
        mut progress: impl FnMut(usize, usize, &WarmResult),
    ) -> Result<WarmReport> {
        let mut report = WarmReport::default();
        let mut i = 0;
        while i < items.len() {
            // A run of items read from files is stored in batches (one transaction each);
            // other items one by one. Results come in manifest order either way.
            let files = items[i..]
                .iter()
                .take_while(|it| matches!(it.source, WarmSource::File(_)))
                .count();
            let results = if files > 0 {
                let mut results = Vec::with_capacity(files);
                for chunk in items[i..i + files].chunks(WARM_BATCH) {
                    results.extend(self.warm_files(chunk).await);
                }
                results
            } else {
                vec![self.warm_one(&items[i], fetcher).await]
            };
            i += results.len();
            for result in results {
                report.items.push(result);
                if let Some(last) = report.items.last() {
                    progress(report.items.len(), items.len(), last);
                }
            }
        }
        Ok(report)
    }

    /// Warms items read from files with [`Cache::set_many`]: items already fresh are left,
    /// unreadable files and refused values fail alone, the rest are stored in one batch.
    async fn warm_files(&self, items: &[WarmItem]) -> Vec<WarmResult> {
        let mut results: Vec<WarmResult> = items
            .iter()
            .map(|item| WarmResult {
                key: item.key.to_string(),
                status: WarmStatus::Loaded,
                reason: None,
                critical: item.critical,
            })
            .collect();
        let mut pending: Vec<(usize, Key, Value)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let WarmSource::File(path) = &item.source else {
                continue;
            };
            let failed = match self.inspect(&item.key) {
                Ok(ins) if ins.fresh => {
                    results[i].status = WarmStatus::Fresh;
                    continue;
                }
                Ok(_) => match std::fs::read(path) {
                    Ok(bytes) => {
                        let value = Value::bytes(bytes).codec(codec_for(path));
                        pending.push((i, item.key.clone(), value));
                        continue;
                    }
                    Err(e) => crate::error::Error::Io {
                        path: path.clone(),
                        source: e,
                    }
                    .to_string(),
                },
                Err(e) => e.to_string(),
            };
            results[i].status = WarmStatus::Failed;
            results[i].reason = Some(failed);
        }
        // Refused items fail alone; the others are stored in a second attempt.
        for _ in 0..2 {
            if pending.is_empty() {
                break;
            }
            let batch = pending.iter().map(|(_, k, v)| (k.clone(), v.clone()));
            match self.set_many(batch).await {
                Ok(_) => {
                    pending.clear();
                }
                Err(crate::error::Error::InvalidBatch { refused, .. }) => {
                    let mut refused = refused.into_iter().peekable();
                    let mut kept = Vec::with_capacity(pending.len());
                    for (n, item) in pending.into_iter().enumerate() {
                        match refused.next_if(|r| r.index == n) {
                            Some(r) => {
                                results[item.0].status = WarmStatus::Failed;
                                results[item.0].reason = Some(r.error.to_string());
                            }
                            None => kept.push(item),
                        }
                    }
                    pending = kept;
                }
                Err(e) => {
                    for (i, _, _) in pending.drain(..) {
                        results[i].status = WarmStatus::Failed;
                        results[i].reason = Some(e.to_string());
                    }
                }
            }
        }
        for (i, _, _) in pending {
            results[i].status = WarmStatus::Failed;
            results[i].reason = Some("refused when stored with the rest of its batch".into());
        }
        results
    }

    async fn warm_one(&self, item: &WarmItem, fetcher: &Fetcher) -> WarmResult {
        let done = |status, reason: Option<String>| WarmResult {
            key: item.key.to_string(),
            status,
            reason,
            critical: item.critical,
        };
        match self.inspect(&item.key) {
            Ok(ins) if ins.fresh => return done(WarmStatus::Fresh, None),
            Ok(_) => {}
            Err(e) => return done(WarmStatus::Failed, Some(e.to_string())),
        }
        let loaded = match &item.source {
            WarmSource::Url(url) => {
                fetcher
                    .fetch(self, &item.key, url)
                    .await
                    .and_then(|o| match o {
                        FetchOutcome::Fetched { .. } | FetchOutcome::Revalidated { .. } => Ok(()),
                        other => Err(crate::error::Error::Corrupt {
                            reason: format!("the feed's answer was not stored: {other:?}"),
                        }),
                    })
            }
            WarmSource::File(path) => match std::fs::read(path) {
                Ok(bytes) => self
                    .set(&item.key, Value::bytes(bytes).codec(codec_for(path)))
                    .await
                    .map(|_| ()),
                Err(e) => Err(crate::error::Error::Io {
                    path: path.clone(),
                    source: e,
                }),
            },
            WarmSource::CheckOnly => {
                return done(
                    WarmStatus::Failed,
                    Some("not fresh, and the item names no url or file to load it from".into()),
                );
            }
        };
        match loaded {
            Ok(()) => done(WarmStatus::Loaded, None),
            Err(e) => done(WarmStatus::Failed, Some(e.to_string())),
        }
    }

    /// True when every critical item is fresh now (for readiness).
    ///
    /// # Errors
    /// Key or index errors.
    pub async fn critical_fresh(&self, items: &[WarmItem]) -> Result<bool> {
        for item in items.iter().filter(|i| i.critical) {
            if !matches!(self.inspect(&item.key), Ok(ins) if ins.fresh) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
