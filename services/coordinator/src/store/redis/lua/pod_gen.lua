-- The live registration of a pod (steps.rs, first step of every call naming a pod): KEYS 1 pod,
-- 2 its session set. ARGV 1 a "<skey> <conn>" member to record in the session set first
-- ('' = none): an acquire records its grant here before it is granted, so the pod's sweep
-- always finds it. Returns {'live', gen, lease end (ms)} | {'unknown'}.
local pk, ps = KEYS[1], KEYS[2]
local gen = live_gen(pk, now_ms())
if not gen then return { 'unknown' } end
if ARGV[1] ~= '' then redis.call('SADD', ps, ARGV[1]) end
return { 'live', gen, redis.call('HGET', pk, 'exp') or '' }
