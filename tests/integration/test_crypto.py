"""crypto against other implementations: HMAC, digests and base64 cross-checked with the
openssl command line on random keys and data, and a Standard Webhooks signature made by
examples/forward.lua under `serve`, checked by the receiver with Python's hmac as the
specification describes."""

import base64
import hashlib
import hmac
import os
import random
import subprocess
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import upstream as u  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def openssl(*args, data):
    return subprocess.run(["openssl", *args], input=data, capture_output=True, check=True,
                          timeout=30).stdout.decode().strip()


class AgainstOpenSSLCli(unittest.TestCase):
    def test_hmac_digests_base64(self):
        rnd = random.Random(4231)
        cases = []
        for n in (0, 1, 3, 55, 64, 65, 1000):
            key = bytes(rnd.randrange(256) for _ in range(rnd.choice((1, 20, 64, 131))))
            data = bytes(rnd.randrange(256) for _ in range(n))
            cases.append((key, data))
        lines = ["test('agrees with the openssl command line', function()"]
        for key, data in cases:
            for alg in ("sha1", "sha256", "sha384", "sha512"):
                mac = openssl("mac", "-digest", alg.upper(), "-macopt", "hexkey:" + key.hex(),
                              "HMAC", data=data).lower()
                lines.append("  eq(crypto.hmac(%s, %s, %s), %s)" % (
                    h.lua_string(alg), h.lua_string(key), h.lua_string(data), h.lua_string(mac)))
                dgst = openssl("dgst", "-" + alg, "-r", data=data).split()[0]
                lines.append("  eq(crypto.%s(%s), %s)" % (alg, h.lua_string(data),
                                                          h.lua_string(dgst)))
            b64 = openssl("base64", "-A", data=data)
            lines.append("  eq(crypto.base64(%s), %s)" % (h.lua_string(data), h.lua_string(b64)))
            lines.append("  eq(crypto.unbase64(%s), %s)" % (h.lua_string(b64), h.lua_string(data)))
        lines.append("end)")
        with h.TempDir() as tmp:
            path = os.path.join(tmp.path, "openssl_test.lua")
            with open(path, "w") as f:
                f.write("\n".join(lines) + "\n")
            res = h.run_luahook("test", path)
            out = res.stdout.decode() + res.stderr.decode()
            self.assertEqual(res.returncode, 0, out)
            self.assertIn("1 passed, 0 failed", out)


SECRET = "whsec_" + base64.b64encode(b"a key of 32 bytes for the tests!").decode()


def verify(secret, headers, body):
    """The Standard Webhooks check, written from the specification."""
    key = base64.b64decode(secret[len("whsec_"):])
    signed = "%s.%s.%s" % (headers["webhook-id"], headers["webhook-timestamp"], body)
    want = base64.b64encode(hmac.new(key, signed.encode(), hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest("v1," + want, s)
               for s in headers["webhook-signature"].split(" "))


class SignedForward(unittest.TestCase):
    def test_forward_signs_what_it_sends(self):
        body = '{"action": "TASKS_CREATED", "tasks": [{"id": 1}], "note": "caf\\u00e9"}'
        with u.Upstream() as up, \
                h.Server(os.path.join(ROOT, "examples", "forward.lua"), "--ack", "handled",
                         env={"FORWARD_URL": up.url("/echo"),
                              "FORWARD_SIGNING_SECRET": SECRET}) as srv:
            r = h.post_event(srv.port, body)
            self.assertEqual(r.status, 200, r.body)
            answer = r.json()
            self.assertIs(answer["ok"], True, answer)
            got = up.requests[-1]
        hdrs = got["headers"]
        self.assertEqual(bytes.fromhex(got["body_hex"]).decode(), body)
        self.assertEqual(hdrs["webhook-id"], answer["id"])
        self.assertLess(abs(int(hdrs["webhook-timestamp"]) - time.time()), 60)
        self.assertTrue(verify(SECRET, hdrs, body), hdrs)
        self.assertFalse(verify(SECRET, dict(hdrs, **{"webhook-id": "other"}), body))
        self.assertFalse(verify(SECRET, hdrs, body + " "))


if __name__ == "__main__":
    h.main()
