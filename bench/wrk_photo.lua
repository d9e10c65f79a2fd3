-- wrk script for bench/media.py: W3 with photos. Arguments after `--`:
--
--   <photo> <token> <salt>
--
-- Each request is a multipart/form-data upload (one `file` part) of the JPEG at <photo>, in
-- which <token> (32 characters, once in its EXIF) is replaced by a tag of the request's own
-- (salt, thread, counter): the same photo, new bytes every time, so that nothing is
-- deduplicated. Headers given with -H (the API key) go with every request. At the end one
-- line `BENCH_JSON {...}` reports the totals and latency percentiles, as bench/wrk.lua does.

local next_id = 1
local before, after, head, tail, headers, salt
local counter = 0

function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
end

function init(args)
   local file = assert(io.open(args[1], "rb"))
   local photo = file:read("*a")
   file:close()
   local token = args[2]
   salt = args[3]
   local at = string.find(photo, token, 1, true)
   if at == nil then error("the token is not in " .. args[1]) end
   before = string.sub(photo, 1, at - 1)
   after = string.sub(photo, at + #token)
   local boundary = "bench" .. salt .. tid
   head = "--" .. boundary .. "\r\n"
      .. 'Content-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
      .. "Content-Type: application/octet-stream\r\n\r\n"
   tail = "\r\n--" .. boundary .. "--\r\n"
   headers = {}
   for k, v in pairs(wrk.headers) do headers[k] = v end
   headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
end

function request()
   counter = counter + 1
   local tag = string.format("%-32s", string.format("%s-%d-%d", salt, tid, counter))
   return wrk.format("POST", nil, headers, head .. before .. tag .. after .. tail)
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
