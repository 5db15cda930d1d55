-- wrk script for the enrollment benchmark: posts certificate requests
-- from a pool of pre-generated CSRs and counts answers by status, so that
-- only real issuances (200/201) are reported as throughput.
--
-- wrk -s post_pool.lua URL -- MODE POOL_FILE TOKEN RUN_TAG
--   MODE      "authd" (POST /v1/enroll {"csr","device_id"}) or
--             "cfssl" (POST /api/v1/cfssl/sign {"certificate_request"})
--   POOL_FILE one JSON-escaped PEM CSR per line
--   TOKEN     bearer token ("-" for none)
--   RUN_TAG   makes device ids distinct between runs

local threads = {}
local next_tid = 1

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
   table.insert(threads, thread)
end

function init(args)
   mode = args[1]
   tag = args[4] or "r"
   pool = {}
   for line in io.lines(args[2]) do
      if #line > 0 then pool[#pool + 1] = line end
   end
   if #pool == 0 then error("empty CSR pool " .. args[2]) end
   n = 0
   ok = 0
   non2xx = 0
   first_bad = nil
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   if args[3] ~= nil and args[3] ~= "-" then
      wrk.headers["Authorization"] = "Bearer " .. args[3]
   end
end

function request()
   n = n + 1
   -- Threads start at different points of the pool so that concurrent
   -- requests carry different CSRs.
   local csr = pool[((n - 1) + tid * 997) % #pool + 1]
   local body
   if mode == "authd" then
      body = '{"csr":"' .. csr .. '","device_id":"B' .. tag .. '-' .. tid .. '-' .. n .. '"}'
   else
      body = '{"certificate_request":"' .. csr .. '"}'
   end
   return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
   if status == 200 or status == 201 then
      ok = ok + 1
   else
      non2xx = non2xx + 1
      if first_bad == nil then
         first_bad = status .. " " .. string.sub(body or "", 1, 300)
      end
   end
end

function done(summary, latency, requests)
   local ok_total, bad_total = 0, 0
   local bad_example = ""
   for _, t in ipairs(threads) do
      ok_total = ok_total + t:get("ok")
      bad_total = bad_total + t:get("non2xx")
      local fb = t:get("first_bad")
      if fb ~= nil then bad_example = fb end
   end
   local e = summary.errors
   io.write(string.format(
      'WRKRESULT {"ok":%d,"non2xx":%d,"requests":%d,"duration_us":%d,' ..
      '"err_connect":%d,"err_read":%d,"err_write":%d,"err_timeout":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
      ok_total, bad_total, summary.requests, summary.duration,
      e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max))
   if bad_example ~= "" then
      io.write("WRKBAD " .. string.gsub(bad_example, "\n", " ") .. "\n")
   end
end
