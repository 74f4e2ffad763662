"""`luahook test`: the harness's own suite (tests/lua) passes, and deliberately failing test
files (tests/fixtures/testing) are reported exactly: one line per test, FAIL with the test
file's file:line, the expected/actual diff with a nested path, logs of a failing test,
`(load)` for a file that cannot load, `(no tests)` for a file without tests, the summed last
line, exit codes, a fresh VM per file, and the handler timeout: virtual while a handler waits,
real (a C count hook, through any pcall) while it computes."""

import time

import os
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

# Paths as given on the command line (relative to the repository, where the runs happen).
FIX = "tests/fixtures/testing"
FAILING = FIX + "/failing_test.lua"
LOAD_SYNTAX = FIX + "/load_syntax_test.lua"
LOAD_HANDLERS = FIX + "/load_handlers_test.lua"
VM_DIR = FIX + "/vm"

FAILING_OUTPUT = """\
ok   {f}: this one passes
FAIL {f}: a nested difference
    {f}:10: values differ at .tasks[2].data.text
      expected: "c"
      actual:   "b"
FAIL {f}: an integer is not a float
    {f}:14: the count: values differ at .count
      expected: 3.0
      actual:   3
FAIL {f}: a plain error
    {f}:19: attempt to index a nil value (local 't')
      traceback:
        {f}:19
FAIL {f}: logs are shown for a failing test
    {f}:24: on purpose: expected a truthy value
      actual:   false
    logs:
      info annotation seen id=77 task=101
      warn no model configured
FAIL {f}: an allowed handler error fails only through an assertion
    {f}:29: the string does not match the pattern
      pattern:  "^nothing$"
      actual:   "{fix}/handlers/logger.lua:6: cannot handle this"
FAIL {f}: an unexpected handler error fails the test
    {f}:33: handler logger.lua#2 {fix}/handlers/logger.lua:6 failed: {fix}/handlers/logger.lua:6: cannot handle that
      (fire(..., {{ allow_failure = true }}) expects failures)
FAIL {f}: an unexpected timer error fails the test
    {f}:39: timer {fix}/handlers/logger.lua:9 failed: {fix}/handlers/logger.lua:9: the timer cannot cope
      (clock.advance(..., {{ allow_failure = true }}) expects failures)
    logs:
      error timer failed error="{fix}/handlers/logger.lua:9: the timer cannot cope" line=9 outcome=error script={fix}/handlers/logger.lua
ok   {f}: also passes
2 passed, 7 failed
""".format(f=FAILING, fix=FIX)

LOAD_SYNTAX_OUTPUT = """\
FAIL {f}: (load)
    {f}:2: unexpected symbol near '='
0 passed, 1 failed
""".format(f=LOAD_SYNTAX)

LOAD_HANDLERS_OUTPUT = """\
FAIL {f}: (load)
    {fix}/handlers/raises_at_load.lua:2: refusing to load
      traceback:
        {f}:2
0 passed, 1 failed
""".format(f=LOAD_HANDLERS, fix=FIX)


def run_test(*paths, cwd=h.REPO):
    return h.run_luahook("test", *paths, cwd=cwd)


def out(res):
    return res.stdout.decode("utf-8", "replace")


def both(res):
    return out(res) + res.stderr.decode("utf-8", "replace")


class OwnSuite(unittest.TestCase):
    def test_tests_lua_all_pass(self):
        res = run_test("tests/lua")
        self.assertEqual(res.returncode, 0, both(res))
        lines = out(res).splitlines()
        self.assertRegex(lines[-1], r"^\d+ passed, 0 failed$")
        passed = int(lines[-1].split()[0])
        self.assertGreaterEqual(passed, 50, both(res))
        self.assertEqual(len(lines), passed + 1, both(res))
        for line in lines[:-1]:
            self.assertRegex(line, r"^ok   tests/lua/[a-z_]+_test\.lua: \S", both(res))
        # files in name order, every file of the folder
        files = []
        for line in lines[:-1]:
            name = line[5:].split(":", 1)[0]
            if name not in files:
                files.append(name)
        self.assertEqual(files, sorted(files))
        self.assertEqual(set(files), {"tests/lua/" + n for n in os.listdir(
            os.path.join(h.REPO, "tests", "lua")) if n.endswith("_test.lua")})

    def test_run_from_inside_the_folder(self):
        # paths of handlers() and fire() are relative to the test file, not to the cwd
        res = run_test(cwd=os.path.join(h.REPO, "tests", "lua"))
        self.assertEqual(res.returncode, 0, both(res))
        self.assertRegex(out(res).splitlines()[-1], r"^\d+ passed, 0 failed$")
        self.assertIn("ok   api_test.lua: ", out(res))


