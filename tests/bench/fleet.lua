-- wrk script for the fleet benchmark: POST /v1/check publish decisions,
-- each for a device picked at random among the first COUNT of the fleet,
-- so that the spread of devices (1,000 hot ones or the whole fleet) is the
-- only thing that differs between two runs. Every request asks for the
-- device's own telemetry topic, which the fleet policy allows; answers are
-- counted by status and decision, so a run of errors or denies shows.
--
-- wrk -s fleet.lua URL -- PREFIX COUNT SEED
--   PREFIX  device ids are PREFIX .. %07d, 0 <= i < COUNT
--   COUNT   how many devices the requests are spread over
--   SEED    seeds each thread's generator (with its thread number), so a
--           run is repeatable

local threads = {}
local next_tid = 1

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
   table.insert(threads, thread)
end

function init(args)
   prefix = args[1] or "fl-"
   count = tonumber(args[2] or "1")
   math.randomseed(tonumber(args[3] or "1") * 1000 + tid)
   ok = 0
   non2xx = 0
   allows = 0
   denies = 0
   first_bad = nil
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   local id = string.format("%s%07d", prefix, math.random(0, count - 1))
   local body = '{"action":"publish","client_id":"' .. id .. '","username":"' .. id ..
      '","topic":"devices/' .. id .. '/telemetry/temp","qos":1,"retain":false}'
   return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
   if status >= 200 and status < 300 then
      ok = ok + 1
      if body ~= nil then
         if string.find(body, '"result":"allow"', 1, true) or
            string.find(body, '"result": "allow"', 1, true) then
            allows = allows + 1
         else
            denies = denies + 1
            if first_bad == nil then
               first_bad = status .. " " .. string.sub(body, 1, 300)
            end
         end
      end
   else
      non2xx = non2xx + 1
      if first_bad == nil then
         first_bad = status .. " " .. string.sub(body or "", 1, 300)
      end
   end
end

function done(summary, latency, requests)
   local ok_total, bad_total, allow_total, deny_total = 0, 0, 0, 0
   local bad_example = ""
   for _, t in ipairs(threads) do
      ok_total = ok_total + t:get("ok")
      bad_total = bad_total + t:get("non2xx")
      allow_total = allow_total + t:get("allows")
      deny_total = deny_total + t:get("denies")
      local fb = t:get("first_bad")
      if fb ~= nil then bad_example = fb end
   end
   local e = summary.errors
   io.write(string.format(
      'WRKRESULT {"ok":%d,"non2xx":%d,"allows":%d,"denies":%d,"requests":%d,' ..
      '"duration_us":%d,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
      '"err_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
      ok_total, bad_total, allow_total, deny_total, summary.requests,
      summary.duration, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max))
   if bad_example ~= "" then
      io.write("WRKBAD " .. string.gsub(bad_example, "\n", " ") .. "\n")
   end
end
