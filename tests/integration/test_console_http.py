"""The console's server side from outside, with plain HTTP: the pages and their headers,
sign-in (right, wrong, slowed down per address), the session cookie's flags, CSRF on every
state-changing request made with the cookie, sign-out, --console off, --trusted-proxy, and
the API's additions for the page (session, live, search, body size and download)."""

import json
import os
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


def request_from(port, source, method, path, body=None, headers=None):
    """One request on a fresh connection whose source address is `source` (any 127.x.y.z
    is this machine's loopback): another client as the server sees it."""
    c = h.Conn.__new__(h.Conn)
    c.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.sock.settimeout(30 * h.SLOW)
    c.sock.bind((source, 0))
    c.sock.connect(("127.0.0.1", port))
    c.timeout = 30 * h.SLOW
    c.buf = b""
    with c:
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
        self.assertEqual(r.header("Referrer-Policy"), "no-referrer")
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


def state_of(db):
    import sqlite3
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT state FROM runs").fetchone()[0]
    finally:
        con.close()


if __name__ == "__main__":
    h.main()
