-- wrk script for bench/portal.sh: GETs of one portal page kind with the session cookie, each
-- for a random site or appliance of the cp_fleet.py fleet (SITES sites, 5 appliances each).
--   PAGE=site|appliance|api_site COOKIE="name=value" SITES=2000 wrk ... -s bench/portal_load.lua URL
local page = os.getenv("PAGE") or "site"
local cookie = os.getenv("COOKIE")
local sites = tonumber(os.getenv("SITES") or "2000")
local errors = 0

local function site_id(s)
  if s % 5 == 0 then return "ixp" .. s end
  return "isp" .. s
end

request = function()
  local s = math.random(0, sites - 1)
  local path
  if page == "site" then
    path = "/sites/" .. site_id(s)
  elseif page == "appliance" then
    path = "/appliances/oca" .. s .. "-" .. math.random(0, 4)
  else
    path = "/v1/portal/sites/" .. site_id(s)
  end
  return wrk.format("GET", path, { ["Cookie"] = cookie })
end

response = function(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.0f p50_us=%d p99_us=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    errors + summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))
end
