//! Tests of the container log writer and reader: rotation, JSON lines, follow.

use super::*;
use std::cell::Cell;
use std::rc::Rc;

fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut s = LineSplitter::default();
    for c in chunks {
        s.push(c, |l| out.push(l.to_vec()));
    }
    s.finish(|l| out.push(l.to_vec()));
    out
}

/// Line `i` of the tests: its number is its timestamp.
fn line(i: i64, pad: usize) -> Vec<u8> {
    encode(i, "stdout", format!("{i:06}{}", "x".repeat(pad)).as_bytes())
}

fn stamps(entries: &[LogEntry]) -> Vec<i64> {
    entries.iter().map(|e| e.timestamp_ns).collect()
}

fn append(path: &Path, data: &[u8]) {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap()
        .write_all(data)
        .unwrap();
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
    data.extend(b"{\"t\":9,"); // a line still being written is not part of the tail
    std::fs::write(&path, &data).unwrap();
    assert_eq!(stamps(&read_tail(&path, -1).unwrap()), vec![0, 1, 2, 3, 4]);
    assert_eq!(stamps(&read_tail(&path, 2).unwrap()), vec![3, 4]);
    assert_eq!(stamps(&read_tail(&path, 9).unwrap()).len(), 5);
    assert!(read_tail(&path, 0).unwrap().is_empty());
    assert!(read_tail(&dir.path().join("none.log"), -1)
        .unwrap()
        .is_empty());
}

#[test]
fn writer_rotates_by_size_keeping_max_files_without_losing_or_repeating_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("container.log");
    let config = LogConfig {
        max_size_bytes: 1000,
        max_files: 3,
    };
    let mut w = RotatingWriter::open(&path, config).unwrap();
    let mut i = 0;
    // Single lines and batches of several, as the shim writes them.
    while i < 200 {
        let n = (i % 4 + 1).min(200 - i);
        let batch: Vec<u8> = (i..i + n).flat_map(|j| line(j, 40)).collect();
        w.write_lines(&batch).unwrap();
        i += n;
    }
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["container.log", "container.log.1", "container.log.2"]
    );
    let mut kept = Vec::new();
    for p in [rotated(&path, 2), rotated(&path, 1), path.clone()] {
        let data = fs::read(&p).unwrap();
        assert!(
            data.len() <= 1000,
            "{} has {} bytes",
            p.display(),
            data.len()
        );
        assert_eq!(data.last(), Some(&b'\n'), "a line was split");
        let mut r = LineReader::default();
        kept.extend(stamps(&r.push(&data)));
    }
    // The newest lines, in order, each once.
    let first = kept[0];
    assert_eq!(kept, (first..200).collect::<Vec<_>>());
    // Rotated files are full: they hold all but the room of less than one line.
    assert!(fs::metadata(rotated(&path, 1)).unwrap().len() > 1000 - 60);
    assert_eq!(stamps(&read_tail(&path, -1).unwrap()), kept);
}

#[test]
fn writer_limits_zero_size_one_file_and_oversize_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("container.log");
    let never = LogConfig {
        max_size_bytes: 0,
        max_files: 3,
    };
    let mut w = RotatingWriter::open(&path, never).unwrap();
    for i in 0..100 {
        w.write_lines(&line(i, 100)).unwrap();
    }
    assert!(!rotated(&path, 1).exists());
    assert_eq!(read_tail(&path, -1).unwrap().len(), 100);

    // One file: rotating starts the file afresh; a reopened writer keeps counting the old size.
    let one = LogConfig {
        max_size_bytes: 500,
        max_files: 1,
    };
    let mut w = RotatingWriter::open(&path, one).unwrap();
    w.write_lines(&line(100, 10)).unwrap();
    assert!(!rotated(&path, 1).exists());
    assert_eq!(stamps(&read_tail(&path, -1).unwrap()), vec![100]);

    // A line over the limit gets a file of its own.
    fs::remove_file(&path).unwrap();
    let two = LogConfig {
        max_size_bytes: 100,
        max_files: 2,
    };
    let mut w = RotatingWriter::open(&path, two).unwrap();
    let mut batch = line(1, 1);
    batch.extend(line(2, 300));
    batch.extend(line(3, 1));
    w.write_lines(&batch).unwrap();
    let old = decode_all(&fs::read(rotated(&path, 1)).unwrap());
    let live = decode_all(&fs::read(&path).unwrap());
    assert_eq!((old, live), (vec![2], vec![3]));
}

