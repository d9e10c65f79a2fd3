-- wrk script for bench/scale.py: each request GETs a path picked at random from a file of
-- paths, one a line (`-- <file>`), so that downloads spread over many files instead of one
-- hot row. Headers given with -H (the API key) go with every request. At the end one line
-- `BENCH_JSON {...}` reports the totals and latency percentiles, as bench/wrk.lua does.

local paths = {}
local count = 0
local next_id = 1

function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
end

function init(args)
   for line in io.lines(args[1]) do
      if #line > 0 then
         count = count + 1
         paths[count] = line
      end
   end
   if count == 0 then error("no paths in " .. tostring(args[1])) end
   math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
end

function request()
   return wrk.format("GET", paths[math.random(1, count)])
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
         .. '"latency_us": {"mean": %.1f, "stdev": %.1f, "min": %d, "max": %d, '
         .. '"p50": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.stdev, latency.min, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9)))
end
