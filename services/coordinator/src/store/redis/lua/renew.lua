-- Renew: ARGV 2 pod, 3 lease ms, 4 retention ms, then (skey, conn, fence) triples.
-- KEYS[1] = the pod's session set (cluster routing); KEYS[1 + n] = the tombstones of the key
-- of triple n.
-- Returns {'unknown_pod'} | {'ok', then per lost session: index (1-based), reason, pod, conn,
-- fence} with the current holder ('' when none). The reason is the tombstone's
-- ('taken_over', 'killed_by_admin') when the connection has one, else 'taken_over' when
-- another connection holds the key, else 'expired'.
local pod = ARGV[2]
local lease_ms, retention_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
if not pod_live(pod, now) then return { 'unknown_pod' } end
local out = { 'ok' }
local n = 0
for i = 5, #ARGV, 3 do
  n = n + 1
  local skey, conn, fence = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local sk = k_session(skey)
  local cur = held_record(skey, now, retention_ms, { 'pod', 'conn', 'fence', 'chat', 'gen' })
  if cur[2] == conn and cur[3] == fence then
    redis.call('PEXPIRE', sk, lease_ms)
    -- The selection outlives the session by the retention, counted from the last renew.
    keep_selection(skey, cur[4], retention_ms)
  else
    -- Forget the membership unless another connection of this very pod holds the key now.
    if cur[1] ~= pod then redis.call('SREM', k_pod_sessions(pod), skey) end
    local ended = tombstone(KEYS[1 + n], conn, now)
    if ended then
      append(out, { fmt(n), ended, cur[1] or '', cur[2] or '', cur[3] or '' })
    elseif cur[1] then
      append(out, { fmt(n), 'taken_over', cur[1], cur[2] or '', cur[3] or '' })
    else
      append(out, { fmt(n), 'expired', '', '', '' })
    end
  end
end
return out
