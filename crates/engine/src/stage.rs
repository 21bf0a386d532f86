//! Staging: a model's records sorted by match key on disk, whatever the model's size.
//!
//! Rows stream in from the warehouse in the model's order; the engine needs them by key, to
//! walk them alongside the snapshot (also in key order) and to see every copy of a duplicated
//! key together. An external merge sort keeps a bounded number of records in memory, spills
//! sorted segments to the run's scratch directory, and merges the segments back with a heap;
//! a thread of its own does the sorting and the file work, so the async side only sends and
//! receives records. (Written here rather than taken from a crate: the external-sort crates
//! bring a thread pool and documentation tooling as build dependencies, for sixty lines.)

use crate::prepare::PreparedRecord;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// Records held in memory before a sorted segment is written to disk, at most.
const SEGMENT_RECORDS: usize = 100_000;
/// Records handed between the async side and the sorting thread in one message: one by one,
/// the hand-over woke a thread for every record.
const BATCH_RECORDS: usize = 256;
/// Messages waiting between the async side and the sorting thread, each way.
const CHANNEL_BATCHES: usize = 8;

/// One prepared record as it is staged: its payload as canonical JSON and its hash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct StagedRecord {
    // Field order is sort order: by match key, then by position in the model.
    pub(crate) match_key: String,
    pub(crate) row_number: u64,
    pub(crate) key: String,
    pub(crate) payload_json: String,
    pub(crate) payload_hash: String,
    /// `(key, hash)` from the warehouse with change detection there; both empty without.
    pub(crate) warehouse_key: String,
    pub(crate) warehouse_hash: String,
}

impl StagedRecord {
    pub(crate) fn from_prepared(record: PreparedRecord) -> StagedRecord {
        let (warehouse_key, warehouse_hash) = match record.warehouse_ack {
            Some(ack) => (ack.key, ack.hash),
            None => (String::new(), String::new()),
        };
        StagedRecord {
            warehouse_key,
            warehouse_hash,
            payload_hash: record.payload_hash,
            payload_json: record.payload_json,
            match_key: record.match_key,
            row_number: record.row_number,
            key: record.key,
        }
    }

    /// The warehouse's key and hash (change detection in the warehouse), without reading the
    /// payload back.
    pub(crate) fn into_warehouse_ack(self) -> Option<crate::prepare::WarehouseAck> {
        warehouse_ack(self.warehouse_key, self.warehouse_hash)
    }

    pub(crate) fn into_prepared(self) -> PreparedRecord {
        let payload = serde_json::from_str(&self.payload_json)
            .ok()
            .and_then(|json| ferry_core::Payload::from_json(&json))
            .unwrap_or_default();
        PreparedRecord {
            row_number: self.row_number,
            key: self.key,
            match_key: self.match_key,
            payload,
            payload_json: self.payload_json,
            payload_hash: self.payload_hash,
            warehouse_ack: warehouse_ack(self.warehouse_key, self.warehouse_hash),
        }
    }
}

/// A staged record's warehouse key and hash; both empty without change detection there.
fn warehouse_ack(key: String, hash: String) -> Option<crate::prepare::WarehouseAck> {
    (!hash.is_empty()).then_some(crate::prepare::WarehouseAck { key, hash })
}

impl StagedRecord {
    fn encode<W: Write>(&self, writer: &mut W) -> std::io::Result<()> {
        write_text(writer, &self.match_key)?;
        writer.write_all(&self.row_number.to_le_bytes())?;
        write_text(writer, &self.key)?;
        write_text(writer, &self.payload_json)?;
        write_text(writer, &self.payload_hash)?;
        write_text(writer, &self.warehouse_key)?;
        write_text(writer, &self.warehouse_hash)
    }

    /// The next record of a segment; `None` at its end.
    fn decode<R: Read>(reader: &mut R) -> std::io::Result<Option<StagedRecord>> {
        let match_key = match read_text(reader) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut row_number = [0u8; 8];
        reader.read_exact(&mut row_number)?;
        Ok(Some(StagedRecord {
            match_key,
            row_number: u64::from_le_bytes(row_number),
            key: read_text(reader)?,
            payload_json: read_text(reader)?,
            payload_hash: read_text(reader)?,
            warehouse_key: read_text(reader)?,
            warehouse_hash: read_text(reader)?,
        }))
    }

    fn size(&self) -> usize {
        self.match_key.len()
            + self.key.len()
            + self.payload_json.len()
            + self.payload_hash.len()
            + self.warehouse_key.len()
            + self.warehouse_hash.len()
            + 144
    }
}

