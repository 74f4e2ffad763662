"""The console's server side from outside, with plain HTTP: the pages and their headers,
sign-in (right, wrong, slowed down per address), the session cookie's flags, CSRF on every
state-changing request made with the cookie, sign-out, --console off, --trusted-proxy, and
the API's additions for the page (session, live, search, body size and download)."""

import json
import os
import signal
import socket
import sys
import threading
import time
import unittest
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import journal_seed as js  # noqa: E402

TOKEN = "c0ns0le-t0ken"
AUTH = {"Authorization": "Token " + TOKEN}
REMOTE = h.lua_path(__file__, "remote.lua")
FAIL = h.lua_path(__file__, "fail.lua")
FORM = "application/x-www-form-urlencoded"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def conn_from(port, source):
    """A connection whose source address is `source` (any 127.x.y.z is this machine's
    loopback): another client as the server sees it."""
    c = h.Conn.__new__(h.Conn)
    c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.sock.settimeout(30 * h.SLOW)
    c.sock.bind((source, 0))
    c.sock.connect(("127.0.0.1", port))
    c.timeout = 30 * h.SLOW
    c.buf = b""
    return c


def request_from(port, source, method, path, body=None, headers=None):
    """One request on a fresh connection from `source`."""
    with conn_from(port, source) as c:
        return c.request(method, path, body, headers)


def signin(port, token=TOKEN, headers=None, source=None):
    body = "token=" + urllib.parse.quote(token, safe="")
    hd = {"Content-Type": FORM}
    hd.update(headers or {})
    if source is not None:
        return request_from(port, source, "POST", "/-/signin", body, hd)
    return h.request(port, "POST", "/-/signin", body, hd)


def cookie_of(r):
    """The lh_session value set by a sign-in answer."""
    sc = r.header("Set-Cookie")
    assert sc is not None and sc.startswith("lh_session="), r
    return sc.split(";", 1)[0].split("=", 1)[1]


def with_cookie(value, extra=None):
    hd = {"Cookie": "lh_session=" + value}
    hd.update(extra or {})
    return hd


def session(port):
    """A signed-in session: (cookie value, csrf token)."""
    r = signin(port)
    assert r.status == 303, r
    c = cookie_of(r)
    s = h.request(port, "GET", "/-/api/session", headers=with_cookie(c))
    assert s.status == 200, s
    return c, s.json()["csrf"]


