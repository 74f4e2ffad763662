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
LOGGER = FIX + "/handlers/logger.lua"
RAISES = FIX + "/handlers/raises_at_load.lua"


def marked_lines(path, *markers):
    """{MARKER: line number} of the lines marked "-- @MARKER" in `path` (relative to the
    repository), for the file:line parts of an expected output."""
    return {m: h.line_of(os.path.join(h.REPO, path), "-- @" + m) for m in markers}


FAILING_OUTPUT = """\
ok   {f}: this one passes
FAIL {f}: a nested difference
    {f}:{NESTED}: values differ at .tasks[2].data.text
      expected: "c"
      actual:   "b"
FAIL {f}: an integer is not a float
    {f}:{INT_FLOAT}: the count: values differ at .count
      expected: 3.0
      actual:   3
FAIL {f}: a plain error
    {f}:{PLAIN_ERROR}: attempt to index a nil value (local 't')
      traceback:
        {f}:{PLAIN_ERROR}
FAIL {f}: logs are shown for a failing test
    {f}:{LOGS}: on purpose: expected a truthy value
      actual:   false
    logs:
      info annotation seen id=77 task=101
      warn no model configured
FAIL {f}: an allowed handler error fails only through an assertion
    {f}:{ALLOWED}: the string does not match the pattern
      pattern:  "^nothing$"
      actual:   "{logger}:{BROKEN}: cannot handle this"
FAIL {f}: an unexpected handler error fails the test
    {f}:{UNEXPECTED_HANDLER}: handler logger.lua#2 {logger}:{BROKEN} failed: {logger}:{BROKEN}: cannot handle that
      (fire(..., {{ allow_failure = true }}) expects failures)
FAIL {f}: an unexpected timer error fails the test
    {f}:{UNEXPECTED_TIMER}: timer {logger}:{TIMER_BROKEN} failed: {logger}:{TIMER_BROKEN}: the timer cannot cope
      (clock.advance(..., {{ allow_failure = true }}) expects failures)
    logs:
      error timer failed error="{logger}:{TIMER_BROKEN}: the timer cannot cope" line={TIMER_BROKEN} outcome=error script={logger}
ok   {f}: also passes
2 passed, 7 failed
""".format(f=FAILING, logger=LOGGER,
           **marked_lines(FAILING, "NESTED", "INT_FLOAT", "PLAIN_ERROR", "LOGS", "ALLOWED",
                          "UNEXPECTED_HANDLER", "UNEXPECTED_TIMER"),
           **marked_lines(LOGGER, "BROKEN", "TIMER_BROKEN"))

LOAD_SYNTAX_OUTPUT = """\
FAIL {f}: (load)
    {f}:{SYNTAX}: unexpected symbol near '='
0 passed, 1 failed
""".format(f=LOAD_SYNTAX, **marked_lines(LOAD_SYNTAX, "SYNTAX"))

LOAD_HANDLERS_OUTPUT = """\
FAIL {f}: (load)
    {raises}:{RAISES}: refusing to load
      traceback:
        {f}:{HANDLERS}
0 passed, 1 failed
""".format(f=LOAD_HANDLERS, raises=RAISES, **marked_lines(RAISES, "RAISES"),
           **marked_lines(LOAD_HANDLERS, "HANDLERS"))


def run_test(*paths, cwd=h.REPO, env=None):
    return h.run_luahook("test", *paths, cwd=cwd, env=env)


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
        self.assertIn("    %s:%d: values differ at .tasks[2].data.text"
                      % (path, h.line_of(path, "-- @NESTED")), lines)
        logger = os.path.join(h.REPO, LOGGER)
        # Lua shortens a chunk name past LUA_IDSIZE to "..." and its tail, so a checkout
        # at a longer path shows the logger's path cut: accept the whole or its tail.
        where = "%s:%d: cannot handle this\"" % (logger, h.line_of(logger, "-- @BROKEN"))
        actual = [l for l in lines if l.startswith("      actual:   \"") and "cannot handle this" in l]
        self.assertEqual(len(actual), 1, lines)
        got = actual[0][len("      actual:   \""):]
        if got.startswith("..."):
            self.assertTrue(where.endswith(got[3:]), (got, where))
        else:
            self.assertEqual(got, where)


