//! `/services/{id}/logs` and `/tasks/{id}/logs`: docker's stdcopy framing, one line per frame,
//! `details`, `follow`, `tail`, `since`, `timestamps`.
//!
//! Both read `Control.ServiceLogs` (a task's logs are its service's, kept to that task's
//! lines). The response's headers go out before any log line, so `docker service logs -f` of a
//! quiet service shows nothing rather than hanging; the body is a stream fed by one task that
//! stops reading the gRPC stream as soon as the client leaves.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use shoal_proto::v1::{
    GetServiceRequest, ListTasksRequest, LogLine, ServiceLogsRequest, ServiceLogsResponse, Task,
};
use tokio::sync::mpsc;
use tracing::debug;

use super::error::ApiResult;
use super::{ApiError, ApiVersion, State, MAX_API_VERSION};

/// This group's routes (unversioned paths).
pub fn routes() -> Router<State> {
    Router::new()
        .route("/services/{id}/logs", get(service_logs))
        .route("/tasks/{id}/logs", get(task_logs))
}

/// stdcopy's stream numbers (the first byte of a frame header).
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const SYSTEMERR: u8 = 3;

/// Frames waiting for a slow client before the reader stops pulling from the gRPC stream.
const FRAME_BUFFER: usize = 64;

/// The query of a logs request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogsQuery {
    details: bool,
    follow: bool,
    stdout: bool,
    stderr: bool,
    /// Unix nanoseconds; lines before it are dropped.
    since: Option<i64>,
    timestamps: bool,
    /// Last N lines of each task; -1 for all (ServiceLogsRequest's encoding).
    tail: i64,
}

/// docker's `httputils.BoolValue`: anything but "", "0", "no", "false", "none" is true.
fn bool_value(q: &HashMap<String, String>, key: &str) -> bool {
    q.get(key).is_some_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        !matches!(v.as_str(), "" | "0" | "no" | "false" | "none")
    })
}

impl LogsQuery {
    /// Parses and checks the query as moby does (`daemon/cluster/services.go`'s messages).
    fn parse(q: &HashMap<String, String>) -> ApiResult<LogsQuery> {
        let stdout = bool_value(q, "stdout");
        let stderr = bool_value(q, "stderr");
        if !stdout && !stderr {
            return Err(ApiError::bad_request(
                "Bad parameters: you must choose at least one stream",
            ));
        }
        let tail = match q.get("tail").map(|s| s.trim()) {
            None | Some("") | Some("all") => -1,
            Some(t) => match t.parse::<i64>() {
                Ok(n) if n < 0 => {
                    return Err(ApiError::bad_request("negative tail values not supported"))
                }
                Ok(n) => n,
                Err(_) => {
                    return Err(ApiError::bad_request(
                        "tail value must be a positive integer or \"all\"",
                    ))
                }
            },
        };
        let since = match q.get("since").map(|s| s.trim()) {
            None | Some("") | Some("0") => None,
            Some(s) => Some(super::time::parse_timestamp(s).ok_or_else(|| {
                ApiError::bad_request(format!("invalid value for \"since\": {s}"))
            })?),
        };
        Ok(LogsQuery {
            details: bool_value(q, "details"),
            follow: bool_value(q, "follow"),
            stdout,
            stderr,
            since,
            timestamps: bool_value(q, "timestamps"),
            tail,
        })
    }
}

/// What the lines of one response are about: the service, and the one task for `/tasks/X/logs`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    service_id: String,
    task_id: Option<String>,
}

async fn service_logs(
    state: axum::extract::State<State>,
    version: Option<Extension<ApiVersion>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let query = LogsQuery::parse(&q)?;
    let service = state
        .control()
        .get_service(GetServiceRequest {
            name_or_id: id.clone(),
        })
        .await
        .map_err(|s| ApiError::from_status_for("service", &id, s))?
        .into_inner()
        .service
        .ok_or_else(|| ApiError::not_found(format!("no such service: {id}")))?;
    let source = Source {
        service_id: service.id,
        task_id: None,
    };
    stream_logs(&state, version, query, source).await
}

