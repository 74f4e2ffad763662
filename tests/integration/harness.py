"""Shared helpers for luahook's integration tests.

Everything here drives the real binary ($LUAHOOK_BIN) over real sockets on 127.0.0.1.
Python 3.11 standard library only.

    with Server([script], "--ack", "handled") as srv:
        r = post_event(srv.port, {"action": "X"})
        assert r.status == 200

Environment:
    LUAHOOK_BIN        path to the binary (default: <repo>/build/release/luahook)
    LUAHOOK_SANITIZED  "1" when the binary is an ASan/UBSan debug build (timeouts get longer)
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "labelstudio")
# Lua scripts of the integration tests: <IT_FIXTURES>/<test file name without .py>/NAME.lua
IT_FIXTURES = os.path.join(REPO, "tests", "fixtures", "integration")
SCRIPTS = os.path.join(HERE, "scripts")
BIN = os.path.abspath(os.environ.get("LUAHOOK_BIN") or os.path.join(REPO, "build", "release", "luahook"))
SANITIZED = os.environ.get("LUAHOOK_SANITIZED") == "1"
# Multiplier for waits that depend on the server's speed (never for the limits under test).
SLOW = 5.0 if SANITIZED else 1.0

# The secret that every full project object in the fixtures carries; it must never be logged.
FIXTURE_SECRET = "9f31c07a5be28d4e"

STARTUP_TIMEOUT = 10.0 * SLOW
EXIT_TIMEOUT = 10.0


def fixture_path(name):
    return os.path.join(FIXTURES, name)


def fixture_bytes(name):
    with open(fixture_path(name), "rb") as f:
        return f.read()


def fixture_json(name):
    with open(fixture_path(name), "rb") as f:
        return json.load(f)


def fixture_names():
    return sorted(n for n in os.listdir(FIXTURES) if n.endswith(".json"))


def lua_path(test, name):
    """The path of the Lua fixture `name` of test file `test` (its name without .py, or its
    __file__): tests/fixtures/integration/<test>/<name>."""
    test = os.path.splitext(os.path.basename(test))[0]
    path = os.path.join(IT_FIXTURES, test, name)
    if not os.path.isfile(path):
        raise AssertionError("no Lua fixture %s" % path)
    return path


def lua_source(test, *names):
    """The text of one or more Lua fixtures of `test`, joined in order (a shared prelude of
    helpers first, then the handlers that use them)."""
    out = []
    for name in names:
        with open(lua_path(test, name), encoding="utf-8") as f:
            out.append(f.read())
    return "".join(out)


def line_of(path, marker):
    """The 1-based line number of the one line of file `path` that contains `marker` (a
    comment such as "-- @SPIN" in a fixture). Fails unless exactly one line has it, so that
    editing a fixture cannot silently move what a test points at."""
    with open(path, encoding="utf-8") as f:
        found = [i for i, line in enumerate(f, 1) if marker in line]
    if len(found) != 1:
        raise AssertionError("%d lines of %s contain the marker %r (expected exactly 1)"
                             % (len(found), path, marker))
    return found[0]


def child_env(extra=None):
    """The environment for a luahook process: ours minus every LUAHOOK_* variable (so a
    developer's LUAHOOK_TOKEN cannot change a test), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUAHOOK_")}
    # Sanitizer builds: leaks must fail the exit code; keep reports on stderr.
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def run_luahook(*args, env=None, timeout=120.0 * SLOW, input=None, cwd=None):
    """Runs the binary to completion (check, --help, usage errors...). `timeout` only
    guards against a hang: a loaded machine may take long (luahook test over a folder)."""
    return subprocess.run(
        [BIN, *args],
        env=child_env(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL if input is None else None,
        input=input,
        capture_output=True,
        timeout=timeout,
    )


def write_script(directory, name, source):
    """Writes a Lua script (dedented) into `directory` and returns its path."""
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(source))
    return path


# --------------------------------------------------------------------------------------------
# Server process
# --------------------------------------------------------------------------------------------


class Server:
    """Context manager around `luahook serve --listen 127.0.0.1:0 --log-format json ARGS SCRIPTS`.

    scripts: a path or a list of paths (files or folders).
    args:    extra command-line options.
    env:     extra environment variables for the server (LUAHOOK_* of ours are stripped).
    listen:  override the --listen value (None: 127.0.0.1:0); use listen=False to pass none.
    """

    def __init__(self, scripts, *args, env=None, listen="127.0.0.1:0", log_format="json",
                 expect_exit=0, cwd=None, subcommand="serve", poll=None):
        if isinstance(scripts, (str, os.PathLike)):
            scripts = [scripts]
        cmd = [BIN] + ([subcommand] if subcommand else [])
        if listen:
            cmd += ["--listen", listen]
        if log_format:
            cmd += ["--log-format", log_format]
        cmd += [str(a) for a in args]
        cmd += [str(s) for s in scripts]
        self.cmd = cmd
        self.listen = listen
        self.cwd = cwd
        self.log_format = log_format or "text"
        # poll: find the server by connecting to a fixed port instead of reading the JSON
        # 'listening' line (needed for text logs and for --log-level warn/error).
        self.poll = (self.log_format != "json") if poll is None else poll
        self.env = child_env(env)
        self.expect_exit = expect_exit
        self.proc = None
        self.port = None
        self.address = None
        self.returncode = None
        self._raw = []          # every stderr line (str, without newline)
        self._cond = threading.Condition()
        self._eof = False
        self._reader = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self):
        try:
            return self._start()
        except BaseException:
            if self.proc is not None:
                self.kill()
            raise

    def _start(self):
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=self.cwd,
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self._out_reader = threading.Thread(target=self._drain_stdout, daemon=True)
        self._out_reader.start()
        if self.poll:
            # No JSON listening line to read: the port must be fixed; poll until it answers.
            self._wait_fixed_port()
            return self
        line = self.wait_log(lambda e: e.get("msg") == "listening", timeout=STARTUP_TIMEOUT,
                             what="the 'listening' log line")
        addr = line.get("address")
        m = re.fullmatch(r"127\.0\.0\.1:(\d+)", str(addr))
        if not m:
            self.kill()
            raise AssertionError("listening line has no 127.0.0.1:PORT address: %r\n%s"
                                 % (line, self.stderr_text()))
        self.address = addr
        self.port = int(m.group(1))
        if self.port == 0:
            self.kill()
            raise AssertionError("server reports port 0 in its listening line: %r" % line)
        return self

    def _wait_fixed_port(self):
        m = re.fullmatch(r"127\.0\.0\.1:(\d+)", str(self.listen))
        if not m or m.group(1) == "0":
            raise ValueError("poll mode needs listen='127.0.0.1:<fixed port>'")
        self.port = int(m.group(1))
        self.address = self.listen
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise AssertionError("luahook exited (rc=%r) before listening\n%s"
                                     % (self.proc.returncode, self.stderr_text()))
            try:
                r = request(self.port, "GET", "/healthz", timeout=2.0 * SLOW)
                if r.status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("luahook did not answer on port %d within %.0f s\n%s"
                                     % (self.port, STARTUP_TIMEOUT, self.stderr_text()))
            time.sleep(0.02)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            # The test failed: stop the server, then show what it said.
            self.stop(check=False)
            sys.stderr.write("\n---- luahook stderr (%s) ----\n%s\n---- end ----\n"
                             % (" ".join(self.cmd), self.stderr_text()[-20000:]))
            return False
        self.stop(check=True)
        return False

    def stop(self, check=True, sig=signal.SIGTERM):
        """Sends `sig`; with check, asserts exit code `expect_exit` within EXIT_TIMEOUT s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
        try:
            self.returncode = self.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            if check:
                raise AssertionError(
                    "luahook did not exit within %.0f s of %s\n---- stderr ----\n%s"
                    % (EXIT_TIMEOUT, signal.Signals(sig).name, self.stderr_text()[-20000:]))
            return
        self._close_pipes()
        if check and self.returncode != self.expect_exit:
            raise AssertionError(
                "luahook exited with %r after %s (expected %r)\n---- stderr ----\n%s"
                % (self.returncode, signal.Signals(sig).name, self.expect_exit,
                   self.stderr_text()[-20000:]))

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.returncode = self.proc.returncode if self.proc else None
        if self.proc:
            self._close_pipes()

    def _close_pipes(self):
        self._reader.join(5)
        self._out_reader.join(5)
        for p in (self.proc.stdout, self.proc.stderr):
            try:
                p.close()
            except Exception:
                pass

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # -- stderr ------------------------------------------------------------------------------

    def _read_stderr(self):
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._cond:
                self._raw.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _drain_stdout(self):
        self.stdout_bytes = b""
        for chunk in iter(lambda: self.proc.stdout.read(4096), b""):
            self.stdout_bytes += chunk

    def stderr_text(self):
        with self._cond:
            return "\n".join(self._raw)

    def raw_lines(self):
        with self._cond:
            return list(self._raw)

    def logs(self):
        """Every stderr line that parses as a JSON object, in order."""
        out = []
        for line in self.raw_lines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def find_logs(self, **fields):
        return [e for e in self.logs() if all(e.get(k) == v for k, v in fields.items())]

    def wait_log(self, pred, timeout=5.0 * SLOW, what="a log line", start=0):
        """Waits until a JSON log line (index >= start) satisfies pred; returns it."""
        deadline = time.monotonic() + timeout
        seen = start
        with self._cond:
            while True:
                while seen < len(self._raw):
                    line = self._raw[seen]
                    seen += 1
                    try:
                        obj = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(obj, dict) and pred(obj):
                        return obj
                if self._eof:
                    raise AssertionError("luahook exited (rc=%r) before %s\n---- stderr ----\n%s"
                                         % (self.proc.poll(), what, "\n".join(self._raw)[-20000:]))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out after %.1f s waiting for %s\n---- stderr ----\n%s"
                                         % (timeout, what, "\n".join(self._raw)[-20000:]))
                self._cond.wait(left)

    def wait_event(self, event_id, timeout=5.0 * SLOW):
        """Waits for the per-event log line (msg "event") of delivery `event_id`."""
        return self.wait_log(lambda e: e.get("msg") == "event" and e.get("id") == event_id,
                             timeout=timeout, what="the 'event' log line of %s" % event_id)

    def log_count(self):
        with self._cond:
            return len(self._raw)


# --------------------------------------------------------------------------------------------
# Raw HTTP over sockets
# --------------------------------------------------------------------------------------------


class Response:
    def __init__(self, status, reason, version, headers, body):
        self.status = status
        self.reason = reason
        self.version = version
        self.header_list = headers          # [(name, value)] as received
        self.headers = {}                   # lower-case name -> last value
        for k, v in headers:
            self.headers[k.lower()] = v
        self.body = body

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError("response body is not JSON (%s): %r" % (e, self.body[:500]))

    def __repr__(self):
        return "<Response %d %r headers=%r body=%r>" % (
            self.status, self.reason, self.header_list, self.body[:300])


class ConnectionClosed(Exception):
    pass


class Conn:
    """One client TCP connection with a read buffer; sends exact bytes, reads whole responses."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0 * SLOW):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def local_port(self):
        return self.sock.getsockname()[1]

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out reading a response (buffer: %r)" % self.buf[:300])
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise ConnectionClosed("connection closed by server (buffer: %r)" % self.buf[:300])
        self.buf += chunk

    def _read_until(self, marker, deadline):
        while marker not in self.buf:
            self._fill(deadline)
        i = self.buf.index(marker)
        out, self.buf = self.buf[:i], self.buf[i + len(marker):]
        return out

    def _read_exact(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, timeout=None, head_request=False):
        """Reads one response (a 1xx interim response counts as one)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        head = self._read_until(b"\r\n\r\n", deadline)
        lines = head.split(b"\r\n")
        m = re.fullmatch(rb"(HTTP/\d\.\d) (\d{3})(?: (.*))?", lines[0])
        if not m:
            raise AssertionError("malformed status line: %r" % lines[0])
        version, status, reason = m.group(1).decode(), int(m.group(2)), (m.group(3) or b"").decode()
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise AssertionError("malformed header line: %r" % line)
            headers.append((name.decode().strip(), value.decode().strip()))
        resp = Response(status, reason, version, headers, b"")
        if 100 <= status < 200 or status in (204, 304) or head_request:
            return resp
        te = resp.header("transfer-encoding", "")
        if "chunked" in te.lower():
            body = b""
            while True:
                size_line = self._read_until(b"\r\n", deadline)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    # trailers until empty line
                    while self._read_until(b"\r\n", deadline):
                        pass
                    break
                body += self._read_exact(size, deadline)
                self._read_until(b"\r\n", deadline)
            resp.body = body
        elif resp.header("content-length") is not None:
            resp.body = self._read_exact(int(resp.header("content-length")), deadline)
        else:
            # read to close
            try:
                while True:
                    self._fill(deadline)
            except ConnectionClosed:
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def request(self, method, path, body=None, headers=None, timeout=None):
        """Sends one request and reads its response. A server may answer early and close
        (413 on Content-Length alone) while a big body is still being written: the write
        then fails with EPIPE/ECONNRESET, but the answer is still there to read."""
        try:
            self.send(build_request(method, path, body, headers))
        except (BrokenPipeError, ConnectionResetError) as send_error:
            try:
                return self.read_response(timeout=timeout)
            except (ConnectionClosed, OSError):
                raise send_error
        return self.read_response(timeout=timeout)

    def closed_by_peer(self, timeout=2.0 * SLOW):
        """True when the server closes (EOF or reset) within `timeout` with nothing more to
        read; False if the connection stays open that long. Extra bytes are an error."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True
            self.buf += chunk
            raise AssertionError("unexpected bytes after the response: %r" % self.buf[:300])