class Pages(unittest.TestCase):
    def check_headers(self, r):
        self.assertEqual(r.header("Cache-Control"), "no-store", r)
        self.assertEqual(r.header("X-Content-Type-Options"), "nosniff")
        self.assertEqual(r.header("Referrer-Policy"), "same-origin")
        self.assertEqual(r.header("X-Frame-Options"), "DENY")
        self.assertEqual(r.header("Content-Security-Policy"), CSP)

    def test_pages_and_headers(self):
        """Every answer under /-/ carries the security headers; the page without a session
        is the sign-in form, with one the console; static files by type; unknown 404."""
        with h.Server(REMOTE, "--token", TOKEN) as srv:
            self.assertEqual(srv.find_logs(msg="listening")[0]["console"], "/-/")
            out = h.request(srv.port, "GET", "/-/")
            self.assertEqual(out.status, 200)
            self.assertTrue(out.header("Content-Type").startswith("text/html"))
            self.assertIn(b'action="/-/signin"', out.body)
            self.check_headers(out)
            self.assertEqual(h.request(srv.port, "GET", "/-/signin").body, out.body)
            c, _ = session(srv.port)
            inside = h.request(srv.port, "GET", "/-/", headers=with_cookie(c))
            self.assertEqual(inside.status, 200)
            self.assertNotEqual(inside.body, out.body)
            self.assertIn(b"/-/static/console.js", inside.body)
            self.check_headers(inside)
            # a cookie that is no session gets the form
            other = h.request(srv.port, "GET", "/-/", headers=with_cookie("x" * 43))
            self.assertEqual(other.body, out.body)
            for name, ctype in (("console.css", "text/css"), ("console.js", "text/javascript"),
                                ("signin.js", "text/javascript")):
                r = h.request(srv.port, "GET", "/-/static/" + name)
                self.assertEqual(r.status, 200, name)
                self.assertTrue(r.header("Content-Type").startswith(ctype), r)
                self.check_headers(r)
                with open(os.path.join(h.REPO, "console", name), "rb") as f:
                    self.assertEqual(r.body, f.read())
            for path in ("/-/static/nothing.js", "/-/static/../CMakeLists.txt",
                         "/-/static/.hidden", "/-/static/", "/-/elsewhere"):
                r = h.request(srv.port, "GET", path)
                self.assertEqual(r.status, 404, path)
                self.check_headers(r)
            for path in ("/-/api/events", "/-/api/live", "/-/api/nothing"):
                r = h.request(srv.port, "GET", path)
                self.assertEqual(r.status, 401, path)
                self.check_headers(r)
            r = h.request(srv.port, "GET", "/-/api/live", headers=AUTH)
            self.assertEqual(r.status, 200)
            self.check_headers(r)
            self.assertEqual(h.request(srv.port, "DELETE", "/-/").status, 405)

    def test_head(self):
        """HEAD wherever GET: the page's and the API's heads, no body (the next answer on the
        same connection comes right after the head)."""
        with h.TempDir() as td:
            with h.Server(REMOTE, "--token", TOKEN, "--state-dir", td.join("state")) as srv:
                c, _ = session(srv.port)
                for path, hd in (("/-/", {}), ("/-/static/console.css", {}),
                                 ("/-/api/live", AUTH), ("/-/api/events", AUTH),
                                 ("/-/api/stats", with_cookie(c)),
                                 ("/-/api/session", with_cookie(c))):
                    with h.Conn(srv.port) as conn:
                        conn.send(h.build_request("HEAD", path, None, hd))
                        head = conn.read_response(head_request=True)
                        self.assertEqual(head.status, 200, (path, head))
                        self.check_headers(head)
                        self.assertGreater(int(head.header("Content-Length")), 0, path)
                        r = conn.request("GET", "/healthz")
                        self.assertEqual(r.status, 200, (path, r))
                r = h.request(srv.port, "PUT", "/-/api/live", headers=AUTH)
                self.assertEqual(r.status, 405)
                self.assertEqual(r.header("Allow"), "GET, HEAD")

    def test_page_has_no_inline_code(self):
        """The CSP forbids inline script and style: the pages must not need them."""
        for name in sorted(os.listdir(os.path.join(h.REPO, "console"))):
            if not name.endswith(".html"):
                continue
            with open(os.path.join(h.REPO, "console", name), encoding="utf-8") as f:
                text = f.read().lower()
            self.assertNotIn("<style", text, name)
            self.assertNotIn(" style=", text, name)
            self.assertNotIn(" onclick=", text, name)
            self.assertNotIn(" onload=", text, name)
            for chunk in text.split("<script")[1:]:
                self.assertIn("src=", chunk.split(">", 1)[0], name)

    def test_no_token_no_console(self):
        with h.Server(REMOTE) as srv:
            self.assertEqual(srv.find_logs(msg="listening")[0]["console"], "off (no --token)")
            for path in ("/-/", "/-/signin", "/-/static/console.js"):
                r = h.request(srv.port, "GET", path)
                self.assertEqual(r.status, 404, path)
                self.assertIn("--token", r.json()["error"])
            r = signin(srv.port)
            self.assertEqual(r.status, 404)
            self.assertIsNone(r.header("Set-Cookie"))

    def test_console_off(self):
        """--console off: the pages, sign-in and sign-out are 404; the API stays, behind the
        token."""
        with h.Server(REMOTE, "--token", TOKEN, "--console", "off") as srv:
            self.assertEqual(srv.find_logs(msg="listening")[0]["console"],
                             "off (--console off)")
            for method, path in (("GET", "/-/"), ("GET", "/-/signin"),
                                 ("GET", "/-/static/console.js"), ("POST", "/-/signout")):
                r = h.request(srv.port, method, path, body="" if method == "POST" else None,
                              headers={"Content-Type": FORM} if method == "POST" else None)
                self.assertEqual(r.status, 404, path)
                self.assertIn(b"console is off (--console off)", r.body)
            r = signin(srv.port)
            self.assertEqual(r.status, 404)
            self.assertIsNone(r.header("Set-Cookie"))
            self.assertEqual(h.request(srv.port, "GET", "/-/api/live").status, 401)
            self.assertEqual(h.request(srv.port, "GET", "/-/api/live", headers=AUTH).status, 200)
            # no sessions without the console: a cookie is no credential, the token is asked
            r = h.request(srv.port, "GET", "/-/api/live", headers=with_cookie("x" * 43))
            self.assertEqual(r.status, 401)
            self.assertIn("secret in the authorization header", r.json()["error"])


