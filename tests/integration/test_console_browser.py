"""The delivery console in a real browser: headless Chromium driven through WebDriver
(Debian's chromium, chromium-driver and python3-selenium) against the real binary with a
journal. Signs in (a wrong token first), lists, filters by status, searches by delivery id,
opens a dead delivery (its error and traceback), redelivers it once its downstream is back
and sees it become ok; a delivery whose body, header and error are full of markup shows
that markup as text and runs none of it; a body over 256 KiB is shown in part and
downloaded whole (masked); "Redeliver all" runs an ok delivery's handler again; the live
view shows counters and charts; every resource the page loads is under /-/. A seeded
journal of 60 deliveries: paging with "Older", the "since" filter, a filter the API refuses
shown with the filters kept, and a session that ended under a view (its next poll gets a
401) going to the sign-in form and back to the same view. Then a server without a journal:
the live view and the "not kept" line. Screenshots of the main views go to $LUAHOOK_SCREENSHOTS (set by
tests/CMakeLists.txt to the build folder), never into the source tree."""

import json
import os
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

# Debian's python3-selenium is installed for Debian's python3: a python3 found first on PATH
# (pyenv, a virtualenv) may lack it, so run under /usr/bin/python3 then.
try:
    import selenium  # noqa: F401
except ImportError:
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    sys.stderr.write("python3-selenium is missing: scripts/setup test installs it\n")
    sys.exit(1)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

import harness as h  # noqa: E402
import journal_seed as js  # noqa: E402

TOKEN = "console-s3cret"
AUTH = {"Authorization": "Token " + TOKEN}
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# generous: a loaded machine, an ASan server
WAIT = 20.0 * h.SLOW
SHOTS = os.environ.get("LUAHOOK_SCREENSHOTS") or os.path.join(os.path.dirname(h.BIN), "screenshots")

# Markup that would run if the page ever put data into the DOM as HTML.
SCRIPT_TAG = "<script>window.__pwned=1</script>"
IMG_TAG = '"><img src=x onerror="window.__pwned=1">'


def browser(folder):
    """Headless Chromium with its profile and chromedriver's log in `folder`."""
    profile = os.path.join(folder, "profile")
    os.makedirs(folder, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1366,1000", "--user-data-dir=" + profile,
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        opts.add_argument(arg)
    if os.geteuid() == 0:
        opts.add_argument("--no-sandbox")  # Chromium's sandbox refuses to run as root
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_path=os.path.join(folder, "chromedriver.log"))
    return webdriver.Chrome(service=service, options=opts)


class Page:
    """A browser on one luahook server, with waits that retry while the page redraws."""

    def __init__(self, driver, port):
        self.d = driver
        self.base = "http://127.0.0.1:%d" % port

    def open(self, path):
        self.d.get(self.base + path)

    def confirm(self, accept):
        """Answers the page's confirmation dialog, once it shows."""
        WebDriverWait(self.d, WAIT).until(EC.alert_is_present(), "a confirmation dialog")
        alert = self.d.switch_to.alert
        if accept:
            alert.accept()
        else:
            alert.dismiss()

    def until(self, cond, what):
        def probe(d):
            try:
                return cond()
            except StaleElementReferenceException:
                return False  # redrawn between the find and the read: look again
        return WebDriverWait(self.d, WAIT).until(lambda d: probe(d), "waiting for " + what)

    def find(self, css):
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def visible(self, css):
        return self.until(lambda: [e for e in self.find(css) if e.is_displayed()], css)[0]

    def text(self, css):
        found = self.find(css)
        return found[0].text if found else None

    def rows(self):
        """The deliveries table's rows as (delivery id, status), read in one round trip."""
        return [tuple(r) for r in self.js(
            "return [...document.querySelectorAll('#deliveries tbody tr')]"
            ".map(r => [r.dataset.delivery, r.dataset.status])")]

    def shot(self, name):
        os.makedirs(SHOTS, exist_ok=True)
        self.d.save_screenshot(os.path.join(SHOTS, name + ".png"))

    def js(self, code):
        return self.d.execute_script(code)

    def sign_in(self, token):
        field = self.visible("#token")
        field.clear()
        field.send_keys(token)
        self.d.find_element(By.ID, "signin-submit").click()

    def resources(self):
        """Every URL this document loaded: itself, its scripts, styles, images, API calls."""
        return self.js("return performance.getEntries().map(e => e.name)"
                       ".filter(n => /^[a-z]+:/.test(n))")

    def outside(self, urls):
        return [u for u in urls if not u.startswith(self.base + "/-/")]

    def csp_violations(self):
        return [e for e in self.d.get_log("browser")
                if "Content Security Policy" in e.get("message", "")]


