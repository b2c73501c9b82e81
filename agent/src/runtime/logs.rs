//! Container logs: JSON lines `{"t":<unix ns>,"s":"stdout"|"stderr","d":"<line>"}` in
//! `root/<id>/container.log`, written by the shim and read by the agent.
//!
//! The file rotates as docker's json-file driver does: `container.log.1` is the newest rotated
//! file, `container.log.<max_files - 1>` the oldest. Readers never hold a whole file in memory:
//! a tail is found by scanning backwards in blocks, and everything is handed on in chunks of at
//! most [`MAX_CHUNK_BYTES`] of line data.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::LogConfig;

/// Lines longer than this are cut into several entries, as Docker does at 16 KiB.
pub const MAX_LINE: usize = 16 * 1024;
/// At most this much line data goes into one chunk handed to a reader's consumer, so one chunk
/// always fits a gRPC message (4 MiB by default) with room to spare.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// How often `follow` looks for growth of the log file.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// Bytes read from a file at a time, backwards (tail) and forwards.
const BLOCK: usize = 64 * 1024;
/// Bytes `follow` reads in one blocking step before handing the lines on.
const FOLLOW_READ: usize = 1024 * 1024;

/// Errors of reading or writing a container's log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A log file could not be opened, read, written, renamed or removed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The blocking task that read the log was cancelled or panicked.
    #[error("log reader task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// When the shim read the line, unix nanoseconds.
    pub timestamp_ns: i64,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line without its newline.
    pub data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Record<'a> {
    t: i64,
    s: &'a str,
    d: std::borrow::Cow<'a, str>,
}

/// Encodes one entry as a JSON line (newline included); the data is decoded as lossy UTF-8.
pub fn encode(timestamp_ns: i64, stream: &str, data: &[u8]) -> Vec<u8> {
    let record = Record {
        t: timestamp_ns,
        s: stream,
        d: String::from_utf8_lossy(data),
    };
    // Serializing a struct of an integer and two strings into a Vec cannot fail.
    let mut line = serde_json::to_vec(&record).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Decodes one JSON line of the log file.
pub fn decode(line: &[u8]) -> Option<LogEntry> {
    let record: Record<'_> = serde_json::from_slice(line).ok()?;
    Some(LogEntry {
        timestamp_ns: record.t,
        stream: record.s.to_string(),
        data: record.d.into_owned().into_bytes(),
    })
}

/// Splits a byte stream into lines, keeping the unfinished tail between reads.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit` for each complete line (without `\n`) and for each `MAX_LINE` chunk.
    pub fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8])) {
        while let Some(pos) = data.iter().position(|b| *b == b'\n') {
            self.pending.extend_from_slice(&data[..pos]);
            self.flush_chunks(&mut emit);
            emit(&self.pending);
            self.pending.clear();
            data = &data[pos + 1..];
        }
        self.pending.extend_from_slice(data);
        self.flush_chunks(&mut emit);
    }

    fn flush_chunks(&mut self, emit: &mut impl FnMut(&[u8])) {
        while self.pending.len() > MAX_LINE {
            emit(&self.pending[..MAX_LINE]);
            self.pending.drain(..MAX_LINE);
        }
    }

    /// At end of stream: emits the partial last line, if any.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
            self.pending.clear();
        }
    }
}

/// Appends encoded lines to `container.log`, rotating it as docker's json-file driver does.
#[derive(Debug)]
pub struct RotatingWriter {
    path: PathBuf,
    config: LogConfig,
    file: File,
    /// Bytes in the live file.
    size: u64,
}

impl RotatingWriter {
    /// Opens (or creates) the live file for appending; an existing file keeps its content.
    pub fn open(path: &Path, config: LogConfig) -> Result<Self, LogError> {
        let file = open_append(path)?;
        let size = file.metadata().map_err(io_err(path))?.len();
        Ok(RotatingWriter {
            path: path.to_path_buf(),
            config,
            file,
            size,
        })
    }