class Signin(unittest.TestCase):
    def test_right_and_wrong(self):
        with h.Server(REMOTE, "--token", TOKEN) as srv:
            r = signin(srv.port)
            self.assertEqual(r.status, 303)
            self.assertEqual(r.header("Location"), "/-/")
            sc = r.header("Set-Cookie")
            parts = [p.strip() for p in sc.split(";")]
            value = cookie_of(r)
            self.assertGreaterEqual(len(value), 43)
            self.assertRegex(value, r"^[A-Za-z0-9_-]+$")
            self.assertEqual(set(parts[1:]), {"Path=/-/", "HttpOnly", "SameSite=Strict"}, sc)
            self.assertNotIn(TOKEN, sc)
            # two sign-ins: two sessions
            self.assertNotEqual(cookie_of(signin(srv.port)), value)
            s = h.request(srv.port, "GET", "/-/api/session", headers=with_cookie(value)).json()
            self.assertTrue(s["ok"])
            self.assertRegex(s["csrf"], r"^[A-Za-z0-9_-]{43}$")
            self.assertNotEqual(s["csrf"], value)
            self.assertGreater(s["expires"], time.time() + 11 * 3600)
            self.assertLess(s["expires"], time.time() + 13 * 3600)
            # the token instead of the cookie: no CSRF token needed
            t = h.request(srv.port, "GET", "/-/api/session", headers=AUTH).json()
            self.assertEqual(t["csrf"], None)

            wrong = signin(srv.port, token="not-it")
            self.assertEqual(wrong.status, 303)
            self.assertEqual(wrong.header("Location"), "/-/signin?failed=1")
            self.assertIsNone(wrong.header("Set-Cookie"))
            # the token in a header, or a prefix of it, is no sign-in either
            for token in ("Token " + TOKEN, TOKEN[:-1], TOKEN + "x", ""):
                r = signin(srv.port, token=token, source="127.0.0.3")
                self.assertIsNone(r.header("Set-Cookie"), token)
            for body in ("", "tok=" + TOKEN, "token=%zz"):
                r = h.request(srv.port, "POST", "/-/signin", body, {"Content-Type": FORM})
                self.assertEqual(r.status, 400, body)
                self.assertIsNone(r.header("Set-Cookie"))
            # a form posted from another site
            for origin in ("http://evil.example", "null", "http://127.0.0.1.evil.example"):
                r = signin(srv.port, headers={"Origin": origin})
                self.assertEqual(r.status, 403, origin)
                self.assertIsNone(r.header("Set-Cookie"))
            ok = signin(srv.port, headers={"Origin": "http://127.0.0.1"})
            self.assertEqual(ok.status, 303)
            self.assertIsNotNone(ok.header("Set-Cookie"))
            # the cookie's value and the token are never logged
            self.assertNotIn(value, srv.stderr_text())
            self.assertNotIn(TOKEN, srv.stderr_text())

    def test_signout(self):
        with h.Server(REMOTE, "--token", TOKEN) as srv:
            c, csrf = session(srv.port)
            # without the CSRF token, or with another: refused, the session lives on
            for hd in ({}, {"X-CSRF-Token": "x" * 43}):
                r = h.request(srv.port, "POST", "/-/signout", "", with_cookie(c, hd))
                self.assertEqual(r.status, 403)
            self.assertEqual(
                h.request(srv.port, "GET", "/-/api/session", headers=with_cookie(c)).status, 200)
            r = h.request(srv.port, "POST", "/-/signout", "",
                          with_cookie(c, {"X-CSRF-Token": csrf}))
            self.assertEqual(r.status, 303)
            self.assertEqual(r.header("Location"), "/-/")
            self.assertIn("Max-Age=0", r.header("Set-Cookie"))
            gone = h.request(srv.port, "GET", "/-/api/session", headers=with_cookie(c))
            self.assertEqual(gone.status, 401)
            self.assertIn("sign in again", gone.json()["error"])
            # the form field works as well as the header (a plain form)
            c2, csrf2 = session(srv.port)
            r = h.request(srv.port, "POST", "/-/signout", "csrf=" + csrf2,
                          with_cookie(c2, {"Content-Type": FORM}))
            self.assertEqual(r.status, 303)
            self.assertEqual(
                h.request(srv.port, "GET", "/-/api/session", headers=with_cookie(c2)).status,
                401)

    def test_slow_down(self):
        """Wrong tokens from one address are answered later and later, one after the other;
        a right token from another address meanwhile is answered at once; the burst is
        logged once, with its count, when it ends."""
        with h.Server(REMOTE, "--token", TOKEN, "--log-level", "debug") as srv:
            bad = "127.0.0.2"
            order = []
            lock = threading.Lock()

            def wrong(i):
                r = signin(srv.port, token="guess-%d" % i, source=bad)
                with lock:
                    order.append(("wrong", i, r.status, r.header("Location")))

            # one at a time first: the first answer is not delayed, the fourth is queued
            # behind a growing delay
            wrong(0)
            wrong(1)
            threads = [threading.Thread(target=wrong, args=(i,)) for i in (2, 3, 4)]
            for t in threads:
                t.start()
            # once the server has all five (it logs each at debug), a right token from
            # another address is answered before the slowed ones still owed
            h.wait_until(lambda: len(srv.find_logs(msg="sign-in: wrong token")) == 5,
                         what="the five wrong tokens")
            good = signin(srv.port, source="127.0.0.4")
            with lock:
                order.append(("right", None, good.status, good.header("Location")))
            for t in threads:
                t.join()
            self.assertEqual(good.status, 303)
            self.assertEqual(good.header("Location"), "/-/")
            kinds = [o[0] for o in order]
            # the right one came back before at least the last two of the slowed burst
            self.assertLess(kinds.index("right"), len(kinds) - 2, order)
            for o in order:
                if o[0] == "wrong":
                    self.assertEqual(o[2:], (303, "/-/signin?failed=1"), order)
            # no line per wrong token: the burst ends (the right token from that address)
            # and is logged once with its count
            self.assertEqual(srv.find_logs(msg=BURST), [])
            r = signin(srv.port, source=bad)
            self.assertEqual(r.status, 303)
            self.assertEqual(r.header("Location"), "/-/")
            line = srv.wait_log(lambda e: e.get("msg") == BURST, what="the burst's line")
            self.assertEqual(line["remote"], bad)
            self.assertEqual(line["wrong_tokens"], 5)
            self.assertEqual(len(srv.find_logs(msg=BURST)), 1)


    def test_stop_while_answers_wait(self):
        """SIGTERM with a slowed answer still owed: it is answered 503 at once (not the
        303 its delay would have ended in), and the server stops cleanly (exit 0, and under
        ASan nothing leaks)."""
        srv = h.Server(REMOTE, "--token", TOKEN, "--log-level", "debug",
                       "--shutdown-timeout", "30").start()
        try:
            for i in range(5):  # the next wrong one waits 4 s behind them
                signin(srv.port, token="guess", source="127.0.0.5")
            owed = conn_from(srv.port, "127.0.0.5")
            owed.send(h.build_request("POST", "/-/signin", "token=guess",
                                      {"Content-Type": FORM}))
            h.wait_until(lambda: len(srv.find_logs(msg="sign-in: wrong token")) == 6,
                         what="the sixth wrong token")
            srv.proc.send_signal(signal.SIGTERM)
            r = owed.read_response()
            self.assertEqual(r.status, 503)
            self.assertIn(b"stopping", r.body)
            owed.close()
            srv.proc.wait(timeout=h.EXIT_TIMEOUT * h.SLOW)  # on its own: no second signal
            srv.stop()  # asserts exit 0
        finally:
            if srv.alive():
                srv.kill()


