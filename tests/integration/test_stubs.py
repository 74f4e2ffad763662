"""`luahook stubs [DIR]`: the ---@meta files for lua-language-server are written, parse as
Lua (the binary's own load, and luac5.4 -p when installed), and document every function the
binary registers and every key of the sample events (tests/fixtures/integration/test_stubs/
api_test.lua, run by `luahook test`, walks what the running VM holds: a data-driven check,
so a module added without its stubs fails it)."""

import os
import shutil
import subprocess
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

T = __file__
SAMPLES = os.path.join(h.REPO, "lua", "samples")


def actions():
    return sorted(n[:-5] for n in os.listdir(SAMPLES) if n.endswith(".json"))


def write_stubs(tmp, *args):
    r = h.run_luahook("stubs", *args, cwd=tmp.path)
    return r, [l[len("wrote "):] for l in r.stdout.decode().splitlines() if l.startswith("wrote ")]


def run_api_test(files):
    return h.run_luahook("test", h.lua_path(T, "api_test.lua"),
                         env={"STUBS_FILES": ";".join(files),
                              "SAMPLE_ACTIONS": ";".join(actions())})


class Stubs(unittest.TestCase):
    def test_written_to_the_default_folder(self):
        with h.TempDir() as tmp:
            r, files = write_stubs(tmp)
            self.assertEqual(r.returncode, 0, r)
            self.assertEqual(sorted(os.path.basename(f) for f in files),
                             ["events.lua", "luahook.lua", "testing.lua"], r)
            for f in files:
                self.assertTrue(f.startswith(".luahook/stubs/"), f)
                self.assertTrue(os.path.isfile(tmp.join(f)), f)

    def test_cover_the_api_and_the_events(self):
        with h.TempDir() as tmp:
            r, files = write_stubs(tmp, "out/stubs")
            self.assertEqual(r.returncode, 0, r)
            files = [tmp.join(f) for f in files]
            r = run_api_test(files)
            out = r.stdout.decode()
            self.assertEqual(r.returncode, 0, out + r.stderr.decode())
            self.assertIn("5 passed, 0 failed", out)

    def test_luac_parses_them(self):
        luac = shutil.which("luac5.4") or shutil.which("luac")
        if luac is None:
            self.skipTest("no luac5.4 (Debian's lua5.4); api_test.lua parses them with load")
        with h.TempDir() as tmp:
            _, files = write_stubs(tmp, "s")
            # one file per run: Debian 12's luac5.4 (5.4.4) double-frees on `-p a.lua b.lua`
            for f in files:
                r = subprocess.run([luac, "-p", tmp.join(f)], capture_output=True)
                self.assertEqual(r.returncode, 0, r)

    def test_a_function_missing_from_the_stubs_fails(self):
        with h.TempDir() as tmp:
            _, files = write_stubs(tmp, "s")
            files = [tmp.join(f) for f in files]
            api = [f for f in files if f.endswith("/luahook.lua")][0]
            with open(api, encoding="utf-8") as f:
                text = f.read()
            cut = text.replace("function timer.every(", "local function every(")
            cut = cut.replace("function Timer:active(", "local function active(")
            self.assertNotEqual(cut, text)
            with open(api, "w", encoding="utf-8") as f:
                f.write(cut)
            events = [f for f in files if f.endswith("/events.lua")][0]
            with open(events, encoding="utf-8") as f:
                text = f.read()
            cut = text.replace("---@field was_cancelled boolean true: skipped\n", "")
            self.assertNotEqual(cut, text)
            with open(events, "w", encoding="utf-8") as f:
                f.write(cut)
            r = run_api_test(files)
            out = r.stdout.decode()
            self.assertEqual(r.returncode, 1, out)
            self.assertIn("timer.every", out)
            self.assertIn("luahook.timer:active", out)
            self.assertIn("ANNOTATION_CREATED.annotation.was_cancelled (no field of "
                          "luahook.Annotation)", out)
            self.assertIn("2 passed, 3 failed", out)

    def test_usage(self):
        with h.TempDir() as tmp:
            r = h.run_luahook("stubs", "a", "b", cwd=tmp.path)
            self.assertEqual(r.returncode, 2, r)
            with open(tmp.join("file"), "w") as f:
                f.write("x")
            r = h.run_luahook("stubs", "file", cwd=tmp.path)
            self.assertEqual(r.returncode, 2, r)
            self.assertIn(b"file", r.stderr)


if __name__ == "__main__":
    unittest.main()
