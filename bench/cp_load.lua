-- wrk script for the control-plane benchmark. MODE=steer|play|health, DATA=dir written by
-- cp_fleet.py, TOKEN=admin token (steer). BGP=1: health reports carry the site's prefixes as BGP
-- routes (as cp_fleet.py --bgp sends them) instead of static prefixes.
local mode = os.getenv("MODE")
local data = os.getenv("DATA")
local token = os.getenv("TOKEN") or ""
local bgp = os.getenv("BGP") == "1"
local clients, creds, tokens = {}, {}, {}

local function lines(name)
  local out = {}
  for line in io.lines(data .. "/" .. name) do
    local fields = {}
    for f in string.gmatch(line, "%S+") do fields[#fields + 1] = f end
    out[#out + 1] = fields
  end
  return out
end

local bodies = {}

-- The same 100 prefixes the full report carried (cp_fleet.py's prefix()), so a delta report
-- changes no route.
local function site_prefixes(site)
  local out = {}
  for j = 0, 99 do
    local n = site * 100 + j
    out[#out + 1] = string.format('"%d.%d.%d.0/24"', 11 + math.floor(n / 65536), math.floor(n / 256) % 256, n % 256)
  end
  return table.concat(out, ",")
end

-- The same routes cp_fleet.py --bgp reported (bgp_report()), so a report changes no route.
function bgp_part(site)
  local routes = {}
  for j = 0, 99 do
    local n = site * 100 + j
    routes[#routes + 1] = string.format(
      '{"prefix":"%d.%d.%d.0/24","neighbor":"100.64.0.1","as_path":[64500,%d],"origin":"igp"}',
      11 + math.floor(n / 65536), math.floor(n / 256) % 256, n % 256, 65000 + site % 1000)
  end
  return '"prefixes":[],"bgp":{"sessions":[{"neighbor":"100.64.0.1","peer_as":64500,"state":"established",' ..
    '"since":1764547200,"prefixes_received":100,"prefixes_accepted":100,"flaps":0}],"routes":[' ..
    table.concat(routes, ",") .. ']},'
end

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  clients = lines("clients.txt")
  creds = lines("credentials.txt")
  tokens = lines("tokens.txt")
  if mode == "health" then
    for i, a in ipairs(creds) do
      local site = tonumber(string.match(a[1], "^oca(%d+)-"))
      bodies[i] = '{"oca_id":"' .. a[1] .. '","site":"x","version":"bench","status":"ok",' ..
        '"serving":{"active_connections":10,"bytes_per_sec":1000000,"requests_per_sec":10,"capacity_bps":100000000000},' ..
        '"disks":[],' .. (bgp and bgp_part(site) or '"prefixes":[' .. site_prefixes(site) .. '],') ..
        '"inventory":{"kind":"delta","base_seq":1,"seq":1,"added":[],"removed":[]}}'
    end
  end
end

function request()
  if mode == "steer" then
    local c = clients[math.random(1, #clients)]
    return wrk.format("GET", "/v1/steer?client_ip=" .. c[1] .. "&content_id=" .. c[2],
      { ["Authorization"] = "Bearer " .. token })
  elseif mode == "play" then
    local c = clients[math.random(1, #clients)]
    local body = '{"title":"' .. c[3] .. '"}'
    local t = tokens[math.random(1, #tokens)][1]
    return wrk.format("POST", "/v1/play",
      { ["Content-Type"] = "application/json", ["X-Forwarded-For"] = c[1],
        ["Authorization"] = "Bearer " .. t }, body)
  else
    local i = math.random(1, #creds)
    local a = creds[i]
    return wrk.format("POST", "/v1/appliances/" .. a[1] .. "/health",
      { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. a[2] }, bodies[i])
  end
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d errors=%d\n",
    summary.requests / secs, latency:percentile(50.0), latency:percentile(99.0),
    e.connect + e.read + e.write + e.status + e.timeout))
end
