-- Release (compare-and-delete): ARGV 2 pod, 3 retention ms, 4 tombstone ms, then (skey, conn,
-- fence) triples. KEYS[1] = the pod's session set (cluster routing); KEYS[1 + n] = the
-- tombstones of the key of triple n.
-- Fence '0' (never granted) abandons the connection: whatever grant it holds is deleted, any
-- token, and it is tombstoned ('expired'), so an acquire of it that lands later is refused.
-- Returns {'unknown_pod'} | {'ok', released count, indexes (1-based) of sessions not held...}.
local pod = ARGV[2]
local retention_ms, tomb_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
if not pod_live(pod, now) then return { 'unknown_pod' } end
local out = { 'ok', '0' }
local released = 0
local n = 0
for i = 5, #ARGV, 3 do
  n = n + 1
  local skey, conn, fence = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local cur = held_record(skey, now, retention_ms, { 'pod', 'conn', 'fence', 'chat', 'gen' })
  local abandon = fence == '0'
  if abandon then bury(KEYS[1 + n], conn, '0', 'expired', now, tomb_ms) end
  if cur[2] == conn and (cur[3] == fence or (abandon and cur[1] == pod)) then
    drop_session(skey, cur[1], cur[4], retention_ms)
    released = released + 1
  else
    if cur[1] ~= pod then redis.call('SREM', k_pod_sessions(pod), skey) end
    out[#out + 1] = fmt(n)
  end
end
out[2] = fmt(released)
return out