async fn task_logs(
    state: axum::extract::State<State>,
    version: Option<Extension<ApiVersion>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let query = LogsQuery::parse(&q)?;
    let tasks = state
        .control()
        .list_tasks(ListTasksRequest::default())
        .await?
        .into_inner()
        .tasks;
    let task = find_task(&tasks, &id)?;
    let source = Source {
        service_id: task.service_id.clone(),
        task_id: Some(task.id.clone()),
    };
    stream_logs(&state, version, query, source).await
}

/// A task by full ID, else by unique ID prefix (moby's `getTask`).
fn find_task<'a>(tasks: &'a [Task], id: &str) -> ApiResult<&'a Task> {
    if let Some(t) = tasks.iter().find(|t| t.id == id) {
        return Ok(t);
    }
    let matches: Vec<&Task> = if id.is_empty() {
        Vec::new()
    } else {
        tasks.iter().filter(|t| t.id.starts_with(id)).collect()
    };
    match matches.as_slice() {
        [] => Err(ApiError::not_found(format!("no such task: {id}"))),
        [t] => Ok(t),
        many => Err(ApiError::bad_request(format!(
            "task {id} is ambiguous ({} matches found)",
            many.len()
        ))),
    }
}

/// Opens the gRPC stream (its errors are still proper HTTP errors), then answers 200 at once
/// with a body that a spawned task fills, one frame per line.
async fn stream_logs(
    state: &State,
    version: Option<Extension<ApiVersion>>,
    query: LogsQuery,
    source: Source,
) -> ApiResult<Response> {
    let version = version.map(|Extension(v)| v).unwrap_or(MAX_API_VERSION);
    debug!(service.id = %source.service_id, task.id = ?source.task_id, follow = query.follow, "docker api: logs");
    let grpc = state
        .control()
        .service_logs(ServiceLogsRequest {
            service: source.service_id.clone(),
            follow: query.follow,
            tail: query.tail,
            timestamps: query.timestamps,
        })
        .await
        .map_err(|s| ApiError::from_status_for("service", &source.service_id, s))?
        .into_inner();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(FRAME_BUFFER);
    tokio::spawn(pump(grpc, query, source, tx));
    Ok(stream_response(rx, version))
}

/// 200 with the frames `rx` yields as the body. hyper sends the headers as soon as the body has
/// nothing ready, so a quiet `follow` stream does not hold them back.
fn stream_response(
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    version: ApiVersion,
) -> Response {
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, content_type(version));
    resp
}

/// `application/vnd.docker.multiplexed-stream` from API 1.42, raw-stream before (the framing
/// is the same; Shoal has no TTY services, whose streams are unframed).
fn content_type(version: ApiVersion) -> HeaderValue {
    if version >= ApiVersion(1, 42) {
        HeaderValue::from_static("application/vnd.docker.multiplexed-stream")
    } else {
        HeaderValue::from_static("application/vnd.docker.raw-stream")
    }
}

/// Turns the gRPC stream into frames until it ends, fails (a systemerr frame, which the CLI
/// reports as "error from daemon in stream"), or the client leaves (the body, hence `tx`'s
/// receiver, is dropped; dropping the gRPC stream then cancels it on the manager).
async fn pump<S>(
    mut grpc: S,
    query: LogsQuery,
    source: Source,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) where
    S: Stream<Item = Result<ServiceLogsResponse, tonic::Status>> + Unpin,
{
    loop {
        let next = tokio::select! {
            _ = tx.closed() => break,
            next = grpc.next() => next,
        };
        let frames = match next {
            None => break,
            Some(Ok(resp)) => resp
                .lines
                .iter()
                .filter(|l| keep(l, &query, &source))
                .flat_map(|l| frames_of(l, &query, &source.service_id))
                .collect::<Vec<Bytes>>(),
            Some(Err(status)) => {
                let msg = format!("Error grabbing logs: {}\n", status.message());
                let _ = tx.send(Ok(frame(SYSTEMERR, msg.as_bytes()))).await;
                break;
            }
        };
        for f in frames {
            if tx.send(Ok(f)).await.is_err() {
                debug!(service.id = %source.service_id, "docker api: logs client left");
                return;
            }
        }
    }
}

