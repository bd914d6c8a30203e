//! What an export contains, produced page by page, resumable at any item.
//!
//! [`ExportSpec`] is an export's parameters: the synchronous routes build one from the query,
//! a job stores one. [`Producer`] turns it into bytes: a header, then pages of items (each with
//! the position to continue after it and the counts so far), then a footer. A synchronous
//! export writes everything in one go; a job checkpoints the position of the item that ended an
//! uploaded part and, in a later invocation, continues with [`Producer::resume`].

use std::collections::VecDeque;

use super::convos::{self as convo_export};
use super::dedup::Deduper;
use super::read_ahead::{ReadAhead, Source};
use super::scrub;
use super::spec::ConvoFormat;
pub use super::spec::{ExportSpec, Window};
pub use super::split::Keep;
use super::stages::Stages;
use super::training::Encoder;
use super::Counts;
use crate::convos::store::ConvoStore;
use crate::convos::Convo;
use crate::error::ApiError;
use crate::keys::Org;
use crate::snapshots::store::{Change, Filters, ReadStats, SnapshotStore};
use crate::AppState;

/// Conversation headers per page; their messages are read a few at a time.
const CONVO_PAGE: usize = 100;
/// Conversations whose messages are read at once.
const CONCURRENT_READS: usize = 8;

/// One produced item: its bytes (empty when skipped), where to continue after it, and the
/// counts including it.
#[derive(Debug)]
pub struct Item {
    /// Encoded bytes.
    pub bytes: Vec<u8>,
    /// Opaque position to resume after this item.
    pub position: String,
    /// Counts so far, this item included.
    pub counts: Counts,
    /// The dedup state's mark after this item (a job journals up to it when it checkpoints here).
    pub mark: u64,
}

/// Produces an export's bytes.
pub struct Producer<'a> {
    pub(super) state: &'a AppState,
    pub(super) org: Org,
    spec: ExportSpec,
    export_date: String,
    pub(super) encoder: Option<Encoder>,
    pub(super) counts: Counts,
    pub(super) position: Option<String>,
    pub(super) done: bool,
    /// The snapshots and messages read ahead of what is produced (snapshot exports).
    ahead: Option<ReadAhead>,
    /// Conversations of the current page not produced yet, with their activity keys.
    convos: VecDeque<(Convo, String)>,
    /// Changes of the current page of a scheduled export not produced yet.
    pub(super) changes: VecDeque<Change>,
    /// The source has no page after the current one.
    pub(super) source_done: bool,
    /// What this producer read from DynamoDB (capacity as reported by `ReturnConsumedCapacity`).
    pub(super) reads: ReadStats,
    /// Only the snapshots of one split (a split job's pass); `None`: every snapshot.
    keep: Option<Keep>,
    /// Redaction and dedup.
    pub(super) stages: Stages,
}

impl<'a> Producer<'a> {
    /// A producer from the start; `export_date` (RFC 3339) is written into JSON payloads.
    pub fn new(state: &'a AppState, org: &Org, spec: ExportSpec, export_date: &str) -> Self {
        Self::resume(state, org, spec, export_date, None, Counts::default())
    }

    /// A producer continuing after `position` with the counts reached there.
    pub fn resume(
        state: &'a AppState,
        org: &Org,
        spec: ExportSpec,
        export_date: &str,
        position: Option<String>,
        counts: Counts,
    ) -> Self {
        let encoder = match &spec {
            ExportSpec::Training { format, system, .. } => Some(Encoder::resume(*format, system.clone(), counts)),
            _ => None,
        };
        let stages = Stages {
            redaction: scrub::effective(spec.redaction(), state.config.export_redaction_required),
            region: Some(state.config.redaction_region),
            dedup: (!spec.dedup().is_none())
                .then(|| Deduper::new(spec.dedup()).with_limit(state.config.dedup_max_kept)),
            known: Default::default(),
        };
        Self {
            stages,
            state,
            org: org.clone(),
            spec,
            export_date: export_date.to_string(),
            encoder,
            counts,
            position,
            done: false,
            ahead: None,
            convos: VecDeque::new(),
            changes: VecDeque::new(),
            source_done: false,
            reads: ReadStats::default(),
            keep: None,
        }
    }

