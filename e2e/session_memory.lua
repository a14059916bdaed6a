-- wrk script of e2e/test_session_memory.py: every request is a POST initialize, so every answer opens
-- a new session. Arguments (after `--`): the path prefix of the id files, and how many sessions each
-- thread opens before it stops. Each thread writes the Mcp-Session-Id of every 200 answer to
-- `<prefix>.<thread>`, one a line (the test counts them and checks they are distinct), and creates
-- `<prefix>.<thread>.done` when it has its share: wrk's main thread sleeps for the whole -d duration
-- whatever its threads do, so the test interrupts it (SIGINT) once every thread is done. done() prints
-- one line `SESSION_MEMORY_JSON {...}` with the totals of all threads.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  quota = tonumber(args[2])
  path = args[1] .. "." .. tid
  ids = assert(io.open(path, "w"))
  sent, ok, bad, first_bad, finished = 0, 0, 0, "", false
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = "application/json, text/event-stream"
end

function request()
  sent = sent + 1
  local body = string.format(
    '{"jsonrpc":"2.0","id":%d,"method":"initialize","params":{"protocolVersion":"2025-11-25",' ..
    '"capabilities":{},"clientInfo":{"name":"session-memory-%d","version":"1.0.%d"}}}', sent, tid, sent)
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if finished then return end -- answers already read when the thread stopped
  local sid = headers["mcp-session-id"] or headers["Mcp-Session-Id"]
  if status == 200 and sid and sid ~= "" then
    ok = ok + 1
    ids:write(sid, "\n")
    if ok >= quota then
      finished = true
      ids:close()
      assert(io.open(path .. ".done", "w")):close()
      wrk.thread:stop()
    end
  else
    bad = bad + 1
    if first_bad == "" then
      -- Control characters, quotes and backslashes blanked, so that done() can print it as a JSON string.
      first_bad = string.format("HTTP %d %s", status, (string.sub(body or "", 1, 200):gsub('[%c"\\]', " ")))
    end
  end
end

function done(summary, latency, requests)
  local ok_total, bad_total, sent_total, first = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    ok_total = ok_total + t:get("ok")
    bad_total = bad_total + t:get("bad")
    sent_total = sent_total + t:get("sent")
    if first == "" then first = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    'SESSION_MEMORY_JSON {"ok":%d,"bad":%d,"sent":%d,"completed":%.0f,"duration_us":%.0f,' ..
    '"err_connect":%.0f,"err_read":%.0f,"err_write":%.0f,"err_timeout":%.0f,"p50_us":%.0f,"p99_us":%.0f,' ..
    '"first_bad":"%s"}\n',
    ok_total, bad_total, sent_total, summary.requests, summary.duration, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(99), first))
end
