"""Local upstream HTTP and HTTPS servers for the tests of luahook's `http` library.

Everything runs in threads of the test process on 127.0.0.1 (the network here is loopback
only). Python 3.11 standard library only.

    with Upstream() as up:                       # plain HTTP on a free port
        up.url("/echo")                          # "http://127.0.0.1:PORT/echo"
    cert = SelfSignedCert(tmpdir)                # openssl CLI, CN=localhost, SAN localhost+127.0.0.1
    with Upstream(tls=cert) as up:               # HTTPS with that certificate
        ...

Routes (any method):
    /echo[...]            200 JSON: {method, path, query, args (parsed query: name -> [values]),
                          headers (lower-case name -> value,
                          repeated joined with ", "), header_list ([[name, value], ...] as
                          received), body (UTF-8, invalid bytes replaced), body_hex, body_len,
                          client_port}
    /sleep?ms=N, /sleep/N waits N ms (or until the upstream stops), then like /echo
    /hang                 reads the request and never answers (until the upstream stops)
    /gate/NAME            waits until the test calls open_gate(NAME) (or the upstream stops),
                          then like /echo: lets a test order events without timing them
    /status/N             status N, body "status N" (text/plain)
    /flaky/NAME?fail=N    503 for the first N requests to NAME, then like /echo: an
                          endpoint that is away for a while (up.hits[NAME] counts them)
    /redirect?to=P[&code=N]  status N (302) with Location: P
    /big?n=N[&chunked=1], /big/N[/chunked]
                          N bytes of "0123456789" repeated (Content-Length, or chunked)
    /json                 the JSON document JSON_DOC
    /notjson              200 text/plain "this is <not> json"
    /multi                headers X-Multi: a, X-Multi: b, X-Mixed-Case: V

Every request is recorded in `up.requests` (dicts like the /echo answer plus "tag" = the
query parameter tag, else the X-Tag request header, if any). `up.inflight_peak` is the largest number of requests being
answered at once, `up.connections` the number of TCP connections accepted.
"""

import http.server
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse

JSON_DOC = b'{"n": 9007199254740993, "neg": -9223372036854775808, "f": 1.5, "s": "caf\\u00e9", ' \
           b'"list": [1, 2, 3], "nested": {"ok": true, "none": null}}'

PATTERN = b"0123456789"


def pattern_bytes(n):
    """The body of /big?n=N."""
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


