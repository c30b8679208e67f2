-- Sweep, the session step (steps.rs): ARGV 1 swept pod, 2 its ended registration,
-- 3 retention ms, then session keys; KEYS 2 per session key: session, selection.
-- Drops each session only while it still carries that (pod, registration): a session taken
-- since, or granted to the pod's next registration, stays. Returns the 1-based indexes of the
-- sessions dropped.
local pod, gen = ARGV[1], ARGV[2]
local retention_ms = tonumber(ARGV[3])
local out = {}
for n = 1, #ARGV - 3 do
  local sk, selk = KEYS[2 * n - 1], KEYS[2 * n]
  local cur = redis.call('HMGET', sk, 'pod', 'gen', 'chat')
  -- A record without 'gen' predates registration numbers: its pod alone decides.
  if cur[1] == pod and (cur[2] == gen or not cur[2]) then
    drop_session(sk, selk, cur[3], retention_ms)
    out[#out + 1] = fmt(n)
  end
end
return out
