-- wrk script for bench/kv_bench.py: one fixed request, JSON summary at the end.
--
-- Usage: wrk -s bench/wrk/kv.lua URL -- METHOD [CONTENT_TYPE [BODY]]
--   e.g. wrk -s bench/wrk/kv.lua http://127.0.0.1:8000/v1/kv/bench -- PUT application/json '{"a":1}'
--
-- The request is set up in init() and pre-built once by wrk (no request() hook),
-- so the script adds no per-request Lua cost. done() prints one line starting with
-- "WRK_JSON " followed by a JSON object: requests, duration_s, requests_per_s,
-- latency percentiles in milliseconds, and wrk's error counters ("status" counts
-- responses with a status of 400 or above).

function init(args)
   local method = args[1] or "GET"
   local content_type = args[2] or ""
   local body = args[3]
   wrk.method = method
   if content_type ~= "" then
      wrk.headers["Content-Type"] = content_type
   end
   if body ~= nil then
      wrk.body = body
   end
end

local function ms(us)
   return string.format("%.4f", us / 1000.0)
end

function done(summary, latency, requests)
   local e = summary.errors
   local secs = summary.duration / 1e6
   local parts = {
      '"requests":' .. summary.requests,
      '"duration_s":' .. string.format("%.4f", secs),
      '"requests_per_s":' .. string.format("%.2f", summary.requests / secs),
      '"bytes":' .. summary.bytes,
      '"latency_ms":{'
         .. '"min":' .. ms(latency.min)
         .. ',"mean":' .. ms(latency.mean)
         .. ',"stdev":' .. ms(latency.stdev)
         .. ',"max":' .. ms(latency.max)
         .. ',"p50":' .. ms(latency:percentile(50))
         .. ',"p75":' .. ms(latency:percentile(75))
         .. ',"p90":' .. ms(latency:percentile(90))
         .. ',"p99":' .. ms(latency:percentile(99))
         .. ',"p999":' .. ms(latency:percentile(99.9))
         .. '}',
      '"errors":{'
         .. '"connect":' .. e.connect
         .. ',"read":' .. e.read
         .. ',"write":' .. e.write
         .. ',"status":' .. e.status
         .. ',"timeout":' .. e.timeout
         .. '}',
   }
   io.write("WRK_JSON {" .. table.concat(parts, ",") .. "}\n")
end