class FailureReports(unittest.TestCase):
    def test_failing_file_exact_output(self):
        res = run_test(FAILING)
        self.assertEqual(res.returncode, 1, both(res))
        self.assertEqual(out(res), FAILING_OUTPUT)

    def test_file_that_does_not_compile_is_one_load_failure(self):
        res = run_test(LOAD_SYNTAX)
        self.assertEqual(res.returncode, 1, both(res))
        self.assertEqual(out(res), LOAD_SYNTAX_OUTPUT)
        self.assertNotIn("never runs", out(res))

    def test_handler_script_raising_at_load_is_one_load_failure(self):
        res = run_test(LOAD_HANDLERS)
        self.assertEqual(res.returncode, 1, both(res))
        self.assertEqual(out(res), LOAD_HANDLERS_OUTPUT)

    def test_totals_are_summed_over_files(self):
        res = run_test(LOAD_SYNTAX, FAILING, VM_DIR, LOAD_HANDLERS)
        self.assertEqual(res.returncode, 1, both(res))
        lines = out(res).splitlines()
        self.assertEqual(lines[-1], "5 passed, 9 failed")
        self.assertEqual(sum(1 for l in lines if l.startswith("ok   ")), 5)
        self.assertEqual(sum(1 for l in lines if l.startswith("FAIL ")), 9)
        # every other line is indented detail under a FAIL line
        for l in lines[:-1]:
            self.assertRegex(l, r"^(ok   |FAIL |    )")

    def test_fresh_vm_per_file(self):
        res = run_test(VM_DIR)
        self.assertEqual(res.returncode, 0, both(res))
        self.assertEqual(out(res), (
            "ok   {d}/a_test.lua: a global set in one test\n"
            "ok   {d}/a_test.lua: is visible in the next test of the same file\n"
            "ok   {d}/b_test.lua: nothing of a_test.lua is visible here\n"
            "3 passed, 0 failed\n").format(d=VM_DIR))

    def test_absolute_paths(self):
        path = os.path.join(h.REPO, FAILING)
        res = run_test(path, cwd="/")
        self.assertEqual(res.returncode, 1, both(res))
        lines = out(res).splitlines()
        self.assertEqual(lines[-1], "2 passed, 7 failed")
        self.assertIn("    %s:10: values differ at .tasks[2].data.text" % path, lines)
        self.assertIn("      actual:   \"%s/handlers/logger.lua:6: cannot handle this\""
                      % os.path.join(h.REPO, FIX), lines)


