-- Reaper: ARGV 2 most pods per call, 3 sweep lock ms. KEYS[1] = the pod index.
-- Claims pods whose lease lapsed (claim_pod: O(1) each) and sweeps whose lock lapsed (their
-- sweeper died midway), locking each for the caller, who then runs them. Atomic, so replicas
-- reaping at once never claim a pod twice nor one that heartbeated meanwhile.
-- Returns (pod, sweep id) pairs; pod is '' for a resumed sweep (the sweep answers it).
local limit, lock_ms = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local out = {}
local due = redis.call('ZRANGEBYSCORE', K_PODS, '-inf', '(' .. fmt(now), 'LIMIT', 0, limit)
for _, pod in ipairs(due) do
  local exp = tonumber(redis.call('HGET', k_pod(pod), 'exp'))
  if exp ~= nil and exp >= now then
    redis.call('ZADD', K_PODS, exp, pod)
  else
    append(out, { pod, claim_pod(pod, now, lock_ms) })
  end
end
local orphans = redis.call('ZRANGEBYSCORE', K_SWEEPS, '-inf', '(' .. fmt(now), 'LIMIT', 0, limit)
for _, id in ipairs(orphans) do
  redis.call('ZADD', K_SWEEPS, now + lock_ms, id)
  append(out, { '', id })
end
return out
