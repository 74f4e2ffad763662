"""How fast the console loads on a journal of N deliveries (default 100 000 of ~5 KB), and
whether a browser sitting on it slows event handling. Run by hand (needs chromium,
chromium-driver and python3-selenium; on Debian's /usr/bin/python3):
    LUAHOOK_BIN=build/release/luahook /usr/bin/python3 tests/bench/console_load.py [N]
Prints, for each view, the median and max over several fresh loads of: the document's
load event, the last API answer and the moment the view's first data is in the page
(Navigation and Resource Timing, and a MutationObserver the browser adds before the
page's own script); then the latency of posted events with no browser and with one on
the deliveries list and one on the live view."""

import json
import os
import statistics
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness as h  # noqa: E402
import journal_seed as js  # noqa: E402
import test_console_browser as cb  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
LOADS = 7
AUTH = cb.AUTH

MARKS = ["#deliveries tbody tr", "#body-tree", "#chart-events svg"]
# Runs in every document before its own scripts (through the DevTools protocol, which the
# page's Content-Security-Policy does not govern): notes when each mark first matches.
OBSERVER = """
window.__shown = {};
new MutationObserver(function () {
    for (const m of %s) {
        if (!(m in window.__shown) && document.querySelector(m)) window.__shown[m] = performance.now();
    }
}).observe(document, {subtree: true, childList: true});
""" % json.dumps(MARKS)


def load_times(page, path, mark):
    rows = []
    for _ in range(LOADS):
        page.open("/-/")  # leave the view, so that the next get is a full load
        page.d.get(page.base + path)
        page.until(lambda: page.js("return window.__shown[%s]" % json.dumps(mark)), mark)
        rows.append(page.js("""
            const nav = performance.getEntriesByType('navigation')[0];
            const api = performance.getEntriesByType('resource').filter(e => e.name.includes('/-/api/'));
            return [nav.loadEventEnd, Math.max(...api.map(e => e.responseEnd)), window.__shown[%s]];
        """ % json.dumps(mark)))
    return [(statistics.median(c), max(c)) for c in zip(*rows)]


def post_latency(port, n=300):
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        r = h.post_event(port, {"action": "ANNOTATION_CREATED", "project": {"id": 7}}, headers=AUTH)
        lat.append(time.perf_counter() - t0)
        assert r.status == 200, r.body
    lat.sort()
    return lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000


def main():
    with h.TempDir() as td:
        d = td.join("state")
        script = h.lua_path(cb.__file__, "console.lua")
        db = js.create(d, script)
        t0 = time.perf_counter()
        js.seed_many(db, N)
        print("seeded %d deliveries in %.1f s, database %.0f MB" %
              (N, time.perf_counter() - t0, os.path.getsize(db) / 1e6), flush=True)
        with h.Server(script, "--state-dir", d, "--token", cb.TOKEN,
                      env={"FLAG_FILE": td.join("none")}) as srv:
            print("posted events, no browser:       median %.2f ms, p99 %.2f ms" %
                  post_latency(srv.port), flush=True)
            drivers = [cb.browser(td.join("b1")), cb.browser(td.join("b2"))]
            try:
                drivers[0].execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                           {"source": OBSERVER})
                page = cb.Page(drivers[0], srv.port)
                page.open("/-/")
                page.sign_in(cb.TOKEN)
                page.visible("#deliveries")
                delivery = page.find("#deliveries tbody tr")[0].get_attribute("data-delivery")
                for what, path, mark in [
                    ("deliveries", "/-/#/", "#deliveries tbody tr"),
                    ("deliveries?status=dead", "/-/#/?status=dead", "#deliveries tbody tr"),
                    ("one delivery", "/-/#/d/" + delivery, "#body-tree"),
                    ("live", "/-/#/live", "#chart-events svg"),
                ]:
                    t = load_times(page, path, mark)
                    print("%-24s load event %6.0f ms (max %4.0f)   API answered %6.0f ms (max %4.0f)"
                          "   shown %6.0f ms (max %4.0f)" % (what, *t[0], *t[1], *t[2]), flush=True)
                # the same two browsers idle (the machine's load of Chromium itself), then
                # one following the list and one the live view, while events come
                other = cb.Page(drivers[1], srv.port)
                other.open("/-/")
                other.sign_in(cb.TOKEN)
                for drv in drivers:
                    drv.get("about:blank")
                print("posted events, browsers idle:    median %.2f ms, p99 %.2f ms" %
                      post_latency(srv.port), flush=True)
                page.open("/-/#/")
                other.open("/-/#/live")
                other.visible("#chart-events svg")
                print("posted events, two browsers on:  median %.2f ms, p99 %.2f ms" %
                      post_latency(srv.port), flush=True)
                for drv in drivers:
                    drv.get("about:blank")
                print("posted events, browsers idle:    median %.2f ms, p99 %.2f ms" %
                      post_latency(srv.port), flush=True)
            finally:
                for drv in drivers:
                    drv.quit()


if __name__ == "__main__":
    h.require_binary()
    main()
