--[[
luahook/testing.lua - the Lua half of `luahook test`.

src/testing.c makes, per test file, the real VM of luahook (lh_vm_new: the standard
library, on(), every script in its own environment) with two parts swapped: a virtual
clock and a transport that hands outbound HTTP to the test's mocks. It runs this chunk with
the host table (the bridge: load, seal, fire, step, advance, reset, ...) and calls
run(test_file_path) on what it returns: the file's tests run, one line per test goes to
stdout, and `passed, failed` comes back.

The parts, one job each (lua/luahook/testing/, compiled in):
  runner.lua   the file's life: handlers, test, fire, fire_all, clock, logs, the report
  assert.lua   eq, neq, ok, nok, match, fails, near and the failure they raise
  mocks.lua    mock.http, mock.calls, mock.env: what the handlers' world answers
  samples.lua  sample(action [, overrides])
  render.lua   values and log records as a failure shows them
]]

local host = ...
local runner = require("luahook.testing.runner")
runner.init(host)
return runner
