-- wrk script for scripts/bench: POST one JSON file, byte for byte, on every request
-- (BENCH_BODY names it). Only wrk.* fields are set, no request() function, so wrk
-- builds the request once; done() prints one line for scripts/bench to read.
local path = assert(os.getenv("BENCH_BODY"), "BENCH_BODY is not set")
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a") -- wrk runs LuaJIT: Lua 5.1's format
f:close()
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency)
    local e = summary.errors
    io.write(string.format("WRK requests=%d socket_errors=%d status_errors=%d p99_us=%d\n",
        summary.requests, e.connect + e.read + e.write + e.timeout, e.status,
        latency:percentile(99)))
end