class ConsoleBrowser(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for path in (CHROMIUM, CHROMEDRIVER):
            if not os.access(path, os.X_OK):
                raise AssertionError("%s is missing: scripts/setup test installs chromium and "
                                     "chromium-driver" % path)
        # one browser for the class (its start is seconds of the run time); each test
        # starts it clean: no cookie (cookies ignore ports), no log left by the last
        cls.browser_td = h.TempDir()
        try:
            cls.driver = browser(cls.browser_td.join("browser"))
        except BaseException:
            cls.browser_td.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.driver.quit()
        finally:
            cls.browser_td.cleanup()

    def setUp(self):
        self.td = h.TempDir()
        self.driver.get("about:blank")
        self.driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
        self.driver.get_log("browser")
        # served from a short path: the errors, tracebacks and screenshots stay readable
        self.script = self.td.fixture(__file__, "console.lua")

    def tearDown(self):
        self.td.cleanup()

    def api(self, srv, path):
        r = h.request(srv.port, "GET", "/-/api/" + path, headers=AUTH)
        self.assertEqual(r.status, 200, r.body)
        return r.json()

    def test_journal(self):
        flag = self.td.join("downstream-away")
        open(flag, "w").close()
        state = self.td.join("state")
        with h.Server(self.script, "--state-dir", state, "--token", TOKEN, "--retries", "0",
                      env={"FLAG_FILE": flag}) as srv:
            # Label Studio's own bodies (a project's token in them), then one full of markup
            tasks = h.fixture_bytes("TASKS_CREATED.json")
            ok_ids = [h.post_event(srv.port, tasks, headers=AUTH).json()["id"] for _ in range(3)]
            flaky = h.post_event(srv.port, h.fixture_bytes("ANNOTATION_CREATED.json"),
                                 headers=AUTH).json()["id"]
            markup = {"action": "MARKUP", "note": SCRIPT_TAG + IMG_TAG,
                      "task": {"data": {"text": IMG_TAG}}, SCRIPT_TAG: IMG_TAG}
            headers = dict(AUTH, **{"X-Note": SCRIPT_TAG + IMG_TAG})
            bad = h.post_event(srv.port, markup, headers=headers).json()["id"]
            everyone = set(ok_ids + [flaky, bad])
            # the runs are finished before the page looks: dead (no retry) or ok
            h.wait_until(lambda: {e["delivery"]: e["status"] for e in self.api(
                srv, "events")["events"]} == dict([(i, "ok") for i in ok_ids] +
                                                  [(flaky, "dead"), (bad, "dead")]),
                         timeout=WAIT, what="every delivery finished")

            p = Page(self.driver, srv.port)
            # signed out, /-/ is the sign-in form and nothing else
            p.open("/-/")
            p.visible("#token")
            self.assertEqual(p.find("#deliveries"), [])
            p.shot("signin")
            loaded = p.resources()
            self.assertIn(p.base + "/-/static/signin.js", loaded)
            self.assertEqual(p.outside(loaded), [])
            p.sign_in("not-the-token")
            p.until(lambda: "failed=1" in p.d.current_url, "the failed sign-in")
            self.assertIn("not right", p.visible("#signin-error").text)
            p.sign_in(TOKEN)

            # the list: every delivery, newest first
            p.until(lambda: {d for d, _ in p.rows()} == everyone, "the deliveries listed")
            self.assertEqual([d for d, _ in p.rows()], [bad, flaky] + ok_ids[::-1])
            p.shot("deliveries")

            # filtered by status
            Select(p.visible("#filter-status")).select_by_value("dead")
            p.until(lambda: sorted(p.rows()) == sorted([(flaky, "dead"), (bad, "dead")]),
                    "only the dead deliveries")
            self.assertIn("status=dead", p.d.current_url)  # linkable
            p.visible("#clear-filters").click()
            p.until(lambda: len(p.rows()) == len(everyone), "the filters cleared")

            # filtered by action, one the loaded handlers offer
            offered = [o.get_attribute("value") for o in p.find("#known-actions option")]
            self.assertEqual(offered, ["ANNOTATION_CREATED", "MARKUP", "TASKS_CREATED"])
            p.visible("#filter-action").send_keys("TASKS_CREATED")
            p.d.find_element(By.ID, "apply").click()
            p.until(lambda: sorted(p.rows()) == sorted((i, "ok") for i in ok_ids),
                    "only the TASKS_CREATED deliveries")
            p.visible("#clear-filters").click()
            p.until(lambda: len(p.rows()) == len(everyone), "the filters cleared")

            # searched by delivery id
            search = p.visible("#search")
            search.send_keys(flaky)
            p.d.find_element(By.ID, "apply").click()
            p.until(lambda: p.rows() == [(flaky, "dead")], "the search by delivery id")

            # the dead delivery: why it failed
            p.visible('#deliveries a[href="#/d/%s"]' % flaky).click()
            p.until(lambda: p.text("#delivery-status") == "dead", "the dead delivery")
            self.assertEqual(p.text("#delivery-id"), flaky)
            run = p.visible('.run[data-handler="console.lua#2"]')
            self.assertEqual(run.get_attribute("data-state"), "dead")
            self.assertIn("slack: 503 Service Unavailable (attempt 1)", p.text(".run-error"))
            self.assertIn("stack traceback", p.text(".run .traceback pre"))
            self.assertIn("console.lua:", p.text(".run .traceback pre"))
            # the project's secrets masked; the rest of the body as sent
            body = p.text("#body-tree")
            self.assertIn('"token": "***"', body)
            self.assertNotIn(h.FIXTURE_SECRET, p.text("body"))
            self.assertIn('"action": "ANNOTATION_CREATED"', body)
            p.shot("delivery-dead")

            # the downstream is back: redeliver the failed run from the page
            os.unlink(flag)
            p.visible("#redeliver-failed").click()
            p.until(lambda: p.text("#delivery-status") == "ok", "the redelivered delivery ok")
            p.until(lambda: len(p.find('.run[data-state="ok"] tr[data-attempt]')) == 2,
                    "both attempts shown")
            self.assertEqual(srv.find_logs(msg="notify ok")[0]["attempt"], 2)

            # an ok delivery: "Redeliver all" runs its handler once more, and it shows
            p.open("/-/#/d/" + ok_ids[0])
            p.until(lambda: p.text("#delivery-status") == "ok", "the ok delivery")
            self.assertFalse(p.visible("#redeliver-failed").is_enabled())  # nothing failed
            # it asks first (what the handler did happens again); no: nothing queued
            p.visible("#redeliver-all").click()
            p.confirm(False)
            self.assertNotIn("Queued", p.text("#flash") or "")
            self.assertEqual(len(srv.find_logs(msg="tasks ok")), len(ok_ids))
            p.visible("#redeliver-all").click()
            p.confirm(True)
            p.until(lambda: "Queued 1 run again" in (p.text("#flash") or ""), "the queued run")
            p.until(lambda: len(p.find('.run[data-state="ok"] tr[data-attempt]')) == 2,
                    "the second attempt of the ok delivery")
            p.until(lambda: p.text("#delivery-status") == "ok", "the redelivered delivery ok")
            self.assertEqual(len(srv.find_logs(msg="tasks ok")), len(ok_ids) + 1)
            self.assertTrue(p.visible("#redeliver-all").is_enabled())

            # "." and ".." are no delivery: the page asks nothing else of the API for them
            before = len(p.resources())
            p.open("/-/#/d/..")
            p.visible("#not-found")
            p.open("/-/#/d/" + flaky)  # a real one after it, so the timings are being kept
            p.until(lambda: p.text("#delivery-id") == flaky, "the delivery after '..'")
            asked = [u for u in p.resources()[before:] if "/-/api/" in u]
            self.assertIn(p.base + "/-/api/events/" + flaky, asked)
            self.assertNotIn(p.base + "/-/api/", asked)

            # markup from an event's body, header and error shows as text, never runs
            p.open("/-/#/d/" + bad)
            p.until(lambda: p.text("#delivery-status") == "dead", "the markup delivery")
            p.visible("#body-tree")
            tree = p.text("#body-tree")
            self.assertIn(json.dumps(SCRIPT_TAG + IMG_TAG), tree)
            self.assertIn(json.dumps(SCRIPT_TAG), tree)  # a key
            self.assertIn("refused: " + SCRIPT_TAG + IMG_TAG, p.text(".run-error"))
            cells = [r.find_elements(By.TAG_NAME, "td") for r in p.find("#headers tr")]
            self.assertIn(["x-note", SCRIPT_TAG + IMG_TAG], [[c.text for c in r] for r in cells])
            self.assertIsNone(p.js("return window.__pwned"))
            self.assertEqual(p.js("return document.querySelectorAll('#view img, #view script')"
                                  ".length"), 0)

            # a body over 256 KiB: its beginning as text, the whole through Download
            big = json.loads(tasks)
            big["tasks"][0]["data"]["text"] = "x" * (300 * 1024)
            big_body = json.dumps(big).encode()
            big_id = h.post_event(srv.port, big_body, headers=AUTH).json()["id"]
            p.open("/-/#/d/" + big_id)
            p.visible("#body-truncated")
            shown = p.js("return document.getElementById('body-text').textContent.length")
            self.assertTrue(256 * 1024 <= shown < len(big_body), shown)
            link = p.visible("#download-body").get_attribute("href")
            self.assertTrue(link.startswith(p.base + "/-/api/events/"), link)
            got = p.d.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "fetch(arguments[0]).then(r => r.text()).then(done, e => done(String(e)));",
                link)
            self.assertNotIn(h.FIXTURE_SECRET, got)
            big["project"]["token"] = "***"  # masked, as in the page
            self.assertEqual(json.loads(got), big)

            # live: counters and a chart of the last hour
            p.open("/-/#/live")
            p.visible("#chart-events svg")
            live = self.api(srv, "live")
            self.assertTrue(live["journal"])
            p.until(lambda: p.text("#stat-events .value") == str(live["totals"]["events"]),
                    "the events counter")
            # the journal's counts are taken every two seconds: the one dead run comes in time
            p.until(lambda: p.text("#stat-dead .value") == "1", "the dead counter")
            self.assertEqual(len(p.find("#chart-events svg rect")), len(live["series"]["events"]))
            self.assertIn("console.lua#2", p.text("#handlers"))
            self.assertTrue(p.find("#notkept")[0].get_attribute("hidden") is not None)
            p.shot("live")

            # the console's document since sign-in (every view was a change of its #)
            loaded = p.resources()
            self.assertIn(p.base + "/-/static/console.js", loaded)
            self.assertTrue([u for u in loaded if "/-/api/events" in u], loaded)
            self.assertEqual(p.outside(loaded), [])
            self.assertEqual(p.csp_violations(), [])
            self.assertIsNone(p.js("return window.__pwned"))

    def test_paging_since_expiry(self):
        state = self.td.join("state")
        j = js.Journal(js.create(state, self.script))
        now = time.time()
        # 55 deliveries from three hours ago, then 5 of the last minutes (ids grow with time)
        for k in range(55):
            j.add(action="TASKS_CREATED", runs=(("console.lua#1", "ok", 1),),
                  received=now - 3 * 3600 + k, commit=False)
        recent = [j.add(action="TASKS_CREATED", runs=(("console.lua#1", "ok", 1),),
                        received=now - 60 + k, commit=False)[1] for k in range(5)]
        j.close()
        with h.Server(self.script, "--state-dir", state, "--token", TOKEN) as srv:
            every = [e["delivery"] for e in self.api(srv, "events?limit=100")["events"]]
            self.assertEqual(len(every), 60)
            p = Page(self.driver, srv.port)
            p.open("/-/")
            p.sign_in(TOKEN)

            # the newest 50, then "Older" for the 10 before them, and back
            p.until(lambda: [d for d, _ in p.rows()] == every[:50], "the first page")
            p.visible("#older").click()
            p.until(lambda: [d for d, _ in p.rows()] == every[50:], "the older page")
            self.assertIn("before=", p.d.current_url)
            self.assertEqual(p.find("#older"), [])  # nothing older
            p.visible("#newest").click()
            p.until(lambda: [d for d, _ in p.rows()] == every[:50], "the first page again")

            # received in the last hour: the 5 recent ones only
            Select(p.visible("#filter-since")).select_by_value("1h")
            p.until(lambda: [d for d, _ in p.rows()] == recent[::-1], "the last hour")
            self.assertIn("since=1h", p.d.current_url)

            # a since= the API refuses, typed into the #: its error, and the filters to mend it
            p.open("/-/#/?since=yesterday")
            self.assertIn("since=yesterday", p.visible("#list-error").text)
            p.visible("#filter-status")
            p.visible("#clear-filters").click()
            p.until(lambda: len(p.rows()) == 50, "the filters cleared")

            # the session ends under a view: its next poll (a 401) brings the sign-in form,
            # and signing in comes back to that same view
            p.open("/-/#/?since=1h")
            p.until(lambda: len(p.rows()) == 5, "the last hour again")
            p.d.delete_cookie("lh_session")
            p.visible("#token")
            self.assertIn("/-/signin#/?since=1h", p.d.current_url)
            p.sign_in(TOKEN)
            p.until(lambda: [d for d, _ in p.rows()] == recent[::-1], "the same view again")
            self.assertTrue(p.d.current_url.endswith("/-/#/?since=1h"), p.d.current_url)
            self.assertEqual(p.csp_violations(), [])

    def test_no_journal(self):
        with h.Server(self.script, "--token", TOKEN) as srv:
            h.post_event(srv.port, {"action": "TASKS_CREATED"}, headers=AUTH)
            p = Page(self.driver, srv.port)
            p.open("/-/")
            p.sign_in(TOKEN)
            note = p.visible("#notkept")
            self.assertIn("deliveries are not kept: start luahook with --state-dir",
                          note.text.lower().replace("\n", " "))
            p.until(lambda: p.text("#no-journal") is not None, "the list's not-kept line")
            p.open("/-/#/live")
            live = self.api(srv, "live")
            self.assertFalse(live["journal"])
            p.until(lambda: p.text("#stat-events .value") == str(live["totals"]["events"]),
                    "the events counter")
            self.assertEqual(p.text("#stat-journal .value"), "off")
            self.assertIn(" · started ", p.text("#server-meta"))  # a time that stays true
            p.visible("#chart-events svg")
            p.shot("live-no-journal")
            loaded = p.resources()
            self.assertTrue([u for u in loaded if u.endswith("/-/api/live")], loaded)
            self.assertEqual(p.outside(loaded), [])
            self.assertEqual(p.csp_violations(), [])
            # a sign-out that does not reach luahook says so, and keeps the page as it is
            p.d.execute_cdp_cmd("Network.enable", {})
            p.d.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/-/signout"]})
            p.visible("#signout").click()
            p.until(lambda: "Not signed out" in (p.text("#flash") or ""), "the failed sign-out")
            p.visible("#live")
            p.d.execute_cdp_cmd("Network.setBlockedURLs", {"urls": []})
            # signing out ends the session: the form again, and the old view asks for it
            p.visible("#signout").click()
            p.visible("#token")
            p.open("/-/#/live")
            p.visible("#token")
            self.assertEqual(p.find("#live"), [])


if __name__ == "__main__":
    h.main()