BURST = "sign-in: a burst of wrong tokens, answers were slowed down"


class Csrf(unittest.TestCase):
    def test_replay_needs_csrf(self):
        """POST /-/api/replay with the cookie: no X-CSRF-Token, a wrong one, or a cross
        Origin is 403 and queues nothing; with it, it queues."""
        with h.TempDir() as td:
            d = td.join("state")
            db = js.create(d, REMOTE)
            j = js.Journal(db)
            _, dead = j.add(status="dead", runs=(("remote.lua#1", "dead", 3),),
                            error="boom")
            j.close()
            with h.Server(REMOTE, "--state-dir", d, "--token", TOKEN) as srv:
                c, csrf = session(srv.port)
                path = "/-/api/replay?id=" + dead
                for hd in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": csrf[:-1]},
                           {"X-CSRF-Token": csrf, "Origin": "http://evil.example"}):
                    r = h.request(srv.port, "POST", path, headers=with_cookie(c, hd))
                    self.assertEqual(r.status, 403, hd)
                    self.assertFalse(r.json()["ok"])
                    self.assertIn("error", r.json())
                    self.assertEqual(state_of(db), "dead", hd)
                # another session's token is no good either
                _, other = session(srv.port)
                r = h.request(srv.port, "POST", path,
                              headers=with_cookie(c, {"X-CSRF-Token": other}))
                self.assertEqual(r.status, 403)
                self.assertEqual(state_of(db), "dead")
                # a GET needs none (it changes nothing)
                r = h.request(srv.port, "GET", "/-/api/events", headers=with_cookie(c))
                self.assertEqual(r.status, 200)
                r = h.request(srv.port, "POST", path, headers=with_cookie(
                    c, {"X-CSRF-Token": csrf, "Origin": "http://127.0.0.1"}))
                self.assertEqual(r.status, 200, r.body)
                self.assertEqual(r.json()["queued"], 1)
                self.assertNotEqual(state_of(db), "dead")
                # no credential at all: 401
                r = h.request(srv.port, "POST", path, headers={"X-CSRF-Token": csrf})
                self.assertEqual(r.status, 401)


