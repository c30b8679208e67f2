-- Reaper: ARGV 2 retention ms, 3 most pods per call. KEYS[1] = the pod index.
-- Purges pods whose lease lapsed. Atomic, so replicas reaping at once never purge a pod twice
-- nor one that heartbeated meanwhile. Returns (pod, sessions purged, routes purged) triples.
local retention_ms, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local out = {}
local due = redis.call('ZRANGEBYSCORE', K_PODS, '-inf', '(' .. fmt(now), 'LIMIT', 0, limit)
for _, pod in ipairs(due) do
  local exp = tonumber(redis.call('HGET', k_pod(pod), 'exp'))
  if exp ~= nil and exp >= now then
    redis.call('ZADD', K_PODS, exp, pod)
  else
    local ns, nr = purge_pod(pod, retention_ms)
    append(out, { pod, fmt(ns), fmt(nr) })
  end
end
return out
