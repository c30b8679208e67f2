-- One chunk of a sweep (steps.rs): KEYS 1 the sweep record, 2 its session set, 3 its route
-- set, 4 the pod's sweeps. ARGV 1 the swept registration, 2 chunk size, 3 lock ms.
-- Answers up to `chunk` members of the session set, else up to `chunk` routes, without
-- removing them: the caller drops the sessions that still carry the registration and removes
-- the registration from the route sets, then removes the members here. Once both sets are
-- empty the sweep is deleted. Renews the sweep's lock.
-- Returns {'sessions' | 'routes', pod, members...} | {'done', pod ('' if already finished)}.
local sw, sw_s, sw_r, sweeps = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local gen, chunk, lock_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local pod = redis.call('HGET', sw, 'pod')
if not pod then
  redis.call('ZREM', sweeps, gen)
  return { 'done', '' }
end
local out
local members = redis.call('SRANDMEMBER', sw_s, chunk)
if #members > 0 then
  out = { 'sessions', pod }
else
  members = redis.call('SRANDMEMBER', sw_r, chunk)
  if #members == 0 then
    redis.call('DEL', sw)
    redis.call('ZREM', sweeps, gen)
    return { 'done', pod }
  end
  out = { 'routes', pod }
end
redis.call('ZADD', sweeps, 'XX', now_ms() + lock_ms, gen)
append(out, members)
return out