class Proxy(unittest.TestCase):
    def seen(self, srv, start, headers):
        """Posts an event with `headers`; the ctx.remote its handler saw."""
        hd = dict(AUTH)
        hd.update(headers)
        r = h.post_event(srv.port, {"action": "TASKS_CREATED"}, headers=hd)
        self.assertEqual(r.status, 200, r)
        line = srv.wait_log(lambda e: e.get("msg") == "seen", start=start,
                            what="the handler's line")
        return line["remote"]

    def test_untrusted_peer(self):
        """Without --trusted-proxy, or from a peer not in it, X-Forwarded-* mean nothing."""
        for args in ([], ["--trusted-proxy", "10.0.0.0/8"], ["--trusted-proxy", "::1"]):
            with h.Server(REMOTE, "--token", TOKEN, *args) as srv:
                start = srv.log_count()
                remote = self.seen(srv, start, {"X-Forwarded-For": "203.0.113.9"})
                self.assertRegex(remote, r"^127\.0\.0\.1:\d+$", args)
                r = signin(srv.port, headers={"X-Forwarded-Proto": "https"})
                self.assertNotIn("Secure", r.header("Set-Cookie"), args)

    def test_trusted_peer(self):
        with h.Server(REMOTE, "--token", TOKEN, "--trusted-proxy", "127.0.0.1",
                      "--trusted-proxy", "10.0.0.0/8") as srv:
            self.assertEqual(srv.find_logs(msg="listening")[0]["trusted_proxies"], 2)
            cases = [
                ({"X-Forwarded-For": "203.0.113.9"}, "203.0.113.9"),
                # the right-most address that is not itself a trusted proxy
                ({"X-Forwarded-For": "198.51.100.7, 203.0.113.9, 10.1.2.3"}, "203.0.113.9"),
                ({"X-Forwarded-For": "2001:db8::5"}, "2001:db8::5"),
                # what stands left of something that is no address is not believed
                ({"X-Forwarded-For": "203.0.113.9, garbage, 10.1.2.3"}, "10.1.2.3"),
            ]
            for headers, want in cases:
                start = srv.log_count()
                self.assertEqual(self.seen(srv, start, headers), want, headers)
            # no header: the peer itself
            start = srv.log_count()
            self.assertRegex(self.seen(srv, start, {}), r"^127\.0\.0\.1:\d+$")
            # the logs name the client too
            start = srv.log_count()
            r = h.post_event(srv.port, {"action": "TASKS_CREATED"},
                             headers={"X-Forwarded-For": "192.0.2.44"})
            self.assertEqual(r.status, 401)
            line = srv.wait_log(lambda e: e.get("msg") == "rejected", start=start,
                                what="the rejection's line")
            self.assertEqual(line["remote"], "192.0.2.44")
            # https at the proxy: the cookie is Secure
            r = signin(srv.port, headers={"X-Forwarded-Proto": "https"})
            self.assertIn("Secure", [p.strip() for p in r.header("Set-Cookie").split(";")])
            r = signin(srv.port, headers={"X-Forwarded-Proto": "http"})
            self.assertNotIn("Secure", r.header("Set-Cookie"))
            # the host the browser asked the proxy for is the origin to match
            r = signin(srv.port, headers={"X-Forwarded-Host": "hooks.example",
                                          "Origin": "https://hooks.example"})
            self.assertEqual(r.status, 303)
            r = signin(srv.port, headers={"Origin": "https://hooks.example"})
            self.assertEqual(r.status, 403)
            # https at the proxy: an http page of the same host is another origin
            hd = {"X-Forwarded-Host": "hooks.example", "X-Forwarded-Proto": "https"}
            r = signin(srv.port, headers=dict(hd, Origin="http://hooks.example"))
            self.assertEqual(r.status, 403)
            r = signin(srv.port, headers=dict(hd, Origin="https://hooks.example"))
            self.assertEqual(r.status, 303)
            # the slow-down counts the client, not the proxy: another client behind the
            # same proxy is not slowed by the first one's wrong tokens
            for i in range(3):
                signin(srv.port, token="wrong", headers={"X-Forwarded-For": "192.0.2.1"})
            r = signin(srv.port, headers={"X-Forwarded-For": "192.0.2.2"})
            self.assertEqual(r.header("Location"), "/-/")

    def test_client_headers_before_the_proxys(self):
        """A proxy that adds its own X-Forwarded-* header after the client's: the client's,
        however many, push nothing out (the nearest proxy's is the last one)."""
        with h.Server(REMOTE, "--token", TOKEN, "--trusted-proxy", "127.0.0.1") as srv:
            forged = [("X-Forwarded-For", "198.51.100.66")] * 20
            hd = list(AUTH.items()) + forged + [("X-Forwarded-For", "203.0.113.9")]
            start = srv.log_count()
            r = h.post_event(srv.port, {"action": "TASKS_CREATED"}, headers=hd)
            self.assertEqual(r.status, 200, r)
            line = srv.wait_log(lambda e: e.get("msg") == "seen", start=start,
                                what="the handler's line")
            self.assertEqual(line["remote"], "203.0.113.9")
            # the proxy said http: a client's "https" before it makes no Secure cookie
            body = "token=" + urllib.parse.quote(TOKEN, safe="")
            r = h.request(srv.port, "POST", "/-/signin", body,
                          [("Content-Type", FORM), ("X-Forwarded-Proto", "https"),
                           ("X-Forwarded-Proto", "http")])
            self.assertEqual(r.status, 303, r)
            self.assertNotIn("Secure", r.header("Set-Cookie"))

    def test_bad_option(self):
        for value in ("10.0.0.0/33", "example.com", "1.2.3.4/x", ""):
            r = h.run_luahook("check", "--trusted-proxy", value, REMOTE)
            self.assertNotEqual(r.returncode, 0, value)
            self.assertIn(b"--trusted-proxy", r.stderr, value)
        r = h.run_luahook("check", "--console", "maybe", REMOTE)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"--console", r.stderr)