fn decode_all(data: &[u8]) -> Vec<i64> {
    stamps(&LineReader::default().push(data))
}

#[test]
fn tail_spans_rotated_files_newest_last() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("container.log");
    let config = LogConfig {
        max_size_bytes: 2000,
        max_files: 5,
    };
    let mut w = RotatingWriter::open(&path, config).unwrap();
    for i in 0..100 {
        w.write_lines(&line(i, 50)).unwrap();
    }
    assert!(rotated(&path, 4).exists());
    let kept = read_tail(&path, -1).unwrap().len();
    assert!(kept > 60, "kept {kept}");
    let lines_in_live = decode_all(&fs::read(&path).unwrap()).len() as i64;
    // Across one boundary, exactly at it, and over several files.
    for n in [lines_in_live + 3, lines_in_live, lines_in_live - 1, 60] {
        let got = stamps(&read_tail(&path, n).unwrap());
        assert_eq!(got, (100 - n..100).collect::<Vec<_>>(), "tail {n}");
    }
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn tail_of_a_50_mib_log_reads_from_the_end_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("container.log");
    let mut file = io::BufWriter::new(File::create(&path).unwrap());
    let mut i = 0;
    let mut size = 0;
    while size < 50 * 1024 * 1024 {
        let l = line(i, 1000);
        size += l.len();
        file.write_all(&l).unwrap();
        i += 1;
    }
    drop(file);
    let read = Rc::new(Cell::new(0));
    let mut f = Counting {
        inner: File::open(&path).unwrap(),
        read: read.clone(),
    };
    let end = whole_lines_end(&mut f, size as u64).unwrap();
    let mut segments = [Segment { file: f, end }];
    let mut got = Vec::new();
    read_segments(&mut segments, 10, &mut |c| {
        got.extend(c);
        true
    })
    .unwrap();
    assert_eq!(stamps(&got), (i - 10..i).collect::<Vec<_>>());
    assert!(read.get() < 1024 * 1024, "read {} bytes", read.get());
    // The whole path through read_chunks agrees.
    assert_eq!(stamps(&read_tail(&path, 10).unwrap()), stamps(&got));
}

#[test]
fn chunks_hold_at_most_a_mebibyte_of_line_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("container.log");
    let data: Vec<u8> = (0..500)
        .flat_map(|i| encode(i, "stdout", &vec![b'a'; MAX_LINE]))
        .collect();
    fs::write(&path, data).unwrap();
    let mut chunks = Vec::new();
    read_chunks(&path, -1, |c| {
        chunks.push(c);
        true
    })
    .unwrap();
    assert!(chunks.len() >= 8, "{} chunks", chunks.len());
    for c in &chunks {
        let bytes: usize = c.iter().map(|e| e.data.len()).sum();
        assert!(bytes <= MAX_CHUNK_BYTES, "chunk of {bytes} bytes");
    }
    let all: Vec<LogEntry> = chunks.into_iter().flatten().collect();
    assert_eq!(stamps(&all), (0..500).collect::<Vec<_>>());
    // Stopping early stops reading.
    let mut calls = 0;
    read_chunks(&path, -1, |_| {
        calls += 1;
        false
    })
    .unwrap();
    assert_eq!(calls, 1);
}