def build_request(method, path, body=None, headers=None, version="HTTP/1.1"):
    """Builds exact request bytes. headers: dict or list of pairs; Host and Content-Length
    (when there is a body and no Transfer-Encoding) are added unless given."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in items}
    if "host" not in names:
        items.insert(0, ("Host", "127.0.0.1"))
    if body is not None and "content-length" not in names and "transfer-encoding" not in names:
        items.append(("Content-Length", str(len(body))))
    if body is not None and "content-type" not in names:
        items.append(("Content-Type", "application/json"))
    head = "%s %s %s\r\n" % (method, path, version)
    head += "".join("%s: %s\r\n" % (k, v) for k, v in items)
    head += "\r\n"
    return head.encode() + (body or b"")


def request(port, method, path, body=None, headers=None, timeout=10.0 * SLOW):
    """One request on a fresh connection; returns the Response."""
    with Conn(port, timeout=timeout) as c:
        return c.request(method, path, body, headers, timeout=timeout)


def post_event(port, body, path="/", headers=None, timeout=10.0 * SLOW):
    return request(port, "POST", path, body, headers, timeout=timeout)


def chunked(body, sizes):
    """Encodes `body` with Transfer-Encoding: chunked using the given chunk sizes (cycled)."""
    out = b""
    i = 0
    k = 0
    while i < len(body):
        n = sizes[k % len(sizes)]
        k += 1
        piece = body[i:i + n]
        i += n
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\n\r\n"


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_metrics(text):
    """Parses Prometheus text format into {(name, frozenset(labels)): float}."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise AssertionError("unparsable metrics line: %r" % line)
        name, labels_s, value = m.group(1), m.group(3) or "", m.group(4)
        labels = {}
        pos = 0
        while pos < len(labels_s):
            lm = _LABEL.match(labels_s, pos)
            if not lm or lm.end() == pos:
                raise AssertionError("unparsable labels in metrics line: %r" % line)
            labels[lm.group(1)] = lm.group(2)
            pos = lm.end()
        out[(name, frozenset(labels.items()))] = float(value)
    return out