    /// Appends whole encoded lines (each ending in `\n`). Whenever the next line would take the
    /// live file past `max_size_bytes`, the file is rotated first, so a line is never split
    /// between two files; a line larger than the limit gets a file of its own.
    pub fn write_lines(&mut self, mut batch: &[u8]) -> Result<(), LogError> {
        while !batch.is_empty() {
            let max = self.config.max_size_bytes;
            let mut take = if max == 0 {
                batch.len()
            } else {
                whole_lines_within(batch, max.saturating_sub(self.size))
            };
            if take == 0 {
                if self.size > 0 {
                    self.rotate()?;
                    continue;
                }
                take = batch
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(batch.len(), |p| p + 1);
            }
            if let Err(source) = self.file.write_all(&batch[..take]) {
                // A partial write leaves the size unknown: ask the file.
                self.size = self.file.metadata().map(|m| m.len()).unwrap_or(self.size);
                return Err(LogError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
            self.size += take as u64;
            batch = &batch[take..];
        }
        Ok(())
    }

    /// Shifts `.k` to `.k+1` (the oldest first, so no rename overwrites a file still to be moved),
    /// drops what would exceed `max_files`, and starts a fresh live file. Renaming, never
    /// truncating, lets a follower holding the old file read it to its end.
    fn rotate(&mut self) -> Result<(), LogError> {
        let keep = self.config.max_files.max(1);
        if keep == 1 {
            remove_if_exists(&self.path)?;
        } else {
            remove_if_exists(&rotated(&self.path, keep - 1))?;
            for k in (1..keep - 1).rev() {
                rename_if_exists(&rotated(&self.path, k), &rotated(&self.path, k + 1))?;
            }
            rename_if_exists(&self.path, &rotated(&self.path, 1))?;
        }
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// The length of the longest prefix of `batch` made of whole lines and at most `room` bytes.
fn whole_lines_within(batch: &[u8], room: u64) -> usize {
    let limit = usize::try_from(room).unwrap_or(usize::MAX);
    if limit >= batch.len() {
        return batch.len();
    }
    batch[..limit]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1)
}

fn open_append(path: &Path) -> Result<File, LogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))
}

fn remove_if_exists(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> Result<(), LogError> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(from)(e)),
        _ => Ok(()),
    }
}

/// `container.log.<k>`.
fn rotated(path: &Path, k: u32) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{k}"));
    path.with_file_name(name)
}

/// Identifies a file across renames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &fs::Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// The log's files, oldest first: `container.log.<n>` by decreasing `n`, then `container.log`.
/// A missing directory or file is no error (nothing logged yet, or the container was removed).
fn files(path: &Path) -> Result<Vec<PathBuf>, LogError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let prefix = format!("{name}.");
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut numbered: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix(&prefix)?
                .parse::<u32>()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    numbered.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut out: Vec<PathBuf> = numbered.into_iter().map(|(_, p)| p).collect();
    if path.exists() {
        out.push(path.to_path_buf());
    }
    Ok(out)
}

/// One file of the log as a reader sees it: bytes `..end` are whole lines.
struct Segment<R> {
    file: R,
    end: u64,
}

/// Where a reader stopped: a file of the log, held open across renames, and an offset in it;
/// `follow` continues from there.
#[derive(Debug)]
pub struct FollowFrom {
    file: File,
    id: FileId,
    offset: u64,
}