class Live(unittest.TestCase):
    def live(self, srv, headers=AUTH):
        r = h.request(srv.port, "GET", "/-/api/live", headers=headers)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Content-Type"), "application/json")
        return r.json()

    def check_shape(self, live):
        for key in ("ok", "version", "uptime", "journal", "vm", "scripts", "instances",
                    "totals", "journal_stats", "series"):
            self.assertIn(key, live)
        self.assertEqual(set(live["vm"]["reload"]) >= {"at", "ok", "problems"}, True)
        self.assertEqual(set(live["totals"]) >= {"events", "failures", "retries", "rejected"},
                         True)
        series = live["series"]
        self.assertEqual(series["step"], 60)
        for k in ("events", "failures", "retries"):
            self.assertEqual(len(series[k]), 60, k)
        # the last bucket is the minute now: the window ends now
        self.assertLessEqual(series["start"] + 59 * 60, time.time() + 1)
        self.assertGreater(series["start"] + 60 * 60, time.time() - 1)

    def test_without_journal(self):
        with h.TempDir() as td:
            script = td.script("hooks.lua", h.lua_source(__file__, "remote.lua", "fail.lua"))
            with h.Server(script, "--token", TOKEN) as srv:
                live = self.live(srv)
                self.check_shape(live)
                self.assertIs(live["journal"], False)
                self.assertIsNone(live["journal_stats"])
                self.assertEqual(live["vm"]["generation"], 1)
                self.assertIsNone(live["vm"]["reload"]["at"])
                self.assertEqual([s["file"] for s in live["scripts"]], ["hooks.lua"])
                handlers = live["scripts"][0]["handlers"]
                self.assertEqual([(x["handler"], x["action"]) for x in handlers],
                                 [("hooks.lua#1", "TASKS_CREATED"),
                                  ("hooks.lua#always_fails", "ANNOTATION_CREATED")])
                self.assertRegex(handlers[0]["site"], r"hooks\.lua:\d+$")
                self.assertIsNone(handlers[0]["recipe"])
                self.assertEqual(live["totals"]["events"], 0)
                for _ in range(3):
                    self.assertEqual(h.post_event(srv.port, {"action": "TASKS_CREATED"},
                                                  headers=AUTH).status, 200)
                r = h.post_event(srv.port, {"action": "ANNOTATION_CREATED"}, headers=AUTH)
                self.assertEqual(r.status, 200)
                self.assertEqual(h.post_event(srv.port, {"action": "X"}).status, 401)
                h.wait_until(lambda: self.live(srv)["totals"]["failures"] == 1,
                             what="the failed run counted")
                live = self.live(srv)
                self.assertEqual(live["totals"]["events"], 4)
                self.assertEqual(live["totals"]["rejected"], 1)
                # every event of this server's life is in the last hour's buckets
                self.assertEqual(sum(live["series"]["events"]), 4)
                self.assertEqual(sum(live["series"]["failures"]), 1)
                # the page (a cookie) reads it as well
                c, _ = session(srv.port)
                self.assertEqual(self.live(srv, with_cookie(c))["totals"]["events"], 4)

                # a reload that fails: the old scripts stay, the problem is shown
                with open(script, "a") as f:
                    f.write("\nthis is not lua\n")
                os.kill(srv.proc.pid, signal.SIGHUP)
                h.wait_until(lambda: self.live(srv)["vm"]["reload"]["at"] is not None,
                             what="the reload's result")
                live = self.live(srv)
                self.assertIs(live["vm"]["reload"]["ok"], False)
                self.assertEqual(live["vm"]["generation"], 1)
                self.assertTrue(any("hooks.lua" in p for p in live["vm"]["reload"]["problems"]),
                                live["vm"]["reload"])
                with open(script, "w") as f:
                    f.write(h.lua_source(__file__, "remote.lua"))
                os.kill(srv.proc.pid, signal.SIGHUP)
                h.wait_until(lambda: self.live(srv)["vm"]["generation"] == 2,
                             what="the second reload")
                live = self.live(srv)
                self.assertIs(live["vm"]["reload"]["ok"], True)
                self.assertEqual(live["vm"]["reload"]["problems"], [])
                self.assertEqual(len(live["scripts"][0]["handlers"]), 1)

    def test_with_journal(self):
        with h.TempDir() as td:
            script = td.script("hooks.lua", h.lua_source(__file__, "remote.lua", "fail.lua"))
            with h.Server(script, "--token", TOKEN, "--state-dir", td.join("state")) as srv:
                live = self.live(srv)
                self.check_shape(live)
                self.assertIs(live["journal"], True)
                self.assertEqual(set(live["journal_stats"]) >=
                                 {"pending", "dead", "retrying", "oldest_pending_age"}, True)
                r = h.post_event(srv.port, {"action": "ANNOTATION_CREATED"}, headers=AUTH)
                self.assertEqual(r.status, 200)
                h.wait_until(lambda: self.live(srv)["journal_stats"]["retrying"] == 1,
                             timeout=15 * h.SLOW, what="the failed run counted as retrying")
                self.assertEqual(self.live(srv)["totals"]["failures"], 1)