/// Whether a line passes the task, stream and `since` filters.
fn keep(line: &LogLine, query: &LogsQuery, source: &Source) -> bool {
    if let Some(task) = &source.task_id {
        if &line.task_id != task {
            return false;
        }
    }
    let wanted = if line.stream == "stderr" {
        query.stderr
    } else {
        query.stdout
    };
    wanted && query.since.is_none_or(|since| line.timestamp >= since)
}

/// One frame per line of a log chunk (a chunk may hold several lines or part of one; a
/// trailing partial line gets its own frame and a newline, as the CLI prints frames as lines).
fn frames_of(line: &LogLine, query: &LogsQuery, service_id: &str) -> Vec<Bytes> {
    let stream = if line.stream == "stderr" {
        STDERR
    } else {
        STDOUT
    };
    let prefix = line_prefix(line, query, service_id);
    split_lines(&line.data)
        .map(|text| {
            let mut payload = Vec::with_capacity(prefix.len() + text.len() + 1);
            payload.extend_from_slice(prefix.as_bytes());
            payload.extend_from_slice(text);
            payload.push(b'\n');
            frame(stream, &payload)
        })
        .collect()
}

/// The lines of a chunk without their "\n"; an empty chunk is one empty line.
fn split_lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    data.split(|b| *b == b'\n')
}

/// `[<ts> ][<details> ]` before a line's message.
fn line_prefix(line: &LogLine, query: &LogsQuery, service_id: &str) -> String {
    let mut prefix = String::new();
    if query.timestamps {
        prefix.push_str(&fixed_timestamp(line.timestamp));
        prefix.push(' ');
    }
    if query.details {
        prefix.push_str(&details(&[
            ("com.docker.swarm.node.id", &line.node_id),
            ("com.docker.swarm.service.id", service_id),
            ("com.docker.swarm.task.id", &line.task_id),
        ]));
        prefix.push(' ');
    }
    prefix
}

