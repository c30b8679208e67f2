-- Records what a pod holds (steps.rs), before the route sets name it: KEYS 1 pod, 2 session
-- set, 3 route set. ARGV 1 the registration the caller works for ('' = the live one), 2 a
-- "<skey> <conn>" member ('' = none), 3.. routes.
-- Returns {'ok', gen} | {'unknown'} when the pod is not live under that registration.
local pk, ps, pr = KEYS[1], KEYS[2], KEYS[3]
local gen = live_gen(pk, now_ms())
if not gen or (ARGV[1] ~= '' and gen ~= ARGV[1]) then return { 'unknown' } end
if ARGV[2] ~= '' then redis.call('SADD', ps, ARGV[2]) end
for i = 3, #ARGV do redis.call('SADD', pr, ARGV[i]) end
return { 'ok', gen }
