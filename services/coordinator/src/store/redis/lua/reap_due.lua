-- Reaper, the deployment step (steps.rs): KEYS 1 the pod index. ARGV 1 most pods, 2 lock ms.
-- Pods due for a look are locked for the caller: their score becomes now + lock + 0.5, a
-- value no heartbeat writes (those are whole milliseconds), so reap_done.lua can tell whether
-- a heartbeat touched the pod since. Returns (pod, lock score) pairs.
local limit, lock_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local out = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. fmt(now), 'LIMIT', 0, limit)
for _, pod in ipairs(due) do
  local score = fmt(now + lock_ms) .. '.5'
  redis.call('ZADD', KEYS[1], score, pod)
  append(out, { pod, score })
end
return out