/// Reads the last `tail` entries (`tail < 0`: all of them) of the log at `path` and its rotated
/// files, oldest first, handing them to `emit` in chunks of at most [`MAX_CHUNK_BYTES`] of line
/// data; `emit` returns false to stop. Blocking. Returns where the newest file ended, for
/// `follow` (`None` when there is no log yet). Undecodable lines are skipped.
pub fn read_chunks(
    path: &Path,
    tail: i64,
    mut emit: impl FnMut(Vec<LogEntry>) -> bool,
) -> Result<Option<FollowFrom>, LogError> {
    let mut segments = Vec::new();
    let mut last = None;
    for p in files(path)? {
        let mut file = match File::open(&p) {
            Ok(f) => f,
            // Rotated away (or removed) since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&p)(e)),
        };
        let meta = file.metadata().map_err(io_err(&p))?;
        let mut end = meta.len();
        if p == path {
            // A last line without its newline is still being written: `follow` will read it.
            end = whole_lines_end(&mut file, end).map_err(io_err(&p))?;
        }
        last = Some(FileId::of(&meta));
        segments.push(Segment { file, end });
    }
    read_segments(&mut segments, tail, &mut emit).map_err(io_err(path))?;
    // The newest file read; if a rotation left no live file for a moment, `follow` moves on from
    // this rotated one to whatever comes after it.
    Ok(segments.pop().zip(last).map(|(seg, id)| FollowFrom {
        file: seg.file,
        id,
        offset: seg.end,
    }))
}

/// The last `tail` entries of the log (`tail < 0`: all), collected. For small tails and tests:
/// servers stream with [`read_chunks`].
pub fn read_tail(path: &Path, tail: i64) -> Result<Vec<LogEntry>, LogError> {
    let mut out = Vec::new();
    read_chunks(path, tail, |chunk| {
        out.extend(chunk);
        true
    })?;
    Ok(out)
}

/// The end of the last complete line in `file[..len]`, found by reading backwards.
fn whole_lines_end<R: Read + Seek>(file: &mut R, len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; BLOCK];
    let mut pos = len;
    while pos > 0 {
        let n = (pos.min(BLOCK as u64)) as usize;
        pos -= n as u64;
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            return Ok(pos + i as u64 + 1);
        }
    }
    Ok(0)
}

/// Where the `n`-th last line of `file[..end]` starts, scanning backwards block by block; when
/// the file holds fewer lines, `Err(lines it holds)`.
fn nth_last_line_start<R: Read + Seek>(
    file: &mut R,
    end: u64,
    n: u64,
) -> io::Result<Result<u64, u64>> {
    if n == 0 {
        return Ok(Ok(end));
    }
    if end == 0 {
        return Ok(Err(0));
    }
    let mut buf = vec![0u8; BLOCK];
    // The last byte ends the last line (or belongs to it): not a line start.
    let mut pos = end - 1;
    let mut found = 0u64;
    while pos > 0 {
        let len = (pos.min(BLOCK as u64)) as usize;
        pos -= len as u64;
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut buf[..len])?;
        for i in (0..len).rev() {
            if buf[i] == b'\n' {
                found += 1;
                if found == n {
                    return Ok(Ok(pos + i as u64 + 1));
                }
            }
        }
    }
    Ok(Err(found + 1))
}

/// Finds where the tail starts (newest file first), then streams from there to the end.
fn read_segments<R: Read + Seek>(
    segments: &mut [Segment<R>],
    tail: i64,
    emit: &mut impl FnMut(Vec<LogEntry>) -> bool,
) -> io::Result<()> {
    let (mut first, mut offset) = (0, 0);
    if let Ok(mut left) = u64::try_from(tail) {
        first = segments.len();
        for (i, seg) in segments.iter_mut().enumerate().rev() {
            first = i;
            match nth_last_line_start(&mut seg.file, seg.end, left)? {
                Ok(start) => {
                    offset = start;
                    break;
                }
                Err(lines) => {
                    left -= lines;
                    offset = 0;
                }
            }
        }
    }
    let mut chunk = Chunk::default();
    for seg in segments.iter_mut().skip(first) {
        let mut lines = LineReader::default();
        seg.file.seek(SeekFrom::Start(offset))?;
        let mut left = seg.end - offset;
        let mut buf = vec![0u8; BLOCK];
        while left > 0 {
            let n = (left.min(BLOCK as u64)) as usize;
            seg.file.read_exact(&mut buf[..n])?;
            left -= n as u64;
            for entry in lines.push(&buf[..n]) {
                if let Some(full) = chunk.push(entry) {
                    if !emit(full) {
                        return Ok(());
                    }
                }
            }
        }
        // A rotated file's last line is whole even without its newline (the shim wrote no more).
        if let Some(entry) = lines.finish() {
            if let Some(full) = chunk.push(entry) {
                if !emit(full) {
                    return Ok(());
                }
            }
        }
        offset = 0;
    }
    if !chunk.entries.is_empty() {
        emit(chunk.entries);
    }
    Ok(())
}

