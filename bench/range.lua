-- wrk script: random aligned byte ranges over the benchmark corpus.
-- Environment: RANGE_BYTES (range size), FILE_BYTES (size of each file), FILES (space-separated ids),
-- CLOSE=1 for a new connection per request.
local range = tonumber(os.getenv("RANGE_BYTES"))
local fsize = tonumber(os.getenv("FILE_BYTES"))
local files = {}
for id in string.gmatch(os.getenv("FILES"), "%S+") do files[#files + 1] = "/c/" .. id end
local slots = math.floor(fsize / range)
-- CLOSE=1: one request per connection (every request pays a TLS handshake).
local close = os.getenv("CLOSE") == "1"

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
end

function request()
  local first = math.random(0, slots - 1) * range
  local path = files[math.random(1, #files)]
  local headers = { ["Range"] = "bytes=" .. first .. "-" .. (first + range - 1) }
  if close then headers["Connection"] = "close" end
  return wrk.format("GET", path, headers)
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("RESULT rps=%.1f bps=%.1f p50_us=%d p99_us=%d errors=%d\n",
    summary.requests / secs, summary.bytes / secs,
    latency:percentile(50.0), latency:percentile(99.0),
    e.connect + e.read + e.write + e.status + e.timeout))
end