async fn recv_until(rx: &mut mpsc::Receiver<Vec<LogEntry>>, last: i64) -> Vec<i64> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while got.last() != Some(&last) {
            let chunk = rx.recv().await.expect("follow ended early");
            got.extend(stamps(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no line {last} within 10 s; got {got:?}"));
    got
}

#[tokio::test]
async fn follow_sees_growth_and_stops_after_exit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("container.log");
    fs::write(&path, encode(1, "stdout", b"first")).unwrap();
    let (tx, mut rx) = mpsc::channel(16);
    let task = tokio::spawn(follow(path.clone(), None, tx));
    assert_eq!(recv_until(&mut rx, 1).await, vec![1]);
    let mut more = encode(2, "stderr", b"second");
    more.extend(b"{\"t\":3,"); // a line still being written
    append(&path, &more);
    assert_eq!(recv_until(&mut rx, 2).await, vec![2]);
    append(&path, b"\"s\":\"stdout\",\"d\":\"third\"}\n");
    fs::write(dir.path().join("exit.json"), "{}").unwrap();
    assert_eq!(recv_until(&mut rx, 3).await, vec![3]);
    assert!(rx.recv().await.is_none(), "follow must end after exit");
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn follow_continues_across_rotations_without_loss_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("container.log");
    let config = LogConfig {
        max_size_bytes: 1500,
        max_files: 50,
    };
    let mut w = RotatingWriter::open(&path, config).unwrap();
    for i in 0..10 {
        w.write_lines(&line(i, 50)).unwrap();
    }
    let (mut from, mut seen) = (None, Vec::new());
    let p = path.clone();
    tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let from = read_chunks(&p, 3, |c| {
            seen.extend(stamps(&c));
            true
        })
        .unwrap();
        (from, seen)
    })
    .await
    .map(|(f, s)| (from, seen) = (f, s))
    .unwrap();
    assert_eq!(seen, vec![7, 8, 9]);
    let (tx, mut rx) = mpsc::channel(4);
    let task = tokio::spawn(follow(path.clone(), from, tx));
    let mut got = Vec::new();
    let mut next = 10;
    // Bursts that rotate several times between two polls, and single lines.
    for burst in [1, 40, 1, 3, 100, 2] {
        for _ in 0..burst {
            w.write_lines(&line(next, 50)).unwrap();
            next += 1;
        }
        got.extend(recv_until(&mut rx, next - 1).await);
    }
    assert_eq!(got, (10..next).collect::<Vec<_>>());
    assert!(rotated(&path, 5).exists());
    fs::write(dir.path().join("exit.json"), "{}").unwrap();
    assert!(rx.recv().await.is_none(), "follow must end after exit");
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn follow_from_a_rotated_file_moves_on_to_the_new_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("container.log");
    // Caught between a rotation's rename and the new file.
    let old: Vec<u8> = (0..3).flat_map(|i| line(i, 5)).collect();
    fs::write(rotated(&path, 1), old).unwrap();
    let mut seen = Vec::new();
    let from = read_chunks(&path, -1, |c| {
        seen.extend(stamps(&c));
        true
    })
    .unwrap();
    assert_eq!(seen, vec![0, 1, 2]);
    let (tx, mut rx) = mpsc::channel(4);
    let task = tokio::spawn(follow(path.clone(), from, tx));
    let new: Vec<u8> = (3..5).flat_map(|i| line(i, 5)).collect();
    fs::write(&path, new).unwrap();
    assert_eq!(recv_until(&mut rx, 4).await, vec![3, 4]);
    fs::write(dir.path().join("exit.json"), "{}").unwrap();
    assert!(rx.recv().await.is_none(), "follow must end after exit");
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn follow_ends_when_the_container_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let cdir = dir.path().join("c1");
    fs::create_dir(&cdir).unwrap();
    let path = cdir.join("container.log");
    fs::write(&path, line(1, 1)).unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let task = tokio::spawn(follow(path.clone(), None, tx));
    assert_eq!(recv_until(&mut rx, 1).await, vec![1]);
    fs::remove_dir_all(&cdir).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), task).await;
    assert!(ended.is_ok(), "follow must end once the container is gone");
}
