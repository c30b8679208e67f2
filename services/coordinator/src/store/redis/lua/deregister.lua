-- Deregister: ARGV 2 pod, 3 instance, 4 retention ms. KEYS[1] = the pod key.
-- Returns {sessions purged, routes purged}; nothing happens unless `instance` is current.
local pod, inst = ARGV[2], ARGV[3]
local retention_ms = tonumber(ARGV[4])
if redis.call('HGET', k_pod(pod), 'inst') ~= inst then return { '0', '0' } end
local ns, nr = purge_pod(pod, retention_ms)
return { fmt(ns), fmt(nr) }
