-- One chunk of a sweep (common.lua, claim_pod): ARGV 2 sweep id, 3 chunk size, 4 retention ms,
-- 5 lock ms. KEYS[1] = the sweep's record (cluster routing).
-- Pops up to `chunk` sessions, dropping each only while it still carries the swept (pod,
-- registration); once the sessions are gone, up to `chunk` routes, each removed from its route
-- set unless the pod's current registration holds it again. Then renews the sweep's lock, or
-- deletes the sweep when both sets are empty.
-- Returns {'more' | 'done', pod ('' if the sweep was already finished), sessions dropped,
-- routes removed}.
local id, chunk = ARGV[2], tonumber(ARGV[3])
local retention_ms, lock_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local sw = k_sweep(id)
local meta = redis.call('HMGET', sw, 'pod', 'gen')
if not meta[1] then
  redis.call('ZREM', K_SWEEPS, id)
  return { 'done', '', '0', '0' }
end
local pod, gen = meta[1], meta[2] or ''
local ns, nr = 0, 0
local skeys = redis.call('SPOP', sw .. ':s', chunk)
for _, skey in ipairs(skeys) do
  local cur = redis.call('HMGET', k_session(skey), 'pod', 'gen', 'chat')
  -- A record without 'gen' predates registration numbers: its pod alone decides.
  if cur[1] == pod and (cur[2] == gen or not cur[2]) then
    drop_session(skey, pod, cur[3], retention_ms)
    ns = ns + 1
  end
end
if #skeys < chunk then
  local routes = redis.call('SPOP', sw .. ':r', chunk)
  for _, route in ipairs(routes) do
    if redis.call('SISMEMBER', k_pod_routes(pod), route) == 0 then
      redis.call('SREM', k_route(route), pod)
    end
    nr = nr + 1
  end
  if #routes < chunk then
    redis.call('DEL', sw)
    redis.call('ZREM', K_SWEEPS, id)
    return { 'done', pod, fmt(ns), fmt(nr) }
  end
end
redis.call('ZADD', K_SWEEPS, 'XX', now_ms() + lock_ms, id)
return { 'more', pod, fmt(ns), fmt(nr) }