class Deliveries(unittest.TestCase):
    def seeded(self, td):
        d = td.join("state")
        db = js.create(d, REMOTE)
        j = js.Journal(db)
        self.ids = [j.add()[1] for _ in range(12)]
        hostile = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>"
        self.hostile = j.add(status="dead", runs=(("remote.lua#1", "dead", 2),),
                             body=json.dumps({"action": "X", "note": hostile}).encode(),
                             headers={"x-note": hostile}, error=hostile, traceback=hostile)[1]
        self.big = j.add(body=js.body_for("ANNOTATION_CREATED", 7,
                                          {"pad": "y" * (300 * 1024)}))[1]
        self.text = j.add(body=b"<html>not json, \"token\": \"" +
                          js.SECRET_TOKEN.encode() + b"\"</html>")[1]
        j.close()
        self.hostile_text = hostile
        return d

    def test_search(self):
        with h.TempDir() as td:
            d = self.seeded(td)
            with h.Server(REMOTE, "--state-dir", d, "--token", TOKEN) as srv:
                def found(q):
                    r = h.request(srv.port, "GET", "/-/api/events?q=" + urllib.parse.quote(q),
                                  headers=AUTH)
                    self.assertEqual(r.status, 200, r)
                    return [e["delivery"] for e in r.json()["events"]]
                target = self.ids[4]
                self.assertEqual(found(target), [target])
                # a prefix: every delivery id that starts with it, newest first
                prefix = target[:-1]
                want = sorted([i for i in self.ids + [self.hostile, self.big, self.text]
                               if i.startswith(prefix)], reverse=True)
                self.assertGreater(len(want), 1)
                self.assertEqual(found(prefix), want)
                self.assertEqual(found("ffffffff"), [])
                self.assertEqual(found(target + "0"), [])
                # with other filters and paging
                r = h.request(srv.port, "GET", "/-/api/events?q=%s&status=dead" % prefix[:4],
                              headers=AUTH).json()
                self.assertEqual([e["delivery"] for e in r["events"]], [self.hostile])
                r = h.request(srv.port, "GET", "/-/api/events?limit=2&q=" + prefix,
                              headers=AUTH).json()
                self.assertEqual(len(r["events"]), 2)
                self.assertIsNotNone(r["next"])
                r = h.request(srv.port, "GET", "/-/api/events?q=", headers=AUTH)
                self.assertEqual(r.status, 400)
                r = h.request(srv.port, "GET", "/-/api/events?q=" + "a" * 200, headers=AUTH)
                self.assertEqual(r.status, 400)
                self.assertIn("q", r.json()["error"])

    def test_show_body_and_download(self):
        with h.TempDir() as td:
            d = self.seeded(td)
            with h.Server(REMOTE, "--state-dir", d, "--token", TOKEN) as srv:
                ev = h.request(srv.port, "GET", "/-/api/events/" + self.ids[0],
                               headers=AUTH).json()["event"]
                self.assertEqual(ev["body_size"], len(js.body_for("ANNOTATION_CREATED")))
                self.assertNotIn("body_truncated", ev)
                self.assertEqual(ev["body"]["project"]["token"], "***")

                r = h.request(srv.port, "GET", "/-/api/events/%s" % self.big, headers=AUTH)
                ev = r.json()["event"]
                whole = len(js.body_for("ANNOTATION_CREATED", 7, {"pad": "y" * (300 * 1024)}))
                self.assertEqual(ev["body_size"], whole)
                self.assertIs(ev["body_truncated"], True)
                self.assertIsNone(ev["body"])
                self.assertLessEqual(len(ev["body_text"].encode()), 256 * 1024)
                self.assertGreater(len(ev["body_text"]), 200 * 1024)
                self.assertNotIn(js.SECRET_TOKEN.encode(), r.body)
                self.assertNotIn(js.SECRET_PASSWORD.encode(), r.body)

                r = h.request(srv.port, "GET", "/-/api/events/%s/body" % self.big, headers=AUTH)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.header("Content-Type"), "application/json")
                self.assertEqual(r.header("Content-Disposition"),
                                 'attachment; filename="delivery-%s.json"' % self.big)
                self.assertEqual(r.header("X-Content-Type-Options"), "nosniff")
                body = r.json()
                self.assertEqual(body["project"]["token"], "***")
                self.assertEqual(body["project"]["task_data_password"], "***")
                self.assertEqual(len(body["pad"]), 300 * 1024)
                self.assertNotIn(js.SECRET_TOKEN.encode(), r.body)
                self.assertNotIn(js.SECRET_PASSWORD.encode(), r.body)
                # by the numeric id too, and with the cookie
                c, _ = session(srv.port)
                r2 = h.request(srv.port, "GET", "/-/api/events/%d/body" % (len(self.ids) + 2),
                               headers=with_cookie(c))
                self.assertEqual(r2.body, r.body)
                # a body that is no JSON: one JSON string of its text, masked
                r = h.request(srv.port, "GET", "/-/api/events/%s/body" % self.text, headers=AUTH)
                self.assertEqual(r.header("Content-Type"), "application/json")
                self.assertIsInstance(r.json(), str)
                self.assertIn("<html>", r.json())
                self.assertNotIn(js.SECRET_TOKEN, r.json())
                for path in ("/-/api/events/nope/body", "/-/api/events//body"):
                    r = h.request(srv.port, "GET", path, headers=AUTH)
                    self.assertIn(r.status, (400, 404), path)
                    self.assertFalse(r.json()["ok"])
                r = h.request(srv.port, "GET", "/-/api/events/%s/body" % self.big)
                self.assertEqual(r.status, 401)

    def test_big_body_cut_between_characters(self):
        """A big body is shown up to a character's start, never half of one (no U+FFFD)."""
        with h.TempDir() as td:
            d = td.join("state")
            j = js.Journal(js.create(d, REMOTE))
            # '{"pad": "' is 9 bytes and each 'é' 2: the 256 KiB mark falls inside one
            body = json.dumps({"pad": "é" * (200 * 1024)}, ensure_ascii=False).encode()
            self.assertEqual(body[256 * 1024] & 0xC0, 0x80)
            big = j.add(body=body)[1]
            j.close()
            with h.Server(REMOTE, "--state-dir", d, "--token", TOKEN) as srv:
                ev = h.request(srv.port, "GET", "/-/api/events/" + big,
                               headers=AUTH).json()["event"]
                self.assertIs(ev["body_truncated"], True)
                self.assertNotIn("\ufffd", ev["body_text"])
                self.assertEqual(ev["body_text"].encode(), body[:256 * 1024 - 1])

    def test_markup_is_data(self):
        """A body, a header and an error full of markup come back as JSON data, never as
        a page: the API never answers text/html."""
        with h.TempDir() as td:
            d = self.seeded(td)
            with h.Server(REMOTE, "--state-dir", d, "--token", TOKEN) as srv:
                c, _ = session(srv.port)
                for path in ("/-/api/events/" + self.hostile,
                             "/-/api/events/%s/body" % self.hostile,
                             "/-/api/events?status=dead", "/-/api/events/<script>",
                             "/-/api/events?action=<script>", "/-/api/<script>",
                             "/-/api/live", "/-/api/stats"):
                    for hd in (AUTH, with_cookie(c)):
                        r = h.request(srv.port, "GET", path, headers=hd)
                        self.assertEqual(r.header("Content-Type"), "application/json", path)
                        self.assertEqual(r.header("X-Content-Type-Options"), "nosniff")
                        self.assertEqual(r.header("Content-Security-Policy"), CSP)
                        r.json()
                ev = h.request(srv.port, "GET", "/-/api/events/" + self.hostile,
                               headers=AUTH).json()["event"]
                self.assertEqual(ev["body"]["note"], self.hostile_text)
                self.assertEqual(ev["headers"]["x-note"], self.hostile_text)
                self.assertEqual(ev["runs"][0]["error"], self.hostile_text)


def state_of(db):
    import sqlite3
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT state FROM runs").fetchone()[0]
    finally:
        con.close()


if __name__ == "__main__":
    h.main()
