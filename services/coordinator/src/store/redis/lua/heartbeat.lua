-- Heartbeat: ARGV 2 pod, 3 instance, 4 address, 5 pod lease ms, 6 sweep lock ms, 7 user
-- sockets, 8 admin sockets ('' when not reported). KEYS[1] = the pod key.
-- Returns {'renewed'} | {'registered', sweep id of the previous registration ('' if none)}.
local pod, inst, addr = ARGV[2], ARGV[3], ARGV[4]
local lease_ms, lock_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()
local pk = k_pod(pod)
local cur = redis.call('HMGET', pk, 'inst', 'exp')
local exp = now + lease_ms
if cur[1] == inst and (tonumber(cur[2]) or 0) >= now then
  redis.call('HSET', pk, 'addr', addr, 'hb', fmt(now), 'exp', fmt(exp), 'us', ARGV[7], 'as', ARGV[8])
  redis.call('ZADD', K_PODS, exp, pod)
  return { 'renewed' }
end
-- New instance, or the previous lease lapsed before the reaper got to it: start empty. The
-- previous registration is handed to a sweep (the caller runs it), never purged here.
local sweep = ''
if cur[1] then sweep = claim_pod(pod, now, lock_ms) end
-- A new registration number: sessions of every earlier life are vacant from now on.
local gen = fmt(redis.call('INCR', K_REG_SEQ))
redis.call('HSET', pk, 'inst', inst, 'gen', gen, 'addr', addr, 'reg', fmt(now), 'hb', fmt(now),
  'exp', fmt(exp), 'us', ARGV[7], 'as', ARGV[8])
redis.call('ZADD', K_PODS, exp, pod)
return { 'registered', sweep }
