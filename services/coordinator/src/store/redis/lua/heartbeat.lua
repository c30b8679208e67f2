-- Heartbeat, the pod step (steps.rs): KEYS 1 pod, 2 registration sequence, 3 sweeps, 4 session
-- set, 5 route set, 6-8 the sweep keys of registration ARGV 8. ARGV 1 pod, 2 instance,
-- 3 address, 4 pod lease ms, 5 sweep lock ms, 6 user sockets, 7 admin sockets ('' when not
-- reported), 8 the registration the caller read ('' = none).
-- Returns {'renewed', gen, due sweeps...} | {'retry', gen} (the registration changed since it was
--       read) | {'registered', gen, claimed gen ('' if nothing to sweep), due sweeps...}, gen
--       being the pod's registration after the call.
local pk, seq, sweeps, ps, pr = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local pod, inst, addr = ARGV[1], ARGV[2], ARGV[3]
local lease_ms, lock_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()
local cur = redis.call('HMGET', pk, 'inst', 'exp', 'gen')
local exp = now + lease_ms
local out
if cur[1] == inst and (tonumber(cur[2]) or 0) >= now then
  redis.call('HSET', pk, 'addr', addr, 'hb', fmt(now), 'exp', fmt(exp), 'us', ARGV[6], 'as', ARGV[7])
  out = { 'renewed', cur[3] or '' }
else
  if (cur[3] or '') ~= ARGV[8] then return { 'retry', cur[3] or '' } end
  -- New instance, or the previous lease lapsed before the reaper got to it: start empty. The
  -- previous registration is handed to a sweep (the caller runs it), never purged here.
  local claimed = ''
  if cur[1] and claim_pod(pk, ps, pr, sweeps, KEYS[6], KEYS[7], KEYS[8], pod, ARGV[8], now, lock_ms) then
    claimed = ARGV[8]
  end
  -- A new registration number: sessions of every earlier life are vacant from now on.
  local gen = next_seq(seq, cur[3], now)
  redis.call('HSET', pk, 'inst', inst, 'gen', gen, 'addr', addr, 'reg', fmt(now), 'hb', fmt(now),
    'exp', fmt(exp), 'us', ARGV[6], 'as', ARGV[7])
  out = { 'registered', gen, claimed }
end
append(out, due_sweeps(sweeps, now, lock_ms))
return out