    /// Produces only the snapshots `keep` keeps (the others advance the position, unwritten and uncounted).
    pub fn keeping(mut self, keep: Option<Keep>) -> Self {
        self.keep = keep;
        self
    }

    /// Continues with `dedup` (a job's state replayed from its journal, or its earlier file's).
    pub fn with_dedup(mut self, dedup: Option<Deduper>) -> Self {
        if dedup.is_some() {
            self.stages.dedup = dedup;
        }
        self
    }

    /// The dedup state, for the job's next file.
    pub fn into_dedup(self) -> Option<Deduper> {
        self.stages.dedup
    }

    /// The dedup state (to journal what it kept up to an item's mark).
    pub fn dedup_mut(&mut self) -> Option<&mut Deduper> {
        self.stages.dedup.as_mut()
    }

    /// Counts so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// What this producer has read from DynamoDB so far (snapshot exports; logged by callers
    /// so an export's read cost shows in the function's logs).
    pub fn reads(&self) -> ReadStats {
        self.reads
    }

    /// Whether every item has been produced.
    pub fn done(&self) -> bool {
        self.done
    }

    /// The bytes before the first item.
    pub fn header(&self) -> Result<Vec<u8>, ApiError> {
        match (&self.spec, &self.encoder) {
            (ExportSpec::Training { .. }, Some(encoder)) => encoder.start(&self.export_date, self.org.as_str()),
            (ExportSpec::Conversations { format: ConvoFormat::Json, .. }, _) => {
                Ok(br#"{"success":true,"message":"Conversations exported successfully","data":["#.to_vec())
            }
            (
                ExportSpec::Conversations { format: ConvoFormat::Csv, .. }
                | ExportSpec::Conversation { format: ConvoFormat::Csv, .. },
                _,
            ) => convo_export::csv_head(),
            _ => Ok(Vec::new()),
        }
    }

    /// The bytes after the last item.
    pub fn footer(&self) -> Vec<u8> {
        match (&self.spec, &self.encoder) {
            (ExportSpec::Training { .. }, Some(encoder)) => encoder.finish(),
            (ExportSpec::Conversations { format: ConvoFormat::Json, .. }, _) => b"]}".to_vec(),
            _ => Vec::new(),
        }
    }

    /// How many items the export will have, when a count is cheap to get (`None` otherwise).
    pub async fn total(&self) -> Result<Option<u64>, ApiError> {
        match &self.spec {
            ExportSpec::Training { filters, changed: None, format, .. } if !format.is_chat() => Ok(Some(
                SnapshotStore::new(&self.state.dynamo, &self.state.config.table_name).count(&self.org, filters).await?,
            )),
            ExportSpec::Conversation { .. } => Ok(Some(1)),
            _ => Ok(None),
        }
    }

    /// The next items (a group small enough to hold in memory), or `None` once everything was produced.
    pub async fn next(&mut self) -> Result<Option<Vec<Item>>, ApiError> {
        if self.done {
            return Ok(None);
        }
        let spec = self.spec.clone();
        let items = match &spec {
            ExportSpec::Training { changed: Some(window), .. } => self.change_page(window).await?,
            ExportSpec::Training { filters, changed: None, .. } => self.snapshot_page(filters).await?,
            ExportSpec::Conversations { agent_id, format, from, to, limit, .. } => {
                self.convo_page(agent_id, *format, from.as_deref(), to.as_deref(), *limit).await?
            }
            ExportSpec::Conversation { agent_id, convo_id, format, .. } => {
                self.done = true;
                if self.position.is_some() {
                    // Resumed after its only item: nothing is left to produce.
                    return Ok(Some(Vec::new()));
                }
                let store = ConvoStore::new(&self.state.dynamo, &self.state.config.table_name);
                let header =
                    store.get_header(&self.org, agent_id, convo_id).await?.ok_or(crate::convos::store::NOT_FOUND)?;
                let messages = store.messages(&self.org, agent_id, convo_id).await?;
                let (header, messages) = self.stages.convo(&mut self.counts, &header, &messages);
                let bytes = match format {
                    ConvoFormat::Json => convo_export::conversation_json(&header, &messages)?,
                    ConvoFormat::Csv => convo_export::csv_rows(&header, &messages)?,
                };
                self.counts.items += 1;
                vec![Item { bytes, position: convo_id.clone(), counts: self.counts, mark: 0 }]
            }
        };
        if let Some(last) = items.last() {
            self.position = Some(last.position.clone());
        }
        Ok(Some(items))
    }

    async fn snapshot_page(&mut self, filters: &Filters) -> Result<Vec<Item>, ApiError> {
        let ahead = self.ahead.get_or_insert_with(|| {
            // Continue after the last snapshot produced (a resumed job: its checkpoint).
            ReadAhead::start(
                Source {
                    dynamo: (*self.state.dynamo).clone(),
                    table: self.state.config.table_name.clone(),
                    org: self.org.clone(),
                    filters: filters.clone(),
                    after: self.position.clone(),
                    keep: self.keep.clone(),
                },
                self.state.config.export_read_ahead,
            )
        });
        let Some(group) = ahead.next().await? else {
            return Err(ApiError::internal("export", "the read-ahead ended before its last group"));
        };
        self.reads.scanned += group.reads.scanned;
        self.reads.capacity += group.reads.capacity;
        self.done = group.last;
        let Some(encoder) = self.encoder.as_mut() else { return Err(ApiError::internal("export", "no encoder")) };
        let mut items = Vec::with_capacity(group.snapshots.len());
        for (s, messages) in group.snapshots.iter().zip(group.messages) {
            let bytes = match messages {
                Some(messages) => self.stages.snapshot(encoder, s, &messages)?,
                None => Vec::new(),
            };
            items.push(Item { bytes, position: s.id.clone(), counts: encoder.counts, mark: self.stages.mark() });
        }
        self.counts = encoder.counts;
        Ok(items)
    }

    async fn convo_page(
        &mut self,
        agent: &str,
        format: ConvoFormat,
        from: Option<&str>,
        to: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<Item>, ApiError> {
        use futures::{stream, StreamExt, TryStreamExt};
        let limit = limit.unwrap_or(convo_export::MAX_EXPORT_LIMIT);
        let store = ConvoStore::new(&self.state.dynamo, &self.state.config.table_name);
        let left = limit.saturating_sub(self.counts.items as usize + self.convos.len());
        if self.convos.is_empty() && !self.source_done {
            if left == 0 {
                self.source_done = true;
            } else {
                let (page, more) = store
                    .activity_page(&self.org, agent, from, to, self.position.as_deref(), left.min(CONVO_PAGE))
                    .await?;
                self.source_done = !more || page.len() >= left;
                self.convos = page.into();
            }
        }
        // A few conversations at a time: a conversation's messages are unbounded.
        let group: Vec<(Convo, String)> = self.convos.drain(..self.convos.len().min(CONCURRENT_READS)).collect();
        self.done = self.convos.is_empty() && self.source_done;
        let org = &self.org;
        let mut with_messages = stream::iter(group.into_iter().map(|(c, key)| {
            let store = &store;
            async move {
                let messages = store.messages(org, &c.agent_id, &c.id).await?;
                Ok::<_, ApiError>((c, key, messages))
            }
        }))
        .buffered(CONCURRENT_READS);
        let mut items = Vec::new();
        while let Some((c, key, messages)) = with_messages.try_next().await? {
            let (c, messages) = self.stages.convo(&mut self.counts, &c, &messages);
            let bytes = match format {
                ConvoFormat::Json => {
                    let mut bytes = if self.counts.items == 0 { Vec::new() } else { b",".to_vec() };
                    bytes.extend(
                        serde_json::to_vec(&convo_export::export_item(&c, &messages))
                            .map_err(|e| ApiError::internal("encode export", e))?,
                    );
                    bytes
                }
                ConvoFormat::Csv => convo_export::csv_rows(&c, &messages)?,
            };
            self.counts.items += 1;
            items.push(Item { bytes, position: key, counts: self.counts, mark: 0 });
        }
        Ok(items)
    }
}
