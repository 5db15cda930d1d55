-- wrk script for the check benchmark: POST /v1/check publish decisions,
-- cycling through many distinct devices so the daemon's caches see a real
-- fleet rather than one hot entry, with a share of topics the policy
-- denies. Answers are counted by status and by decision, so the reported
-- rate is of real decisions and a run that only produced errors or denies
-- is visible.
--
-- wrk -s check.lua URL -- PREFIX COUNT DENY_EVERY
--   PREFIX      device ids are PREFIX .. %05d, 0 <= i < COUNT
--   COUNT       number of devices
--   DENY_EVERY  every n-th request asks for a topic the policy denies
--               (0: never)
-- The same script drives nginx; it answers "ok" to any POST, so only the
-- status counts there.

local threads = {}
local next_tid = 1

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
   table.insert(threads, thread)
end

function init(args)
   prefix = args[1] or "bench-"
   count = tonumber(args[2] or "1")
   deny_every = tonumber(args[3] or "0")
   n = 0
   ok = 0
   non2xx = 0
   allows = 0
   denies = 0
   first_bad = nil
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   -- Threads start far apart in the id space so that concurrent
   -- connections ask about different devices.
   start = (tid - 1) * math.floor(count / 2 + 7919)
end

function request()
   n = n + 1
   local i = (start + n) % count
   local id = string.format("%s%05d", prefix, i)
   local topic
   if deny_every > 0 and n % deny_every == 0 then
      if n % (2 * deny_every) == 0 then
         -- Another device's telemetry: no statement allows it.
         topic = string.format("devices/%s%05d/telemetry/temp", prefix, (i + 1) % count)
      else
         -- $SYS: explicitly denied.
         topic = "$SYS/broker/load"
      end
   else
      topic = "devices/" .. id .. "/telemetry/temp"
   end
   local body = '{"action":"publish","client_id":"' .. id .. '","username":"' .. id ..
      '","topic":"' .. topic .. '","qos":1,"retain":false}'
   return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
   if status >= 200 and status < 300 then
      ok = ok + 1
      if body ~= nil then
         if string.find(body, '"result":"allow"', 1, true) or
            string.find(body, '"result": "allow"', 1, true) then
            allows = allows + 1
         elseif string.find(body, '"deny"', 1, true) then
            denies = denies + 1
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