class Generated(unittest.TestCase):
    """Small test files (tests/fixtures/integration/test_testing/) copied into a fresh folder
    and run there, for what the fixtures of tests/fixtures/testing do not show."""

    def setUp(self):
        self.tmp = h.TempDir()

    def tearDown(self):
        self.tmp.cleanup()

    def copy(self, *names):
        """Copies fixtures into the folder under their own names; returns the last path."""
        return [self.tmp.fixture(__file__, n) for n in names][-1]

    def test_all_passing_exits_0(self):
        self.copy("one.lua", "one_test.lua")
        res = run_test(cwd=self.tmp.path)
        self.assertEqual(res.returncode, 0, both(res))
        self.assertEqual(out(res), "ok   one_test.lua: first\n1 passed, 0 failed\n")

    def test_error_at_top_level_of_the_test_file(self):
        top = h.line_of(self.copy("top_test.lua"), "-- @TOP")
        res = run_test("top_test.lua", cwd=self.tmp.path)
        self.assertEqual(res.returncode, 1, both(res))
        self.assertEqual(out(res), "FAIL top_test.lua: (load)\n"
                                   "    top_test.lua:%d: top level says no\n"
                                   "      traceback:\n"
                                   "        top_test.lua:%d\n"
                                   "0 passed, 1 failed\n" % (top, top))

    def test_long_values_are_truncated(self):
        line = h.line_of(self.copy("long_test.lua"), "-- @LONG")
        res = run_test("long_test.lua", cwd=self.tmp.path)
        self.assertEqual(res.returncode, 1, both(res))
        lines = out(res).splitlines()
        self.assertEqual(lines[1], "    long_test.lua:%d: values differ at .s" % line)
        self.assertEqual(lines[2], '      expected: "y"')
        self.assertTrue(lines[3].startswith('      actual:   "xxxx'), lines[3])
        self.assertTrue(lines[3].endswith("... (1002 bytes)"), lines[3])
        self.assertLess(len(lines[3]), 260)

    def test_tables_render_compactly_with_sorted_keys(self):
        line = h.line_of(self.copy("tbl_test.lua"), "-- @TABLES")
        res = run_test("tbl_test.lua", cwd=self.tmp.path)
        lines = out(res).splitlines()
        self.assertEqual(lines[1], "    tbl_test.lua:%d: values differ" % line)
        self.assertEqual(lines[2], "      expected: 7")
        self.assertEqual(lines[3], '      actual:   {a = json.null, b = {1, 2.5, "x"}, ["k y"] = true}')

    def test_tests_inside_a_recipe_folder(self):
        # a test file finds handlers and events relative to itself, however deep it sits
        os.makedirs(self.tmp.join("recipes", "slack", "tests", "deep"))
        notify = self.tmp.fixture(__file__, "notify.lua", name="recipes/slack/notify.lua")
        self.tmp.fixture(__file__, "notify_test.lua",
                         name="recipes/slack/tests/deep/notify_test.lua")
        self.tmp.script("recipes/slack/tests/deep/event.json", '{"action": "A", "n": 3}\n')
        # the handler's label: notify.lua as the test file names it, and its line
        label = "recipes/slack/tests/deep/../../notify.lua:%d" % h.line_of(notify, "-- @NOTIFY")
        res = run_test(cwd=self.tmp.path, env={"NOTIFY_HANDLER": label})
        self.assertEqual(res.returncode, 0, both(res))
        self.assertEqual(out(res), "ok   recipes/slack/tests/deep/notify_test.lua: found relative"
                                   " to the test file\n1 passed, 0 failed\n")

    def test_the_clock_never_goes_back_in_a_file(self):
        # a cooldown computed in one test still holds in the next
        self.copy("train.lua", "train_test.lua")
        res = run_test(cwd=self.tmp.path)
        self.assertEqual(res.returncode, 0, both(res))
        self.assertEqual(out(res).splitlines()[-1], "3 passed, 0 failed")

    def test_file_without_tests_fails(self):
        self.tmp.script("h.lua", "on('A', function() end)\n")
        self.copy("empty_test.lua")
        self.tmp.script("fine_test.lua", 'test("fine", function() end)\n')
        res = run_test(cwd=self.tmp.path)
        self.assertEqual(res.returncode, 1, both(res))
        self.assertEqual(out(res), "FAIL empty_test.lua: (no tests)\n"
                                   "ok   fine_test.lua: fine\n"
                                   "1 passed, 1 failed\n")


class HandlerTimeout(unittest.TestCase):
    """The --handler-timeout of `luahook test`: the virtual budget of a waiting handler, and
    the real CPU budget of a computing one, which no pcall can catch. Each test runs one
    *_test.lua fixture beside busy.lua."""

    def setUp(self):
        self.tmp = h.TempDir()
        self.busy = self.tmp.fixture(__file__, "busy.lua")

    def tearDown(self):
        self.tmp.cleanup()

    def run_file(self, name, *args, env=None):
        self.tmp.fixture(__file__, name)
        t0 = time.monotonic()
        res = run_test(*args, name, cwd=self.tmp.path, env=env)
        return res, time.monotonic() - t0

    def test_a_loop_around_pcall_times_out(self):
        res, took = self.run_file("spin_test.lua", "--handler-timeout", "0.5")
        self.assertEqual(res.returncode, 0, both(res))
        self.assertEqual(out(res).splitlines()[-1], "4 passed, 0 failed")
        self.assertLess(took, 10 * h.SLOW)

    def test_unexpected_timeout_fails_the_test(self):
        res, _ = self.run_file("unexpected_test.lua", env={"LUAHOOK_HANDLER_TIMEOUT": "0.3"})
        self.assertEqual(res.returncode, 1, both(res))
        lines = out(res).splitlines()
        self.assertEqual(lines[0], "FAIL unexpected_test.lua: spin")
        self.assertEqual(lines[1], "    unexpected_test.lua:%d: handler busy.lua#1 busy.lua:%d failed: "
                                   "handler timed out after 0.3 s (--handler-timeout)"
                         % (h.line_of(self.tmp.join("unexpected_test.lua"), "-- @FIRE"),
                            h.line_of(self.busy, "-- @SPIN")))

    def test_the_virtual_budget_is_the_handler_timeout(self):
        res, took = self.run_file("wait_test.lua", "--handler-timeout", "600")
        self.assertEqual(res.returncode, 0, both(res))
        # ten minutes of virtual time: real ones would be far past this generous bound
        self.assertLess(took, 30 * h.SLOW, "virtual seconds take no real time")


if __name__ == "__main__":
    h.main()
