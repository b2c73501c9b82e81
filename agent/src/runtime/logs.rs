//! Container logs: JSON lines `{"t":<unix ns>,"s":"stdout"|"stderr","d":"<line>"}` in
//! `root/<id>/container.log`, written by the shim and read by the agent.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Lines longer than this are cut into several entries, as Docker does at 16 KiB.
pub const MAX_LINE: usize = 16 * 1024;
/// How often `follow` looks for growth of the log file.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

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

/// The last `tail` entries of a log file (`tail < 0`: all of them). Undecodable lines are skipped.
pub fn read_tail(path: &Path, tail: i64) -> Result<Vec<LogEntry>, std::io::Error> {
    let data = std::fs::read(path)?;
    let mut entries: Vec<LogEntry> = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(decode)
        .collect();
    if let Ok(tail) = usize::try_from(tail) {
        let skip = entries.len().saturating_sub(tail);
        entries.drain(..skip);
    }
    Ok(entries)
}

/// Sends the entries of a log file from byte `from_offset` on, then follows it as it grows (checked
/// every 100 ms). Returns when the receiver is dropped, when the file cannot be read, or once the
/// container has exited (`exit.json` exists next to the log) and everything written before that
/// has been sent: the shim writes `exit.json` only after its last log line.
pub async fn follow(path: &Path, from_offset: u64, tx: tokio::sync::mpsc::Sender<LogEntry>) {
    let exit_file = path.with_file_name("exit.json");
    let mut offset = from_offset;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        // Looked at before reading: if the container had exited by now, this read sees every line.
        let exited = exit_file.exists();
        let Ok(chunk) = read_from(path, offset) else {
            return;
        };
        offset += chunk.len() as u64;
        pending.extend_from_slice(&chunk);
        // Only complete lines: a line without its newline is still being written.
        if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
            let complete: Vec<u8> = pending.drain(..=end).collect();
            for line in complete.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                if let Some(entry) = decode(line) {
                    if tx.send(entry).await.is_err() {
                        return;
                    }
                }
            }
        }
        if exited && chunk.is_empty() {
            return;
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
        }
    }
}

fn read_from(path: &Path, offset: u64) -> Result<Vec<u8>, std::io::Error> {
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut s = LineSplitter::default();
        for c in chunks {
            s.push(c, |l| out.push(l.to_vec()));
        }
        s.finish(|l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn splitter_joins_partial_reads_and_flushes_tail() {
        assert_eq!(
            split(&[b"a\nb", b"c\n\nd"]),
            vec![b"a".to_vec(), b"bc".to_vec(), vec![], b"d".to_vec()]
        );
        let long = vec![b'x'; MAX_LINE + 10];
        let out = split(&[&long]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), MAX_LINE);
    }

    #[test]
    fn encode_decode_round_trip_with_invalid_utf8() {
        let line = encode(7, "stderr", b"h\"i\xff");
        assert_eq!(*line.last().unwrap(), b'\n');
        let entry = decode(&line[..line.len() - 1]).unwrap();
        assert_eq!(entry.timestamp_ns, 7);
        assert_eq!(entry.stream, "stderr");
        assert_eq!(entry.data, "h\"i\u{fffd}".as_bytes());
    }

    #[test]
    fn tail_returns_last_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        let mut data = Vec::new();
        for i in 0..5 {
            data.extend(encode(i, "stdout", format!("l{i}").as_bytes()));
        }
        std::fs::write(&path, &data).unwrap();
        assert_eq!(read_tail(&path, -1).unwrap().len(), 5);
        let tail = read_tail(&path, 2).unwrap();
        assert_eq!(
            tail.iter().map(|e| e.timestamp_ns).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert!(read_tail(&path, 0).unwrap().is_empty());
    }

    #[tokio::test]
    async fn follow_sees_growth_and_stops_after_exit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        std::fs::write(&path, encode(1, "stdout", b"first")).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let task = tokio::spawn({
            let path = path.clone();
            async move { follow(&path, 0, tx).await }
        });
        assert_eq!(rx.recv().await.unwrap().data, b"first");
        let mut more = encode(2, "stderr", b"second");
        more.extend(b"{\"t\":3,"); // a line still being written
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all_ext(&more);
        assert_eq!(rx.recv().await.unwrap().data, b"second");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all_ext(b"\"s\":\"stdout\",\"d\":\"third\"}\n");
        std::fs::write(dir.path().join("exit.json"), "{}").unwrap();
        assert_eq!(rx.recv().await.unwrap().data, b"third");
        assert!(rx.recv().await.is_none(), "follow must end after exit");
        task.await.unwrap();
    }

    trait WriteAllExt {
        fn write_all_ext(self, data: &[u8]);
    }
    impl WriteAllExt for std::fs::File {
        fn write_all_ext(mut self, data: &[u8]) {
            use std::io::Write;
            self.write_all(data).unwrap();
        }
    }
}