class Metrics:
    def __init__(self, text):
        self.text = text
        self.samples = parse_metrics(text)

    def get(self, name, default=0.0, **labels):
        return self.samples.get((name, frozenset(labels.items())), default)

    def has(self, name, **labels):
        return (name, frozenset(labels.items())) in self.samples

    def names(self):
        return {n for n, _ in self.samples}

    def series(self, name):
        return {dict(lbl).__repr__(): v for (n, lbl), v in self.samples.items() if n == name}


def get_metrics(port):
    r = request(port, "GET", "/metrics")
    if r.status != 200:
        raise AssertionError("GET /metrics answered %r" % r)
    return Metrics(r.body.decode("utf-8"))


# --------------------------------------------------------------------------------------------
# Python value -> Lua source (for generated handler assertions)
# --------------------------------------------------------------------------------------------


def lua_string(s):
    """A Lua string literal with exactly the UTF-8 bytes of `s` (str or bytes)."""
    if isinstance(s, str):
        s = s.encode("utf-8")
    out = []
    for b in s:
        c = chr(b)
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append("\\%03d" % b)
    return '"' + "".join(out) + '"'


def lua_int(n):
    if n == -(2 ** 63):
        return "math.mininteger"
    if not (-(2 ** 63) < n < 2 ** 63):
        raise ValueError("integer out of int64 range: %d" % n)
    return "(%d)" % n