/// Go's `RFC3339NanoFixed` ("2006-01-02T15:04:05.000000000Z07:00") in UTC: always 9 digits.
fn fixed_timestamp(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

/// moby's `attrsByteSlice`: `k=v` pairs, `url.QueryEscape`d, sorted by key, comma-joined.
fn details(attrs: &[(&str, &str)]) -> String {
    let mut attrs = attrs.to_vec();
    attrs.sort_by(|a, b| a.0.cmp(b.0));
    attrs
        .iter()
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Go's `url.QueryEscape`: unreserved bytes as is, space as '+', the rest as %XX.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// One stdcopy frame: `[stream, 0, 0, 0, BE u32 length]` then the payload.
fn frame(stream: u8, payload: &[u8]) -> Bytes {
    // A frame's length is a u32; log lines are far below 4 GiB (the agent chunks them), but
    // clamp rather than write a wrong header.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let payload = &payload[..len as usize];
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn cli_query() -> LogsQuery {
        LogsQuery::parse(&q(&[
            ("details", "1"),
            ("stdout", "1"),
            ("stderr", "1"),
            ("tail", "all"),
        ]))
        .unwrap()
    }

    fn line(task: &str, stream: &str, ts: i64, data: &str) -> LogLine {
        LogLine {
            task_id: task.into(),
            task_name: format!("web.1.{task}"),
            node_id: "node1".into(),
            stream: stream.into(),
            timestamp: ts,
            data: data.as_bytes().to_vec(),
        }
    }

    fn source(task: Option<&str>) -> Source {
        Source {
            service_id: "svc1".into(),
            task_id: task.map(String::from),
        }
    }

    /// Splits a body into (stream, payload) frames, checking every header.
    fn unframe(mut body: &[u8]) -> Vec<(u8, String)> {
        let mut out = Vec::new();
        while !body.is_empty() {
            assert!(body.len() >= 8, "truncated header");
            assert_eq!(&body[1..4], &[0, 0, 0]);
            let len = u32::from_be_bytes([body[4], body[5], body[6], body[7]]) as usize;
            out.push((
                body[0],
                String::from_utf8(body[8..8 + len].to_vec()).unwrap(),
            ));
            body = &body[8 + len..];
        }
        out
    }

    #[test]
    fn the_query_is_checked_like_mobys() {
        let query = cli_query();
        assert_eq!(query.tail, -1);
        assert!(query.details && query.stdout && query.stderr);
        assert!(!query.follow && !query.timestamps);
        assert_eq!(query.since, None);

        let e = LogsQuery::parse(&q(&[("stdout", "0"), ("stderr", "false")])).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = LogsQuery::parse(&q(&[("stdout", "1"), ("tail", "-1")])).unwrap_err();
        assert_eq!(e.message, "negative tail values not supported");
        let e = LogsQuery::parse(&q(&[("stdout", "1"), ("tail", "x")])).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = LogsQuery::parse(&q(&[("stdout", "1"), ("since", "yesterday")])).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);

        let query = LogsQuery::parse(&q(&[
            ("stderr", "true"),
            ("tail", "10"),
            ("since", "1700000000.5"),
            ("follow", "1"),
        ]))
        .unwrap();
        assert_eq!(query.tail, 10);
        assert_eq!(query.since, Some(1_700_000_000_500_000_000));
        assert!(query.follow && query.stderr && !query.stdout);
    }

    #[test]
    fn a_frame_is_an_eight_byte_header_and_the_payload() {
        let f = frame(STDERR, b"hello\n");
        assert_eq!(&f[..8], &[2, 0, 0, 0, 0, 0, 0, 6]);
        assert_eq!(&f[8..], b"hello\n");
    }

    #[test]
    fn details_carry_the_three_ids_the_cli_requires_escaped_and_sorted() {
        let query = cli_query();
        let frames = frames_of(&line("task1", "stdout", 1, "hello world\n"), &query, "svc1");
        let body: Vec<u8> = frames.concat();
        assert_eq!(
            unframe(&body),
            vec![(
                STDOUT,
                "com.docker.swarm.node.id=node1,com.docker.swarm.service.id=svc1,\
                 com.docker.swarm.task.id=task1 hello world\n"
                    .to_string()
            )]
        );
        assert_eq!(
            details(&[("z", "a b"), ("a", "x=y,&")]),
            "a=x%3Dy%2C%26,z=a+b"
        );
    }

    #[test]
    fn timestamps_have_nine_digits_and_a_z() {
        assert_eq!(
            fixed_timestamp(1_700_000_000_120_000_000),
            "2023-11-14T22:13:20.120000000Z"
        );
        let query = LogsQuery {
            timestamps: true,
            details: false,
            ..cli_query()
        };
        let frames = frames_of(
            &line("t", "stderr", 1_700_000_000_000_000_000, "oops"),
            &query,
            "svc1",
        );
        assert_eq!(
            unframe(&frames.concat()),
            vec![(STDERR, "2023-11-14T22:13:20.000000000Z oops\n".to_string())]
        );
    }

    #[test]
    fn a_chunk_of_several_lines_gives_one_frame_per_line() {
        let query = LogsQuery {
            details: false,
            ..cli_query()
        };
        let frames = frames_of(&line("t", "stdout", 1, "a\nb\n\nc"), &query, "s");
        let got: Vec<String> = unframe(&frames.concat())
            .into_iter()
            .map(|(_, p)| p)
            .collect();
        assert_eq!(got, ["a\n", "b\n", "\n", "c\n"]);
    }

    #[test]
    fn lines_are_kept_by_task_stream_and_since() {
        let mut query = cli_query();
        assert!(keep(&line("t1", "stdout", 5, "x"), &query, &source(None)));
        assert!(!keep(
            &line("t2", "stdout", 5, "x"),
            &query,
            &source(Some("t1"))
        ));
        query.stderr = false;
        assert!(!keep(&line("t1", "stderr", 5, "x"), &query, &source(None)));
        query.since = Some(6);
        assert!(!keep(&line("t1", "stdout", 5, "x"), &query, &source(None)));
        assert!(keep(&line("t1", "stdout", 6, "x"), &query, &source(None)));
    }

    #[test]
    fn tasks_are_found_by_id_or_unique_prefix() {
        let task = |id: &str| Task {
            id: id.into(),
            ..Default::default()
        };
        let tasks = vec![task("abc1"), task("abc2"), task("xyz")];
        assert_eq!(find_task(&tasks, "abc1").unwrap().id, "abc1");
        assert_eq!(find_task(&tasks, "xy").unwrap().id, "xyz");
        let e = find_task(&tasks, "abc").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = find_task(&tasks, "nope").unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.message, "no such task: nope");
    }

    #[test]
    fn the_content_type_follows_the_api_version() {
        assert_eq!(
            content_type(ApiVersion(1, 41)),
            "application/vnd.docker.raw-stream"
        );
        assert_eq!(
            content_type(ApiVersion(1, 45)),
            "application/vnd.docker.multiplexed-stream"
        );
    }

    #[tokio::test]
    async fn the_pump_frames_kept_lines_and_reports_a_broken_stream() {
        let responses = vec![
            Ok(ServiceLogsResponse {
                lines: vec![
                    line("t1", "stdout", 1, "one\n"),
                    line("t2", "stdout", 1, "other task\n"),
                ],
            }),
            Ok(ServiceLogsResponse {
                lines: vec![line("t1", "stderr", 2, "two\n")],
            }),
            Err(tonic::Status::unavailable("node gone")),
        ];
        let (tx, mut rx) = mpsc::channel(FRAME_BUFFER);
        let query = LogsQuery {
            details: false,
            ..cli_query()
        };
        pump(
            futures::stream::iter(responses),
            query,
            source(Some("t1")),
            tx,
        )
        .await;
        let mut body = Vec::new();
        while let Some(chunk) = rx.recv().await {
            body.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(
            unframe(&body),
            vec![
                (STDOUT, "one\n".to_string()),
                (STDERR, "two\n".to_string()),
                (SYSTEMERR, "Error grabbing logs: node gone\n".to_string()),
            ]
        );
    }

    /// Over a real connection: the headers arrive before any log line, frames follow as they
    /// come, and closing the connection drops the body (which stops the pump).
    #[tokio::test]
    async fn headers_go_out_at_once_and_a_leaving_client_drops_the_body() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (tx, rx) = mpsc::channel(FRAME_BUFFER);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(Some(rx)));
        let app = Router::new().route(
            "/logs",
            get(move || {
                let rx = rx.lock().unwrap().take().unwrap();
                async move { stream_response(rx, ApiVersion(1, 45)) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /logs HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let limit = std::time::Duration::from_secs(10);
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(limit, conn.read(&mut buf))
                .await
                .expect("headers before any log line")
                .unwrap();
            assert!(n > 0, "connection closed");
            got.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&got).to_string();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(
            head.contains("content-type: application/vnd.docker.multiplexed-stream"),
            "{head}"
        );

        tx.send(Ok(frame(STDOUT, b"hi\n"))).await.unwrap();
        let mut body = Vec::new();
        while !body.windows(3).any(|w| w == b"hi\n") {
            let n = tokio::time::timeout(limit, conn.read(&mut buf))
                .await
                .expect("a frame")
                .unwrap();
            assert!(n > 0, "connection closed");
            body.extend_from_slice(&buf[..n]);
        }

        drop(conn);
        tokio::time::timeout(limit, tx.closed())
            .await
            .expect("the body is dropped once the client leaves");
    }

    #[tokio::test]
    async fn the_pump_stops_when_the_client_leaves() {
        // A follow stream that never ends: the pump must return once the body is dropped.
        let (tx, rx) = mpsc::channel(FRAME_BUFFER);
        drop(rx);
        let never = futures::stream::pending::<Result<ServiceLogsResponse, tonic::Status>>();
        pump(never, cli_query(), source(None), tx).await;
    }
}
