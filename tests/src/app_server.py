#!/usr/bin/python3
"""Shoal's rolling-update test app (baked into the image as /app/server.py).

GET /        -> "VERSION HOSTNAME\n", counted
GET /count   -> "VERSION HITS\n"
GET /healthz -> 200 "ok", or 503 when HEALTHY=never (a version that must never go live)
GET /hits    -> "GREETING N\n": INCR of the key `hits` in the redis at REDIS_HOST (port
                REDIS_PORT, password read from REDIS_PASSWORD_FILE), 502 when redis fails; the
                three-tier stack of the stack tests counts its visits with it

`server.py check` is the healthcheck: one GET /healthz on 127.0.0.1, exit 0 when it answers 200.
On SIGTERM the server stops listening, answers every connection already accepted or queued in
the kernel, then exits 0: a well-behaved app, so any failed request is the orchestrator's fault.
Only python3-minimal's standard library is used (no http.server in it).
"""

import os
import signal
import socket
import sys
import threading
import time

VERSION = os.environ.get("VERSION", "v0")
PORT = int(os.environ.get("PORT", "80"))
HEALTHY = os.environ.get("HEALTHY", "always")
HOST = socket.gethostname()
GREETING = os.environ.get("APP_GREETING", "hello")
REDIS_HOST = os.environ.get("REDIS_HOST", "")
REDIS_PORT = int(os.environ.get("REDIS_PORT", "6379"))
REDIS_PASSWORD_FILE = os.environ.get("REDIS_PASSWORD_FILE", "")

lock = threading.Lock()
hits = 0
inflight = 0
stopping = threading.Event()


def respond(conn, status, body):
    data = body.encode()
    head = (
        "HTTP/1.0 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
        "Connection: close\r\n\r\n" % (status, len(data))
    )
    conn.sendall(head.encode() + data)


def resp_command(f, *words):
    """One redis command in RESP (python3-minimal has no redis client): the reply's first line."""
    out = b"*%d\r\n" % len(words)
    for w in words:
        w = w.encode() if isinstance(w, str) else w
        out += b"$%d\r\n%s\r\n" % (len(w), w)
    f.write(out)
    f.flush()
    line = f.readline().rstrip(b"\r\n").decode("latin-1")
    if line.startswith("-") or not line:
        raise OSError("redis said %r" % line)
    return line


def redis_incr():
    """INCR hits in redis, authenticating first when a password file is set."""
    s = socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=3)
    try:
        f = s.makefile("rwb")
        if REDIS_PASSWORD_FILE:
            with open(REDIS_PASSWORD_FILE, "rb") as p:
                resp_command(f, "AUTH", p.read().strip())
        line = resp_command(f, "INCR", "hits")
        return int(line[1:])
    finally:
        s.close()


def handle(conn):
    global hits, inflight
    try:
        conn.settimeout(5)
        buf = b""
        while b"\r\n\r\n" not in buf and len(buf) < 8192:
            chunk = conn.recv(4096)
            if not chunk:
                break
            buf += chunk
        words = buf.split(b"\r\n", 1)[0].decode("latin-1").split()
        path = words[1] if len(words) >= 2 else ""
        if path == "/":
            with lock:
                hits += 1
            respond(conn, "200 OK", "%s %s\n" % (VERSION, HOST))
        elif path == "/count":
            with lock:
                n = hits
            respond(conn, "200 OK", "%s %d\n" % (VERSION, n))
        elif path == "/hits":
            if not REDIS_HOST:
                respond(conn, "404 Not Found", "no REDIS_HOST\n")
            else:
                try:
                    n = redis_incr()
                    respond(conn, "200 OK", "%s %d\n" % (GREETING, n))
                except (OSError, ValueError) as e:
                    respond(conn, "502 Bad Gateway", "redis: %s\n" % e)
        elif path == "/healthz":
            if HEALTHY == "never":
                respond(conn, "503 Service Unavailable", "unhealthy\n")
            else:
                respond(conn, "200 OK", "ok\n")
        else:
            respond(conn, "404 Not Found", "not found\n")
    except OSError:
        pass
    finally:
        try:
            conn.close()
        finally:
            with lock:
                inflight -= 1


def start(conn):
    global inflight
    with lock:
        inflight += 1
    threading.Thread(target=handle, args=(conn,), daemon=True).start()


def on_signal(_signum, _frame):
    stopping.set()


def serve():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", PORT))
    listener.listen(512)
    # A timeout, so the loop sees the stop flag set by the signal handler.
    listener.settimeout(0.2)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print("app %s on %s listening on port %d" % (VERSION, HOST, PORT), flush=True)
    while not stopping.is_set():
        try:
            conn, _ = listener.accept()
        except (socket.timeout, InterruptedError):
            continue
        start(conn)
    # Connections the kernel already completed are requests in flight too: answer them.
    listener.setblocking(False)
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            break
        conn.setblocking(True)
        start(conn)
    listener.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with lock:
            if inflight == 0:
                break
        time.sleep(0.02)
    with lock:
        print("app %s on %s stopped after %d hits" % (VERSION, HOST, hits), flush=True)
    return 0


def check():
    try:
        s = socket.create_connection(("127.0.0.1", PORT), timeout=2)
        s.settimeout(2)
        s.sendall(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
    except OSError as e:
        print("healthz: %s" % e)
        return 1
    status = data.split(b"\r\n", 1)[0].decode("latin-1")
    print("healthz: %s" % status)
    return 0 if " 200 " in status else 1


if __name__ == "__main__":
    sys.exit(check() if sys.argv[1:] == ["check"] else serve())