def lua_expect(v):
    """Encodes a JSON value (as json.load gives it) as a Lua 'expectation' tree for
    LUA_EXPECT's expect():  {t="int", v=...} / {t="float", v=...} / {t="str", v=...} /
    {t="bool", v=...} / {t="null"} / {t="arr", n=N, ...} / {t="obj", n=N, k={...}}."""
    if v is None:
        return '{t="null"}'
    if v is True or v is False:
        return '{t="bool",v=%s}' % ("true" if v else "false")
    if isinstance(v, int):
        return '{t="int",v=%s}' % lua_int(v)
    if isinstance(v, float):
        return '{t="float",v=%s}' % repr(v)   # repr round-trips; Lua reads it as a float
    if isinstance(v, str):
        return '{t="str",v=%s}' % lua_string(v)
    if isinstance(v, list):
        return '{t="arr",n=%d,%s}' % (len(v), ",".join(lua_expect(x) for x in v))
    if isinstance(v, dict):
        items = ",".join("[%s]=%s" % (lua_string(k), lua_expect(x)) for k, x in v.items())
        return '{t="obj",n=%d,k={%s}}' % (len(v), items)
    raise TypeError(type(v))


class TempDir:
    """tempfile.TemporaryDirectory with a .path attribute and file helpers."""

    def __init__(self):
        self._td = tempfile.TemporaryDirectory(prefix="luahook-it-")
        self.path = self._td.name

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self._td.cleanup()

    def cleanup(self):
        self._td.cleanup()

    def join(self, *p):
        return os.path.join(self.path, *p)

    def script(self, name, source):
        return write_script(self.path, name, source)

    def fixture(self, test, *names, name=None):
        """Copies the Lua fixture(s) `names` of `test` (joined in order, see lua_source) into
        this folder as `name` (default: the last of names); returns the new path."""
        return write_script(self.path, name or names[-1], lua_source(test, *names))

    def read(self, name, default=None):
        p = self.join(name)
        if not os.path.exists(p):
            return default
        with open(p, "rb") as f:
            return f.read()

    def read_lines(self, name):
        data = self.read(name, b"")
        return [l for l in data.decode("utf-8").split("\n") if l]


