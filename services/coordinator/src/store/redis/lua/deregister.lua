-- Deregister, the pod step: KEYS 1 pod, 2 sweeps, 3 session set, 4 route set, 5-7 the sweep
-- keys of registration ARGV 3. ARGV 1 pod, 2 instance, 3 the registration the caller read,
-- 4 sweep lock ms.
-- Returns {'none'} unless `instance` is current, {'retry', gen} when the registration changed
-- since it was read, else {'claimed', gen ('' if nothing to sweep)}; the caller sweeps.
local pk = KEYS[1]
local cur = redis.call('HMGET', pk, 'inst', 'gen')
if cur[1] ~= ARGV[2] then return { 'none' } end
if (cur[2] or '') ~= ARGV[3] then return { 'retry', cur[2] or '' } end
local claimed = claim_pod(pk, KEYS[3], KEYS[4], KEYS[2], KEYS[5], KEYS[6], KEYS[7], ARGV[1],
  ARGV[3], now_ms(), tonumber(ARGV[4]))
return { 'claimed', claimed and ARGV[3] or '' }