/// Bytes of records held in memory before a sorted segment is written to disk.
const SEGMENT_BYTES: usize = 32 * 1024 * 1024;

/// An external merge sort of staged records.
struct Sorter {
    dir: PathBuf,
    buffer: Vec<StagedRecord>,
    buffered_bytes: usize,
    segments: Vec<PathBuf>,
}

impl Sorter {
    fn new(dir: PathBuf) -> Sorter {
        Sorter {
            dir,
            buffer: Vec::new(),
            buffered_bytes: 0,
            segments: Vec::new(),
        }
    }

    fn push(&mut self, record: StagedRecord) -> std::io::Result<()> {
        self.buffered_bytes += record.size();
        self.buffer.push(record);
        if self.buffered_bytes >= SEGMENT_BYTES || self.buffer.len() >= SEGMENT_RECORDS {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> std::io::Result<()> {
        self.buffer.sort_unstable();
        let path = self.dir.join(format!("segment-{}", self.segments.len()));
        let mut writer = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        for record in self.buffer.drain(..) {
            record.encode(&mut writer)?;
        }
        writer.flush()?;
        self.segments.push(path);
        self.buffered_bytes = 0;
        Ok(())
    }

    /// Every record pushed, in order.
    fn finish(mut self) -> std::io::Result<Merged> {
        if self.segments.is_empty() {
            self.buffer.sort_unstable();
            return Ok(Merged::Memory(std::mem::take(&mut self.buffer).into_iter()));
        }
        if !self.buffer.is_empty() {
            self.spill()?;
        }
        let mut readers = Vec::with_capacity(self.segments.len());
        let mut heap = BinaryHeap::new();
        for (index, path) in self.segments.iter().enumerate() {
            let mut reader = BufReader::with_capacity(64 * 1024, File::open(path)?);
            if let Some(record) = StagedRecord::decode(&mut reader)? {
                heap.push(Reverse((record, index)));
            }
            readers.push(reader);
        }
        Ok(Merged::Segments { readers, heap })
    }
}

/// The sorted records: from memory, or merged from the spilled segments.
enum Merged {
    Memory(std::vec::IntoIter<StagedRecord>),
    Segments {
        readers: Vec<BufReader<File>>,
        heap: BinaryHeap<Reverse<(StagedRecord, usize)>>,
    },
}

impl Iterator for Merged {
    type Item = std::io::Result<StagedRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Merged::Memory(records) => records.next().map(Ok),
            Merged::Segments { readers, heap } => {
                let Reverse((record, index)) = heap.pop()?;
                match StagedRecord::decode(&mut readers[index]) {
                    Ok(Some(next)) => heap.push(Reverse((next, index))),
                    Ok(None) => {}
                    Err(error) => return Some(Err(error)),
                }
                Some(Ok(record))
            }
        }
    }
}

fn write_text<W: Write>(writer: &mut W, text: &str) -> std::io::Result<()> {
    let length = u32::try_from(text.len()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "a staged text over 4 GiB")
    })?;
    writer.write_all(&length.to_le_bytes())?;
    writer.write_all(text.as_bytes())
}