def free_port():
    """A port that was free a moment ago (for tests that need a fixed --listen port)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid, field="VmRSS"):
    """The resident memory of process `pid` in KiB: VmRSS, or another field of
    /proc/PID/status (RssFile: the pages mapped from files)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


class SharedServer(unittest.TestCase):
    """A test case whose tests share one server, started once: the Lua source SCRIPT (as
    SCRIPT_NAME in a temporary folder) with the command-line ARGS; self.srv, self.port."""

    SCRIPT = None
    SCRIPT_NAME = "s.lua"
    ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        try:
            cls.srv = Server(cls.tmp.script(cls.SCRIPT_NAME, cls.SCRIPT), *cls.ARGS).start()
        except BaseException:
            cls.tmp.cleanup()
            raise
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop(check=True)
        finally:
            cls.tmp.cleanup()


def wait_until(pred, timeout=5.0 * SLOW, interval=0.01, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def require_binary():
    """Fails loudly (not skip) when the binary is missing: a missing binary is a broken build."""
    if not os.path.isfile(BIN) or not os.access(BIN, os.X_OK):
        sys.stderr.write("luahook binary not found at %s (set LUAHOOK_BIN)\n" % BIN)
        sys.exit(1)


def main():
    require_binary()
    unittest.main(verbosity=2)


# Lua source of `expect(v, e, path)` (tests/fixtures/integration/harness/expect.lua): asserts
# that a decoded value matches an expectation tree made by lua_expect, Lua types included.
LUA_EXPECT = lua_source(__file__, "expect.lua")
