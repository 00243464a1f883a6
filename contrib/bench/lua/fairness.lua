-- wrk script: counts responses per worker (X-Hotswap-Worker header, set by
-- the example worker) in each wrk thread, and aggregates the per-thread
-- tables in done(). The response() hook makes wrk parse every response in
-- Lua, so this runs apart from the throughput runs.
local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

counts = {}

response = function(status, headers, body)
  local w = headers["X-Hotswap-Worker"] or "none"
  counts[w] = (counts[w] or 0) + 1
end

done = function(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for w, n in pairs(c) do total[w] = (total[w] or 0) + n end
  end
  local parts = {}
  for w, n in pairs(total) do
    table.insert(parts, string.format('"%s":%d', w, n))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"per_worker":{%s},' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, table.concat(parts, ","),
    e.connect, e.read, e.write, e.status, e.timeout))
end