class Generated(unittest.TestCase):
    """Small test files written on the fly, for what the fixtures do not show."""

    def setUp(self):
        self.tmp = h.TempDir()

    def tearDown(self):
        self.tmp.cleanup()

    def test_all_passing_exits_0(self):
        self.tmp.script("h.lua", """\
            on("A", function(ev) log.info("got", { n = ev.n }) end)
            """)
        self.tmp.script("one_test.lua", """\
            handlers("h.lua")
            test("first", function()
              fire({ action = "A", n = 1 })
              eq(logs()[1].fields.n, 1)
            end)
            """)
        res = run_test(cwd=self.tmp.path)
        self.assertEqual(res.returncode, 0, both(res))
        self.assertEqual(out(res), "ok   one_test.lua: first\n1 passed, 0 failed\n")

    def test_error_at_top_level_of_the_test_file(self):
        self.tmp.script("top_test.lua", """\
            test("registered", function() end)
            error("top level says no")
            """)
        res = run_test("top_test.lua", cwd=self.tmp.path)
        self.assertEqual(res.returncode, 1, both(res))
        self.assertEqual(out(res), "FAIL top_test.lua: (load)\n"
                                   "    top_test.lua:2: top level says no\n"
                                   "      traceback:\n"
                                   "        top_test.lua:2\n"
                                   "0 passed, 1 failed\n")

    def test_long_values_are_truncated(self):
        self.tmp.script("long_test.lua", """\
            test("long", function()
              eq({ s = string.rep("x", 1000) }, { s = "y" })
            end)
            """)
        res = run_test("long_test.lua", cwd=self.tmp.path)
        self.assertEqual(res.returncode, 1, both(res))
        lines = out(res).splitlines()
        self.assertEqual(lines[1], "    long_test.lua:2: values differ at .s")
        self.assertEqual(lines[2], '      expected: "y"')
        self.assertTrue(lines[3].startswith('      actual:   "xxxx'), lines[3])
        self.assertTrue(lines[3].endswith("... (1002 bytes)"), lines[3])
        self.assertLess(len(lines[3]), 260)

    def test_tables_render_compactly_with_sorted_keys(self):
        self.tmp.script("tbl_test.lua", """\
            test("tables", function()
              eq({ b = { 1, 2.5, "x" }, a = json.null, ["k y"] = true }, 7)
            end)
            """)
        res = run_test("tbl_test.lua", cwd=self.tmp.path)
        lines = out(res).splitlines()
        self.assertEqual(lines[1], "    tbl_test.lua:2: values differ")
        self.assertEqual(lines[2], "      expected: 7")
        self.assertEqual(lines[3], '      actual:   {a = json.null, b = {1, 2.5, "x"}, ["k y"] = true}')

    def test_tests_inside_a_recipe_folder(self):
        # a test file finds handlers and events relative to itself, however deep it sits
        os.makedirs(self.tmp.join("recipes", "slack", "tests", "deep"))
        self.tmp.script("recipes/slack/notify.lua", """\
            on("A", function(ev) log.info("notified", { n = ev.n }) end)
            """)
        self.tmp.script("recipes/slack/tests/deep/event.json", '{"action": "A", "n": 3}\n')
        self.tmp.script("recipes/slack/tests/deep/notify_test.lua", """\
            handlers("../../notify.lua")
            test("found relative to the test file", function()
              local r = fire("event.json")
              eq(r[1].handler, "recipes/slack/tests/deep/../../notify.lua:1")
              eq(logs()[1].fields.n, 3)
            end)
            """)
        res = run_test(cwd=self.tmp.path)
        self.assertEqual(res.returncode, 0, both(res))
        self.assertEqual(out(res), "ok   recipes/slack/tests/deep/notify_test.lua: found relative"
                                   " to the test file\n1 passed, 0 failed\n")

    def test_the_clock_never_goes_back_in_a_file(self):
        # a cooldown computed in one test still holds in the next
        self.tmp.script("train.lua", """\
            local last
            on("TRAIN", function()
              if last and os.time() - last < 600 then log.info("skipped") return end
              last = os.time()
              log.info("trained")
            end)
            """)
        self.tmp.script("train_test.lua", """\
            handlers("train.lua")
            test("the first trains", function()
              fire({ action = "TRAIN" })
              eq(logs()[1].msg, "trained")
            end)
            test("a second within 10 minutes does not", function()
              clock.advance(60)
              fire({ action = "TRAIN" })
              eq(logs()[1].msg, "skipped")
            end)
            test("after 10 minutes it trains again", function()
              clock.advance(600)
              fire({ action = "TRAIN" })
              eq(logs()[1].msg, "trained")
            end)
            """)
        res = run_test(cwd=self.tmp.path)
        self.assertEqual(res.returncode, 0, both(res))
        self.assertEqual(out(res).splitlines()[-1], "3 passed, 0 failed")

    def test_file_without_tests_fails(self):
        self.tmp.script("h.lua", "on('A', function() end)\n")
        self.tmp.script("empty_test.lua", """\
            handlers("h.lua")
            -- tset("a typo", function() end)
            """)
        self.tmp.script("fine_test.lua", 'test("fine", function() end)\n')
        res = run_test(cwd=self.tmp.path)
        self.assertEqual(res.returncode, 1, both(res))
        self.assertEqual(out(res), "FAIL empty_test.lua: (no tests)\n"
                                   "ok   fine_test.lua: fine\n"
                                   "1 passed, 1 failed\n")