/// Entries gathered up to [`MAX_CHUNK_BYTES`] of line data.
#[derive(Default)]
struct Chunk {
    entries: Vec<LogEntry>,
    bytes: usize,
}

impl Chunk {
    /// Adds an entry; returns the full chunk when this entry would not fit (it starts the next).
    fn push(&mut self, entry: LogEntry) -> Option<Vec<LogEntry>> {
        let size = entry.data.len();
        let full = if !self.entries.is_empty() && self.bytes + size > MAX_CHUNK_BYTES {
            self.bytes = 0;
            Some(std::mem::take(&mut self.entries))
        } else {
            None
        };
        self.bytes += size;
        self.entries.push(entry);
        full
    }
}

/// Decodes a byte stream of JSON lines, keeping the unfinished tail between reads.
#[derive(Debug, Default)]
struct LineReader {
    pending: Vec<u8>,
}

impl LineReader {
    fn push(&mut self, data: &[u8]) -> Vec<LogEntry> {
        let mut out = Vec::new();
        let mut rest = data;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let line: &[u8] = if self.pending.is_empty() {
                &rest[..pos]
            } else {
                self.pending.extend_from_slice(&rest[..pos]);
                &self.pending
            };
            if !line.is_empty() {
                out.extend(decode(line));
            }
            self.pending.clear();
            rest = &rest[pos + 1..];
        }
        self.pending.extend_from_slice(rest);
        out
    }

    fn finish(&mut self) -> Option<LogEntry> {
        let entry = decode(&self.pending);
        self.pending.clear();
        entry
    }
}

/// What one blocking step of `follow` found.
#[derive(Debug)]
enum Step {
    /// Bytes were read (maybe no whole line yet): read again at once.
    Read(Vec<LogEntry>),
    /// Moved on to the next file (rotation) or back to the start (truncation).
    Switched,
    /// At the end of the live file; `exited` if the container had exited before this step.
    Idle { exited: bool },
    /// The container's directory is gone.
    Gone,
}

/// The file `follow` reads and how far.
#[derive(Debug)]
struct Follower {
    path: PathBuf,
    at: Option<FollowFrom>,
    lines: LineReader,
}

