-- Renew, now an audit (read-only): ARGV 2 pod, then (skey, conn, fence) triples. KEYS[1] = the
-- pod's session set (cluster routing); KEYS[1 + n] = the tombstones of the key of triple n.
-- Sessions live with their pod's registration (holder_live), so nothing is extended: this
-- only answers the sessions the pod no longer holds, a backstop for kills it never received.
-- Records of dead holders are left to their pod's sweep.
-- Returns {'unknown_pod'} | {'ok', then per lost session: index (1-based), reason, pod, conn,
-- fence} with the current holder ('' when none). The reason is the tombstone's
-- ('taken_over', 'killed_by_admin') when the connection has one, else 'taken_over' when
-- another connection holds the key, else 'expired'.
local pod = ARGV[2]
local now = now_ms()
if not pod_live(pod, now) then return { 'unknown_pod' } end
local out = { 'ok' }
local n = 0
for i = 3, #ARGV, 3 do
  n = n + 1
  local skey, conn, fence = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local cur = redis.call('HMGET', k_session(skey), 'pod', 'conn', 'fence', 'gen')
  if cur[1] and not holder_live(cur[1], cur[4], now) then cur = { false, false, false } end
  if cur[2] ~= conn or cur[3] ~= fence then
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
