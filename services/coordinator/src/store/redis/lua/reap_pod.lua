-- Reaper, the pod step (steps.rs): KEYS 1 pod, 2 sweeps, 3 session set, 4 route set, 5-7 the
-- sweep keys of registration ARGV 2. ARGV 1 pod, 2 the registration the caller read, 3 sweep
-- lock ms.
-- Returns {'live', lease expiry ms} | {'retry', gen} (the registration changed since it was read)
--       | {'dead', claimed ('1' when this call ended a lapsed registration, O(1) claim_pod),
--          its sweep ('' = nothing to sweep), due sweeps of earlier registrations...}.
local pk, sweeps = KEYS[1], KEYS[2]
local lock_ms = tonumber(ARGV[3])
local now = now_ms()
local cur = redis.call('HMGET', pk, 'exp', 'gen')
if cur[1] and tonumber(cur[1]) >= now then return { 'live', cur[1] } end
if (cur[2] or '') ~= ARGV[2] then return { 'retry', cur[2] or '' } end
local out = { 'dead', '0', '' }
if cur[1] then
  out[2] = '1'
  if claim_pod(pk, KEYS[3], KEYS[4], sweeps, KEYS[5], KEYS[6], KEYS[7], ARGV[1], ARGV[2], now,
    lock_ms) then
    out[3] = ARGV[2]
  end
end
append(out, due_sweeps(sweeps, now, lock_ms))
return out
