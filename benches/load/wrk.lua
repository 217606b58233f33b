-- Cycles through pre-signed unique deliveries ("<signature>\t<body>" lines).
-- Each wrk thread keeps every Nth line (threads never send the same one) and
-- formats its requests once up front, so wrk spends its CPU on sending, not
-- on Lua: it shares the machine with the receiver and Postgres.
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  reqs = {}
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == id then
      local tab = line:find("\t", 1, true)
      reqs[#reqs + 1] = wrk.format("POST", nil,
        { ["Content-Type"] = "application/json", ["X-ImgGo-Signature"] = line:sub(1, tab - 1) },
        line:sub(tab + 1))
    end
    i = i + 1
  end
  n = 0
end

function request()
  n = n + 1
  return reqs[(n - 1) % #reqs + 1]
end

function done(summary, latency, requests)
  local sent = 0
  for _, t in ipairs(threads) do
    sent = sent + t:get("n")
  end
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read
            + summary.errors.write + summary.errors.timeout
  io.write(string.format("WRK completed=%d non2xx_or_errors=%d seconds=%.2f rate=%.0f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f\n",
    summary.requests, bad, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
