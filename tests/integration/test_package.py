"""require() of the modules in lib/ beside the scripts, wherever luahook runs from: `fire`
and `serve` from another working directory, with the folder's path absolute and relative;
lib/ never loaded as handlers; --watch reloads on a change under lib/. (Per-folder caches,
package.path per script and the error's list of places: tests/lua/package_test.lua.)"""

import json
import os
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

T = __file__


def make_hooks(tmp):
    """tmp/hooks/main.lua requiring tmp/hooks/lib/greet.lua; returns the hooks folder."""
    hooks = tmp.join("hooks")
    os.makedirs(os.path.join(hooks, "lib"))
    h.write_script(hooks, "main.lua", h.lua_source(T, "main.lua"))
    h.write_script(os.path.join(hooks, "lib"), "greet.lua", h.lua_source(T, "greet.lua"))
    return hooks


def greeted(stderr):
    for line in stderr.decode().splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("msg") == "greeted":
                return rec.get("text")
    return None


class FromAnywhere(unittest.TestCase):
    def fire(self, path, cwd):
        r = h.run_luahook("fire", "--log-format", "json", path, "-",
                          input=b'{"action": "GREET"}', cwd=cwd)
        self.assertEqual(r.returncode, 0, r)
        return r

    def test_fire_from_another_folder(self):
        with h.TempDir() as tmp, h.TempDir() as elsewhere:
            hooks = make_hooks(tmp)
            for path, cwd in ((hooks, elsewhere.path),                       # absolute
                              (os.path.relpath(hooks, elsewhere.path), elsewhere.path),
                              ("hooks", tmp.path),                           # beside it
                              ("main.lua", hooks),                           # a file
                              (os.path.join(hooks, "main.lua"), "/")):
                with self.subTest(path=path, cwd=cwd):
                    r = self.fire(path, cwd)
                    self.assertEqual(greeted(r.stderr), "hello from lib", r)
                    self.assertIn(b"1 passed, 0 failed", r.stdout, "lib/ ran no handler")

    def test_check_lists_no_handler_of_lib(self):
        with h.TempDir() as tmp, h.TempDir() as elsewhere:
            hooks = make_hooks(tmp)
            h.write_script(os.path.join(hooks, "lib"), "broken.lua", "error('loaded')\n")
            r = h.run_luahook("check", hooks, cwd=elsewhere.path)
            self.assertEqual(r.returncode, 0, r)
            self.assertIn(b"ok: 1 handler", r.stdout, r)

    def test_serve_from_another_folder(self):
        with h.TempDir() as tmp, h.TempDir() as elsewhere:
            hooks = make_hooks(tmp)
            with h.Server(hooks, "--ack", "handled", cwd=elsewhere.path) as srv:
                r = h.post_event(srv.port, {"action": "GREET"})
                self.assertEqual(r.status, 200, r)
                line = srv.wait_log(lambda l: l.get("msg") == "greeted", what="greeted")
                self.assertEqual(line.get("text"), "hello from lib")

    def test_watch_reloads_on_a_lib_change(self):
        with h.TempDir() as tmp:
            hooks = make_hooks(tmp)
            with h.Server(hooks, "--watch", "--ack", "handled") as srv:
                time.sleep(0.2 * h.SLOW)  # watches are set before 'listening'; be generous
                h.write_script(os.path.join(hooks, "lib"), "greet.lua",
                               'return { text = "changed" }\n')
                srv.wait_log(lambda l: l.get("msg") == "reloaded", what="a reload")
                h.post_event(srv.port, {"action": "GREET"})
                line = srv.wait_log(lambda l: l.get("msg") == "greeted", what="greeted")
                self.assertEqual(line.get("text"), "changed")


if __name__ == "__main__":
    unittest.main()