fn read_text<R: Read>(reader: &mut R) -> std::io::Result<String> {
    let mut length = [0u8; 4];
    reader.read_exact(&mut length)?;
    let mut bytes = vec![0u8; u32::from_le_bytes(length) as usize];
    reader.read_exact(&mut bytes)?;
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The sorter, fed from async code. Dropping it (or the [`Sorted`] it becomes) before the end
/// stops the thread without sorting what it holds.
pub(crate) struct Stage {
    input: mpsc::Sender<Vec<StagedRecord>>,
    /// Records not handed to the thread yet (less than a batch).
    batch: Vec<StagedRecord>,
    output: mpsc::Receiver<Result<Vec<StagedRecord>, String>>,
    records: u64,
    abandon_on_drop: AbandonOnDrop,
}

/// Set when the staged records are no longer wanted (a stopped or failed run).
#[derive(Clone, Default)]
struct Abandoned(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Abandoned {
    fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Marks the stage abandoned when dropped.
struct AbandonOnDrop(Abandoned);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        (self.0).0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Stage {
    /// Starts the sorting thread; segments go under `scratch` (removed when the sort ends).
    pub(crate) fn start(scratch: &Path) -> Result<Stage, String> {
        let (input, mut to_sort) = mpsc::channel::<Vec<StagedRecord>>(CHANNEL_BATCHES);
        let (sorted, output) = mpsc::channel(CHANNEL_BATCHES);
        let scratch: PathBuf = scratch.to_path_buf();
        let abandoned = Abandoned::default();
        let seen_by_thread = abandoned.clone();
        std::thread::Builder::new()
            .name("ferry-stage".into())
            .spawn(move || {
                let failed = |error: std::io::Error| {
                    format!("staging the model's records on disk failed: {error}")
                };
                let mut sorter = Sorter::new(scratch);
                while let Some(records) = to_sort.blocking_recv() {
                    for record in records {
                        if let Err(error) = sorter.push(record) {
                            let _ = sorted.blocking_send(Err(failed(error)));
                            return;
                        }
                    }
                }
                if seen_by_thread.is_set() {
                    return;
                }
                match sorter.finish() {
                    Ok(iterator) => {
                        let mut batch = Vec::with_capacity(BATCH_RECORDS);
                        for record in iterator {
                            match record {
                                Ok(record) => batch.push(record),
                                Err(error) => {
                                    let _ = sorted.blocking_send(Err(failed(error)));
                                    return;
                                }
                            }
                            if batch.len() == BATCH_RECORDS {
                                let full = std::mem::replace(
                                    &mut batch,
                                    Vec::with_capacity(BATCH_RECORDS),
                                );
                                // The receiver went away: the run stopped; the sort files go
                                // with us.
                                if sorted.blocking_send(Ok(full)).is_err() {
                                    return;
                                }
                            }
                        }
                        if !batch.is_empty() {
                            let _ = sorted.blocking_send(Ok(batch));
                        }
                    }
                    Err(error) => {
                        let _ = sorted.blocking_send(Err(failed(error)));
                    }
                }
            })
            .map_err(|e| format!("cannot start the staging thread: {e}"))?;
        Ok(Stage {
            input,
            batch: Vec::with_capacity(BATCH_RECORDS),
            output,
            records: 0,
            abandon_on_drop: AbandonOnDrop(abandoned),
        })
    }

    pub(crate) async fn push(&mut self, record: StagedRecord) -> Result<(), String> {
        self.records += 1;
        self.batch.push(record);
        if self.batch.len() >= BATCH_RECORDS {
            self.send_batch().await?;
        }
        Ok(())
    }

    async fn send_batch(&mut self) -> Result<(), String> {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_RECORDS));
        self.input
            .send(batch)
            .await
            .map_err(|_| "the staging thread stopped unexpectedly".to_string())
    }

    /// Ends the input; the records then come back sorted.
    pub(crate) async fn finish(mut self) -> Result<Sorted, String> {
        if !self.batch.is_empty() {
            self.send_batch().await?;
        }
        let Stage {
            input,
            output,
            records,
            abandon_on_drop,
            ..
        } = self;
        drop(input);
        Ok(Sorted {
            output,
            expected: records,
            received: 0,
            batch: Vec::new().into_iter(),
            peeked: None,
            _abandon_on_drop: abandon_on_drop,
        })
    }
}

/// The staged records in key order.
pub(crate) struct Sorted {
    output: mpsc::Receiver<Result<Vec<StagedRecord>, String>>,
    expected: u64,
    received: u64,
    /// The rest of the last batch received.
    batch: std::vec::IntoIter<StagedRecord>,
    peeked: Option<StagedRecord>,
    _abandon_on_drop: AbandonOnDrop,
}

/// The copies of one match key: one record, or several (a duplicated key).
pub(crate) enum KeyGroup {
    One(StagedRecord),
    /// Every copy's row number and key as written, in model order; `more` copies beyond
    /// those listed (a pathological model repeating one key a million times stays bounded).
    Duplicates {
        match_key: String,
        copies: Vec<(u64, String)>,
        more: u64,
    },
}

/// The rows of one key, for a record made of several rows (an invoice's lines): the first
/// `keep` rows whole, in model order, and how many more there were.
pub(crate) struct RowGroup {
    pub(crate) rows: Vec<StagedRecord>,
    pub(crate) more: u64,
}

/// Copies of one key kept for the rejection messages; more are counted, not kept.
const DUPLICATES_KEPT: usize = 10_000;

impl Sorted {
    async fn next_record(&mut self) -> Result<Option<StagedRecord>, String> {
        if let Some(record) = self.peeked.take() {
            return Ok(Some(record));
        }
        loop {
            if let Some(record) = self.batch.next() {
                self.received += 1;
                return Ok(Some(record));
            }
            match self.output.recv().await {
                Some(Ok(batch)) => self.batch = batch.into_iter(),
                Some(Err(error)) => return Err(error),
                None => break,
            }
        }
        if self.received == self.expected {
            return Ok(None);
        }
        Err(format!(
            "the staging thread stopped after {} of {} records",
            self.received, self.expected
        ))
    }

    /// The next key's rows, each kept whole up to `keep` of them (a record made of rows).
    pub(crate) async fn next_rows(&mut self, keep: usize) -> Result<Option<RowGroup>, String> {
        let Some(first) = self.next_record().await? else {
            return Ok(None);
        };
        let mut group = RowGroup {
            rows: vec![first],
            more: 0,
        };
        while let Some(next) = self.next_record().await? {
            if next.match_key != group.rows[0].match_key {
                self.peeked = Some(next);
                break;
            }
            if group.rows.len() < keep {
                group.rows.push(next);
            } else {
                group.more += 1;
            }
        }
        Ok(Some(group))
    }

    /// The next key's records.
    pub(crate) async fn next_group(&mut self) -> Result<Option<KeyGroup>, String> {
        let Some(first) = self.next_record().await? else {
            return Ok(None);
        };
        let mut copies: Vec<(u64, String)> = Vec::new();
        let mut more = 0u64;
        while let Some(next) = self.next_record().await? {
            if next.match_key != first.match_key {
                self.peeked = Some(next);
                break;
            }
            if copies.is_empty() {
                copies.push((first.row_number, first.key.clone()));
            }
            if copies.len() < DUPLICATES_KEPT {
                copies.push((next.row_number, next.key));
            } else {
                more += 1;
            }
        }
        Ok(Some(if copies.is_empty() {
            KeyGroup::One(first)
        } else {
            KeyGroup::Duplicates {
                match_key: first.match_key,
                copies,
                more,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(key: &str, row: u64) -> StagedRecord {
        StagedRecord {
            match_key: key.to_lowercase(),
            row_number: row,
            key: key.to_string(),
            payload_json: format!(r#"{{"email":"{key}"}}"#),
            payload_hash: "h".into(),
            warehouse_key: String::new(),
            warehouse_hash: String::new(),
        }
    }

    /// Records come back by key then row, across several spilled segments, and repeated keys
    /// come back as one group.
    #[tokio::test]
    async fn records_come_back_sorted_and_duplicates_grouped() {
        let scratch = tempfile::tempdir().unwrap();
        let mut stage = Stage::start(scratch.path()).unwrap();
        let total = SEGMENT_RECORDS as u64 * 2 + 17;
        // Every key once, in reverse, and `k00000005` three more times: three segments.
        for row in 1..=total {
            let key = format!("k{:08}", total - row);
            stage.push(staged(&key, row)).await.unwrap();
        }
        for row in [total + 1, total + 2, total + 3] {
            stage.push(staged("K00000005", row)).await.unwrap();
        }
        let mut sorted = stage.finish().await.unwrap();
        let mut previous = String::new();
        let mut singles = 0u64;
        let mut duplicated = Vec::new();
        while let Some(group) = sorted.next_group().await.unwrap() {
            match group {
                KeyGroup::One(record) => {
                    assert!(
                        record.match_key > previous,
                        "{} after {previous}",
                        record.match_key
                    );
                    previous = record.match_key;
                    singles += 1;
                }
                KeyGroup::Duplicates { copies, more, .. } => {
                    duplicated.push((copies, more));
                }
            }
        }
        assert_eq!(singles, total - 1);
        assert_eq!(duplicated.len(), 1);
        let (copies, more) = &duplicated[0];
        assert_eq!(more, &0);
        let rows: Vec<u64> = copies.iter().map(|(row, _)| *row).collect();
        assert_eq!(rows, [total - 5, total + 1, total + 2, total + 3]);
    }

    #[test]
    fn a_record_survives_its_disk_form() {
        let record = StagedRecord {
            match_key: "ada@x.com".into(),
            row_number: 7,
            key: "Ada@X.com".into(),
            payload_json: r#"{"name":"Ada é"}"#.into(),
            payload_hash: "abc".into(),
            warehouse_key: "ada@x.com".into(),
            warehouse_hash: "0cc175b9c0f1b6a831c399e269772661".into(),
        };
        let mut bytes = Vec::new();
        record.encode(&mut bytes).unwrap();
        let mut reader = bytes.as_slice();
        assert_eq!(StagedRecord::decode(&mut reader).unwrap(), Some(record));
        assert_eq!(StagedRecord::decode(&mut reader).unwrap(), None);
    }
}