class HandlerTimeout(unittest.TestCase):
    """The --handler-timeout of `luahook test`: the virtual budget of a waiting handler, and
    the real CPU budget of a computing one, which no pcall can catch."""

    def setUp(self):
        self.tmp = h.TempDir()
        self.tmp.script("busy.lua", """\
            on("SPIN", function()
              while true do pcall(function() while true do end end) end
            end)
            on("SPIN_IN_C", function()
              -- where it cannot yield (in a C call), the guard raises instead
              table.sort({ 3, 2, 1 }, function(a, b) while true do end end)
            end)
            on("SPIN", function() log.info("the other handler ran") end)
            on("WAIT", function() sleep(3600) end)
            on("TIMER_SPIN", function()
              timer.after(1, function() while true do pcall(function() while true do end end) end end)
            end)
            on("QUICK", function() log.info("quick") end)
            """)

    def tearDown(self):
        self.tmp.cleanup()

    def run_file(self, body, *args, env=None):
        self.tmp.script("t_test.lua", 'handlers("busy.lua")\n' + body)
        t0 = time.monotonic()
        res = run_test(*args, "t_test.lua", cwd=self.tmp.path) if env is None else \
            h.run_luahook("test", *args, "t_test.lua", cwd=self.tmp.path, env=env)
        return res, time.monotonic() - t0

    def test_a_loop_around_pcall_times_out(self):
        res, took = self.run_file("""\
            test("spin", function()
              local r = fire({ action = "SPIN" }, { allow_failure = true })
              eq(r[1].error, "handler timed out after 0.5 s (--handler-timeout)")
              ok(r[2].ok)
              eq(logs()[1].msg, "the other handler ran")
            end)
            test("where it cannot yield", function()
              local r = fire({ action = "SPIN_IN_C" }, { allow_failure = true })
              eq(r[1].error, "handler timed out after 0.5 s (--handler-timeout)")
            end)
            test("a timer callback", function()
              fire({ action = "TIMER_SPIN" })
              clock.advance(2, { allow_failure = true })
              eq(logs("error")[1].fields.outcome, "timeout")
              eq(logs("error")[1].fields.error, "handler timed out after 0.5 s (--handler-timeout)")
            end)
            test("later handlers run normally", function()
              ok(fire({ action = "QUICK" }).ok)
              eq(#logs(), 1)
            end)
            """, "--handler-timeout", "0.5")
        self.assertEqual(res.returncode, 0, both(res))
        self.assertEqual(out(res).splitlines()[-1], "4 passed, 0 failed")
        self.assertLess(took, 10 * h.SLOW)

    def test_unexpected_timeout_fails_the_test(self):
        res, _ = self.run_file("""\
            test("spin", function()
              fire({ action = "SPIN" })
            end)
            """, env={"LUAHOOK_HANDLER_TIMEOUT": "0.3"})
        self.assertEqual(res.returncode, 1, both(res))
        lines = out(res).splitlines()
        self.assertEqual(lines[0], "FAIL t_test.lua: spin")
        self.assertEqual(lines[1], "    t_test.lua:3: handler busy.lua#1 busy.lua:1 failed: "
                                   "handler timed out after 0.3 s (--handler-timeout)")

    def test_the_virtual_budget_is_the_handler_timeout(self):
        res, took = self.run_file("""\
            test("wait", function()
              local t0 = clock.now()
              local r = fire({ action = "WAIT" }, { allow_failure = true })
              eq(r[1].error, "handler timed out after 600 s (--handler-timeout)")
              eq(clock.now() - t0, 600.0)
            end)
            """, "--handler-timeout", "600")
        self.assertEqual(res.returncode, 0, both(res))
        # ten minutes of virtual time: real ones would be far past this generous bound
        self.assertLess(took, 30 * h.SLOW, "virtual seconds take no real time")


if __name__ == "__main__":
    h.main()
