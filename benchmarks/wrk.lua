-- wrk script for the benchmark harness.
--   wrk ... -s wrk.lua URL                       GET (TorchServe's /ping)
--   wrk ... -s wrk.lua URL -- BODY_FILE CTYPE    POST the file's bytes with that Content-Type
--   wrk ... -s wrk.lua URL -- BODY_FILE CTYPE ACCEPT   ... and that Accept header (bulk answers)
--   wrk ... -s wrk.lua URL -- BODY_FILE CTYPE ACCEPT "Name: value"   ... and one more header
-- done() prints one machine-readable line (WRKJSON {...}); latencies in microseconds.

local req = nil

function init(args)
  if args[1] ~= nil then
    local f = assert(io.open(args[1], "rb"))
    wrk.body = f:read("*a")
    f:close()
    wrk.method = "POST"
    wrk.headers["Content-Type"] = args[2] or "application/json"
    if args[3] ~= nil and args[3] ~= "" then
      wrk.headers["Accept"] = args[3]
    end
    if args[4] ~= nil and args[4] ~= "" then
      local name, value = args[4]:match("^([^:]+):%s*(.*)$")
      wrk.headers[name] = value
    end
  end
  req = wrk.format()
end

function request()
  return req
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors_connect":%d,"errors_read":%d,' ..
    '"errors_write":%d,"errors_status":%d,"errors_timeout":%d,"latency_mean_us":%.1f,' ..
    '"p50_us":%d,"p90_us":%d,"p95_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(95), latency:percentile(99), latency.max))
end