class SelfSignedCert:
    """A throw-away self-signed certificate made with the openssl CLI in `directory`."""

    def __init__(self, directory, name="cert", cn="localhost",
                 san="DNS:localhost,IP:127.0.0.1"):
        self.cert = os.path.join(directory, name + ".pem")
        self.key = os.path.join(directory, name + ".key")
        res = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.key,
             "-out", self.cert, "-days", "1", "-subj", "/CN=" + cn,
             "-addext", "subjectAltName=" + san],
            capture_output=True, timeout=60)
        if res.returncode != 0:
            raise RuntimeError("openssl req failed: %s" % res.stderr.decode("utf-8", "replace"))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"       # keep-alive, so connection reuse can be seen
    server_version = "upstream/1"

    def log_message(self, *a):          # quiet
        pass

    def setup(self):
        up = self.server.upstream
        with up.lock:
            up.connections += 1
        if up.tls_context is not None:
            # TLS handshake in this connection's thread, never in the accept loop
            self.request.settimeout(10)
            self.request = up.tls_context.wrap_socket(self.request, server_side=True)
            self.request.settimeout(None)
        super().setup()

    def handle(self):
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, OSError):
            pass

    # every method goes through _serve
    def do_GET(self):
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _read_body(self):
        n = self.headers.get("Content-Length")
        if n is not None:
            return self.rfile.read(int(n))
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def _record(self, body):
        parts = urllib.parse.urlsplit(self.path)
        headers = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = headers[k] + ", " + v if k in headers else v
        qs = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        rec = {
            "method": self.command,
            "path": self.path,
            "query": parts.query,
            "args": {k: v for k, v in qs.items()},
            "headers": headers,
            "header_list": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("utf-8", "replace"),
            "body_hex": body.hex(),
            "body_len": len(body),
            "client_port": self.client_address[1],
            "tag": (qs.get("tag") or [self.headers.get("X-Tag")])[0],
        }
        up = self.server.upstream
        with up.lock:
            up.requests.append(rec)
        return parts, qs, rec

    def _send(self, status, body, ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self):
        up = self.server.upstream
        body = self._read_body()
        parts, qs, rec = self._record(body)
        route = parts.path
        with up.lock:
            up.inflight += 1
            up.inflight_peak = max(up.inflight_peak, up.inflight)
        try:
            if route == "/echo":
                self._send(200, json.dumps(rec).encode())
            elif route == "/sleep" or route.startswith("/sleep/"):
                ms = int(qs["ms"][0]) if route == "/sleep" else int(route.split("/")[2])
                up.stopping.wait(ms / 1000.0)
                self._send(200, json.dumps(rec).encode())
            elif route.startswith("/gate/"):
                gate = up.gate(route.split("/")[2])
                while not gate.wait(0.05) and not up.stopping.is_set():
                    pass
                self._send(200, json.dumps(rec).encode())
            elif route == "/hang":
                up.stopping.wait(120)
                self.close_connection = True
            elif route.startswith("/flaky/"):
                name = route.split("/")[2]
                with up.lock:
                    n = up.hits[name] = up.hits.get(name, 0) + 1
                if n <= int((qs.get("fail") or ["1"])[0]):
                    self._send(503, b"away", "text/plain")
                else:
                    self._send(200, json.dumps(rec).encode())
            elif route.startswith("/status/"):
                code = int(route.split("/")[2])
                self._send(code, ("status %d" % code).encode(), "text/plain")
            elif route == "/redirect":
                code = int((qs.get("code") or ["302"])[0])
                self._send(code, b"moved", "text/plain", [("Location", qs["to"][0])])
            elif route == "/big" or route.startswith("/big/"):
                seg = route.split("/")
                n = int(qs["n"][0]) if route == "/big" else int(seg[2])
                data = pattern_bytes(n)
                if qs.get("chunked") == ["1"] or seg[-1] == "chunked":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    step = 64 * 1024
                    for i in range(0, n, step):
                        piece = data[i:i + step]
                        self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self._send(200, data, "application/octet-stream")
            elif route == "/json":
                self._send(200, JSON_DOC)
            elif route == "/notjson":
                self._send(200, b"this is <not> json", "text/plain")
            elif route == "/multi":
                self._send(200, b"multi", "text/plain",
                           [("X-Multi", "a"), ("X-Multi", "b"), ("X-Mixed-Case", "V")])
            else:
                self._send(404, b"no such route", "text/plain")
        finally:
            with up.lock:
                up.inflight -= 1


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 2048           # many concurrent connects from luahook
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass                            # aborted connections, failed TLS handshakes: quiet


class Upstream:
    """A threaded HTTP (or, with tls=SelfSignedCert, HTTPS) server on 127.0.0.1:<free port>."""

    def __init__(self, tls=None):
        self.lock = threading.Lock()
        self.requests = []
        self.connections = 0
        self.inflight = 0
        self.inflight_peak = 0
        self.stopping = threading.Event()
        self.gates = {}
        self.hits = {}
        self.tls_context = None
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(tls.cert, tls.key)
            self.tls_context = ctx
        self.scheme = "https" if tls is not None else "http"
        self.httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.upstream = self
        self.port = self.httpd.server_address[1]
        self.base = "%s://127.0.0.1:%d" % (self.scheme, self.port)
        self._thread = None

    def url(self, path=""):
        return self.base + path

    def gate(self, name):
        with self.lock:
            return self.gates.setdefault(name, threading.Event())

    def open_gate(self, name):
        """Lets every request waiting on /gate/NAME (and any later one) be answered."""
        self.gate(name).set()

    def start(self):
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def find(self, tag):
        """The recorded requests with ?tag=<tag>, in arrival order."""
        with self.lock:
            return [r for r in self.requests if r["tag"] == tag]

    def count(self, path_prefix):
        with self.lock:
            return sum(1 for r in self.requests if r["path"].startswith(path_prefix))


def refused_port():
    """A port nobody listens on: bound, noted, closed."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(pred, timeout, interval=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)
