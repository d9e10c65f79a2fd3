-- wrk script for the comparison (bench/run.py). The first argument after `--` is the mode:
--
--   get                          the URL as given (W2); wrk sends one static request
--   range <size> <length>        GET with `Range: bytes=o-(o+length-1)`, o random in
--                                [0, size - length] (W5)
--   upload <method> <path> <multipart 0|1> <size> <salt> [content-type]
--                                one upload per request, each with bytes of its own (W3):
--                                the first 48 bytes name the run, thread and request, the
--                                rest is random per thread; `{n}` in path is replaced by the
--                                same unique name (nginx's PUT)
--
-- Headers given with -H (the API key) are kept on every request. At the end one line
-- `BENCH_JSON {...}` reports the totals and latency percentiles for bench/run.py.

local mode
local threads = {}
local next_id = 1

function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

local function copy_headers(extra)
   local h = {}
   for k, v in pairs(wrk.headers) do h[k] = v end
   for k, v in pairs(extra) do h[k] = v end
   return h
end

local function random_bytes(n)
   local t = {}
   for i = 1, n do t[i] = string.char(math.random(0, 255)) end
   return table.concat(t)
end

local range_size, range_length
local function range_request()
   local offset = math.random(0, range_size - range_length)
   local h = copy_headers({})
   h["Range"] = string.format("bytes=%d-%d", offset, offset + range_length - 1)
   return wrk.format("GET", nil, h, nil)
end

local up_method, up_path, up_multipart, up_size, up_salt, up_type
local up_base, up_head, up_tail, up_headers
local counter = 0
local function upload_request()
   counter = counter + 1
   local tag = string.format("%-47s|", string.format("%s-%d-%d", up_salt, tid, counter))
   local payload = tag .. up_base
   local path = string.gsub(up_path, "{n}", string.format("%s-%d-%d", up_salt, tid, counter))
   local body = payload
   if up_multipart then body = up_head .. payload .. up_tail end
   return wrk.format(up_method, path, up_headers, body)
end

function init(args)
   mode = args[1]
   math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
   if mode == "range" then
      range_size = tonumber(args[2])
      range_length = tonumber(args[3])
      request = range_request
   elseif mode == "upload" then
      up_method, up_path = args[2], args[3]
      up_multipart = args[4] == "1"
      up_size = tonumber(args[5])
      up_salt = args[6]
      up_type = args[7]
      up_base = random_bytes(up_size - 48)
      local extra = {}
      if up_multipart then
         local boundary = "bench" .. up_salt .. tid
         extra["Content-Type"] = "multipart/form-data; boundary=" .. boundary
         up_head = "--" .. boundary .. "\r\n"
            .. 'Content-Disposition: form-data; name="file"; filename="w3.bin"\r\n'
            .. "Content-Type: application/octet-stream\r\n\r\n"
         up_tail = "\r\n--" .. boundary .. "--\r\n"
      elseif up_type then
         extra["Content-Type"] = up_type
      end
      up_headers = copy_headers(extra)
      request = upload_request
   elseif mode ~= "get" then
      error("unknown mode " .. tostring(mode))
   end
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