impl Follower {
    /// Reads what the file it holds has gained; at its end, checks whether the live file was
    /// replaced and, if so, moves on to the next file of the rotation.
    fn step(&mut self) -> Result<Step, LogError> {
        // Looked at before reading: if the container had exited by now, this step sees every line.
        let exited = self.path.with_file_name("exit.json").exists();
        let Some(at) = self.at.as_mut() else {
            // No log yet: start at the oldest file once there is one.
            return Ok(match self.open_next(None)? {
                true => Step::Switched,
                false if self.dir_gone() => Step::Gone,
                false => Step::Idle { exited },
            });
        };
        let data = read_some(at, FOLLOW_READ).map_err(io_err(&self.path))?;
        if !data.is_empty() {
            return Ok(Step::Read(self.lines.push(&data)));
        }
        let meta = match fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Between a rotation's rename and its new file, or the container was removed.
                return Ok(if self.dir_gone() {
                    Step::Gone
                } else {
                    Step::Idle { exited }
                });
            }
            Err(e) => return Err(io_err(&self.path)(e)),
        };
        if FileId::of(&meta) == at.id {
            if meta.len() < at.offset {
                // Truncated in place: what is there now is new.
                at.offset = 0;
                self.lines = LineReader::default();
                return Ok(Step::Switched);
            }
            return Ok(Step::Idle { exited });
        }
        // Replaced. The shim wrote its last lines to the old file before renaming it: read them.
        let data = read_some(at, FOLLOW_READ).map_err(io_err(&self.path))?;
        if !data.is_empty() {
            return Ok(Step::Read(self.lines.push(&data)));
        }
        let from = at.id;
        let moved = self.open_next(Some(from))?;
        Ok(if moved {
            Step::Switched
        } else {
            Step::Idle { exited }
        })
    }

    /// Opens the file that comes after `after` in the rotation (the oldest file when `after` is
    /// unknown or was deleted: then every file left is newer). False if there is none yet.
    fn open_next(&mut self, after: Option<FileId>) -> Result<bool, LogError> {
        // A rename between listing and opening shows as a different file: list again.
        for _ in 0..3 {
            let mut chain = Vec::new();
            for p in files(&self.path)? {
                if let Ok(meta) = fs::metadata(&p) {
                    chain.push((p, FileId::of(&meta)));
                }
            }
            let next = match after.and_then(|id| chain.iter().position(|(_, f)| *f == id)) {
                Some(i) => chain.get(i + 1),
                None => chain.first(),
            };
            let Some((path, id)) = next else {
                return Ok(false);
            };
            let file = match File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(path)(e)),
            };
            let meta = file.metadata().map_err(io_err(path))?;
            if FileId::of(&meta) == *id {
                self.at = Some(FollowFrom {
                    file,
                    id: *id,
                    offset: 0,
                });
                self.lines = LineReader::default();
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn dir_gone(&self) -> bool {
        self.path.parent().is_some_and(|d| !d.exists())
    }
}

/// Reads up to `max` bytes from the position on.
fn read_some(at: &mut FollowFrom, max: usize) -> io::Result<Vec<u8>> {
    at.file.seek(SeekFrom::Start(at.offset))?;
    let mut data = Vec::new();
    (&mut at.file).take(max as u64).read_to_end(&mut data)?;
    at.offset += data.len() as u64;
    Ok(data)
}

/// Sends the log's new entries as they are written, in chunks, from `from` (where
/// [`read_chunks`] stopped; `None`: from the oldest file once one exists), across rotations.
/// File reading runs on the blocking pool. Returns when the receiver is dropped, when the
/// container is removed, or once it has exited (`exit.json` exists next to the log) and
/// everything written before that was sent: the shim writes `exit.json` after its last line.
pub async fn follow(
    path: PathBuf,
    from: Option<FollowFrom>,
    tx: mpsc::Sender<Vec<LogEntry>>,
) -> Result<(), LogError> {
    let mut follower = Follower {
        path,
        at: from,
        lines: LineReader::default(),
    };
    loop {
        let (back, step) = tokio::task::spawn_blocking(move || {
            let step = follower.step();
            (follower, step)
        })
        .await?;
        follower = back;
        match step? {
            Step::Read(entries) => {
                for chunk in split_by_size(entries) {
                    if tx.send(chunk).await.is_err() {
                        return Ok(());
                    }
                }
                continue;
            }
            Step::Switched => continue,
            Step::Idle { exited: true } | Step::Gone => return Ok(()),
            Step::Idle { exited: false } => {}
        }
        tokio::select! {
            _ = tx.closed() => return Ok(()),
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
    }
}

/// Cuts entries into chunks of at most [`MAX_CHUNK_BYTES`] of line data (an entry larger than
/// that alone).
fn split_by_size(entries: Vec<LogEntry>) -> Vec<Vec<LogEntry>> {
    let mut out = Vec::new();
    let mut chunk = Chunk::default();
    for e in entries {
        out.extend(chunk.push(e));
    }
    if !chunk.entries.is_empty() {
        out.push(chunk.entries);
    }
    out
}

#[cfg(test)]
#[path = "logs_tests.rs"]
mod tests;
