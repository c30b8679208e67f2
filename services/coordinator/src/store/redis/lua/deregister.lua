-- Deregister: ARGV 2 pod, 3 instance, 4 sweep lock ms. KEYS[1] = the pod key.
-- Returns {'none'} unless `instance` is current, else {'claimed', sweep id ('' if nothing to
-- sweep)}; the caller runs the sweep.
local pod, inst = ARGV[2], ARGV[3]
local lock_ms = tonumber(ARGV[4])
if redis.call('HGET', k_pod(pod), 'inst') ~= inst then return { 'none' } end
return { 'claimed', claim_pod(pod, now_ms(), lock_ms) }
