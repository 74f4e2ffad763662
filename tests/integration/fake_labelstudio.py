"""A local fake of Label Studio's REST API, for the tests of `require "labelstudio"`.

Runs in a thread of the test process on 127.0.0.1. Python 3 standard library only.

    with FakeLabelStudio() as ls:
        ls.add_tasks(7, 250)                 # tasks 1..250 of project 7
        ls.url                               # "http://127.0.0.1:PORT"

Authentication, as Label Studio does it:
    Authorization: Token <LEGACY>            the legacy token
    Authorization: Bearer <access>           an access token from the refresh endpoint,
                                             refused (401) once past its exp or revoked
    POST /api/token/refresh/ {"refresh": PAT} -> 200 {"access": <JWT>} whose payload has
                                             token_type "access" and exp = now + access_life;
                                             401 {"detail", "code": "token_not_valid"} else
Routes:
    GET   /api/tasks/ID/                     the task, or 404 {"detail": "Not found."}
    PATCH /api/tasks/ID/                     merges the JSON object into the task
    GET   /api/projects/ID/                  {"id", "title", "task_number"}
    GET   /api/tasks/?project=P&page=N&page_size=S
                                             {"tasks": [...], "total": N}; a page past the
                                             end is 404 {"detail": "Invalid page."}
    POST  /api/projects/ID/import/predictions  a JSON list of {task, result: [...], ...}:
                                             201 {"created": n}; 400 when an item lacks
                                             task or a result list, or its task is unknown

Faults: ls.fail(method, path_prefix, [(status, headers), ...]) answers the next matching
requests with those statuses first (body {"detail": "injected <status>"}).
Every request is recorded in ls.requests: {method, path, auth, json}.
"""

import base64
import http.server
import json
import threading
import time
import urllib.parse

LEGACY = "5f3c1b2a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a"


def _b64(obj):
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt(payload):
    """An unsigned-looking JWT with that payload (the fake never checks signatures)."""
    return _b64({"alg": "HS256", "typ": "JWT"}) + "." + _b64(payload) + ".c2lnbmF0dXJl"


def jwt_payload(token):
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


PAT = jwt({"token_type": "refresh", "exp": 8000000000, "iat": 1700000000,
           "jti": "0b9c6a1f2e3d4c5b", "user_id": "1"})


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-labelstudio/1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        self._serve()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def _answer(self, status, obj=None, headers=()):
        body = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _serve(self):
        ls = self.server.fake
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        parts = urllib.parse.urlsplit(self.path)
        path, query = parts.path, urllib.parse.parse_qs(parts.query)
        with ls.lock:
            ls.requests.append({"method": self.command, "path": self.path,
                                "auth": self.headers.get("Authorization"), "json": body})
            fault = ls._take_fault(self.command, path)
        if fault is not None:
            status, headers = fault
            return self._answer(status, {"detail": "injected %d" % status}, headers)
        if self.command == "POST" and path == "/api/token/refresh/":
            return self._refresh(body)
        if not self._authorized():
            return self._answer(401, {"detail": "Authentication credentials were not provided "
                                                "or are invalid."})
        with ls.lock:
            return self._route(path, query, body)

    def _refresh(self, body):
        ls = self.server.fake
        if not isinstance(body, dict) or body.get("refresh") != PAT:
            return self._answer(401, {"detail": "Token is invalid or expired",
                                      "code": "token_not_valid"})
        with ls.lock:
            ls.refreshes += 1
            access = jwt({"token_type": "access", "exp": int(time.time()) + ls.access_life,
                          "jti": "a%d" % ls.refreshes, "user_id": "1"})
            ls.issued.append(access)
        return self._answer(200, {"access": access})

    def _authorized(self):
        ls = self.server.fake
        auth = self.headers.get("Authorization") or ""
        if auth == "Token " + LEGACY:
            return True
        if auth.startswith("Bearer "):
            tok = auth[len("Bearer "):]
            with ls.lock:
                if tok not in ls.issued or tok in ls.revoked:
                    return False
            return jwt_payload(tok)["exp"] > time.time()
        return False

    def _route(self, path, query, body):
        ls = self.server.fake
        seg = [s for s in path.split("/") if s]
        if seg[:2] == ["api", "tasks"] and len(seg) == 3 and seg[2].isdigit():
            task = ls.tasks.get(int(seg[2]))
            if task is None:
                return self._answer(404, {"detail": "Not found."})
            if self.command == "GET":
                return self._answer(200, task)
            if self.command == "PATCH" and isinstance(body, dict):
                task.update(body)
                return self._answer(200, task)
            return self._answer(405, {"detail": "Method not allowed."})
        if seg == ["api", "tasks"] and self.command == "GET":
            project = int(query.get("project", ["0"])[0])
            page = int(query.get("page", ["1"])[0])
            size = int(query.get("page_size", ["100"])[0])
            rows = [t for t in sorted(ls.tasks.values(), key=lambda t: t["id"])
                    if t["project"] == project]
            chunk = rows[(page - 1) * size: page * size]
            if not chunk and page > 1:
                return self._answer(404, {"detail": "Invalid page."})
            return self._answer(200, {"tasks": chunk, "total": len(rows)})
        if seg[:2] == ["api", "projects"] and len(seg) == 3 and seg[2].isdigit():
            pid = int(seg[2])
            n = sum(1 for t in ls.tasks.values() if t["project"] == pid)
            return self._answer(200, {"id": pid, "title": "Project %d" % pid, "task_number": n})
        if (seg[:2] == ["api", "projects"] and seg[3:] == ["import", "predictions"]
                and self.command == "POST"):
            if not isinstance(body, list):
                return self._answer(400, {"detail": "Expected a list of items"})
            for i, p in enumerate(body):
                if (not isinstance(p, dict) or not isinstance(p.get("result"), list)
                        or p.get("task") not in ls.tasks):
                    return self._answer(400, {"detail": "Invalid prediction %d" % i,
                                              "validation_errors": {"result": ["Expected a list"]}})
            ls.predictions.extend(body)
            return self._answer(201, {"created": len(body)})
        return self._answer(404, {"detail": "Not found."})


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass


class FakeLabelStudio:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []
        self.tasks = {}
        self.predictions = []
        self.issued = []
        self.revoked = set()
        self.refreshes = 0
        self.access_life = 300
        self._faults = []
        self._server = None
        self._thread = None
        self.port = None
        self.url = None

    def start(self):
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.port = self._server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def add_tasks(self, project, n, first=1):
        with self.lock:
            for i in range(first, first + n):
                self.tasks[i] = {"id": i, "project": project, "data": {"text": "task %d" % i},
                                 "meta": {}, "is_labeled": False}

    def fail(self, method, prefix, answers):
        """The next len(answers) requests of `method` whose path starts with `prefix` get
        those answers: (status, [(header, value), ...])."""
        with self.lock:
            for a in answers:
                self._faults.append((method, prefix, a))

    def _take_fault(self, method, path):
        for i, (m, prefix, a) in enumerate(self._faults):
            if m == method and path.startswith(prefix):
                del self._faults[i]
                return a
        return None

    def reset(self):
        with self.lock:
            self.requests.clear()
            self.predictions.clear()
            self._faults.clear()
            self.access_life = 300

    def seen(self, method=None, prefix=""):
        with self.lock:
            return [r for r in self.requests
                    if (method is None or r["method"] == method) and r["path"].startswith(prefix)]
