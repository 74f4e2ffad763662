#!/usr/bin/env python3
"""Writes the hand-made seeds of tests/fuzz/corpus/<target>/ (named seed-*; libFuzzer's own
finds are named by their SHA-1). Run from anywhere; rerun after changing a target's input
layout. The recipe configs are the bundled recipes' examples (recipes/*/recipe.lua)."""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "labelstudio")


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def small_fixtures(limit=4096):
    for n in sorted(os.listdir(FIXTURES)):
        p = os.path.join(FIXTURES, n)
        if n.endswith(".json") and os.path.getsize(p) <= limit:
            with open(p, "rb") as f:
                yield n[:-5], f.read()


# request: limits (0: 1 MiB), skip mask, piece sizes, then the stream
def request_seed(stream, cuts=(0, 6, 30), limits=(0, 0), skips=0):
    return bytes([limits[0], limits[1], skips, len(cuts)]) + bytes(cuts) + stream


def requests():
    body = b'{"action":"ANNOTATION_CREATED","annotation":{"id":1}}'
    post = (b"POST /hook?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Token s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    seeds = {
        "post": post,
        "pipelined": post + post + b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
        "chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n",
        "chunk-no-crlf": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3\r\nabcXX0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n",
        "obs-fold": b"POST / HTTP/1.1\r\nContent-Length:\r\n 5\r\n\r\nhello",
        "bare-lf": b"GET / HTTP/1.1\nHost: a\n\n",
        "gzip-chunked": b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "cl-and-te": b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"0\r\n\r\n",
        "expect": b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
        "upgrade": b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x00",
        "http10": b"GET /metrics HTTP/1.0\r\n\r\n",
        "head": b"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
        "two-cl": b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        "long-path": b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n\r\n",
    }
    for name, stream in seeds.items():
        write("request", name, request_seed(stream))
    write("request", "post-bytewise", request_seed(post, cuts=()))
    write("request", "post-small-limits", request_seed(post, limits=(40, 20)))
    write("request", "pipelined-skipped", request_seed(seeds["pipelined"], skips=1))


def jsons():
    for name, data in small_fixtures():
        write("json", name, data)
    cases = {  # JSONTestSuite-like: what must be taken, refused, and kept exact
        "ints": b"[0,-0,1,-1,9007199254740993,9223372036854775807,-9223372036854775808]",
        "int-overflow": b"[9223372036854775808,-9223372036854775809,1e400,-1e400,1e-400]",
        "floats": b"[0.1,1.5e300,-0.0,1E2,2.2250738585072014e-308,4.9e-324,1.7976931348623157e308]",
        "strings": b'["a\\"\\\\\\/\\b\\f\\n\\r\\t","\\u00e9\\ud83d\\ude00","\xc3\xa9\xf0\x9f\x98\x80"]',
        "lone-surrogate": b'["\\ud800"]',
        "low-surrogate": b'["\\udc00x"]',
        "bad-utf8": b'["\xff\xc0\x80\xed\xa0\x80"]',
        "control": b'["a\x01b"]',
        "nested": b"[" * 50 + b"{}" + b"]" * 50,
        "too-deep": b"[" * 1001 + b"]" * 1001,
        "empty": b"{\"a\":[],\"b\":{},\"c\":[[]],\"d\":null,\"e\":true,\"f\":false}",
        "dup-keys": b'{"a":1,"a":2}',
        "trailing-comma": b"[1,]",
        "leading-zero": b"[01]",
        "nan": b"[NaN]",
        "single-quote": b"['a']",
        "bom": b"\xef\xbb\xbf{}",
        "trailing-data": b"{} x",
        "scalar": b" 12 ",
        "cut": b'{"a":"b',
    }
    for name, data in cases.items():
        write("json", name, data)


# log: a byte of format, level and field count, then 16-bit-length pieces
def log_seed(json_format, level, pieces):
    nfields = (len(pieces) - 1) // 2
    out = bytes([(1 if json_format else 0) | level << 1 | nfields << 3])
    for p in pieces:
        out += struct.pack("<H", len(p)) + p
    return out


def logs():
    fields = [b"handler failed", b"id", b"01b12133000000000001", b"\x01line", b"\x07\x00",
              b"script", b"handlers/a.lua", b"error", b'boom "quoted" = \\ back']
    for fmt in (0, 1):
        kind = "json" if fmt else "text"
        write("log", kind + "-fields", log_seed(fmt, 3, fields))
        write("log", kind + "-plain", log_seed(fmt, 1, [b"listening", b"addr", b"127.0.0.1:9090"]))
        write("log", kind + "-empty", log_seed(fmt, 0, [b"", b"", b""]))
        write("log", kind + "-long", log_seed(fmt, 2, [b"big", b"body", b"x" * 9000]))


def recipes():
    # byte 0 picks the recipe in name order, byte 1 how the config is built
    names = sorted(n for n in os.listdir(os.path.join(ROOT, "recipes"))
                   if os.path.exists(os.path.join(ROOT, "recipes", n, "recipe.lua")))
    with open(os.path.join(HERE, "recipe_examples.tsv")) as f:
        examples = dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)
    for i, name in enumerate(names):
        cfg = examples.get(name)
        if cfg is None:
            continue
        write("recipes", name, bytes([i, 0]) + cfg.encode())
        write("recipes", name + "-empty", bytes([i, 0]) + b"{}")
        bad = json.loads(cfg)
        for k in list(bad)[:2]:
            bad[k] = {"nested": [None, "nan"]}
        bad["unknwon"] = 1
        write("recipes", name + "-bad", bytes([i, 7]) + json.dumps(bad).encode())


if __name__ == "__main__":
    requests()
    jsons()
    logs()
    recipes()
    sys.exit(0)
