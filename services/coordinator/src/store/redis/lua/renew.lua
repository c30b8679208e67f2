-- Renew, now the edges' session audit (read-only), the session step (steps.rs): ARGV 1 pod,
-- 2 its live registration, then (skey, conn, fence) triples; KEYS 3 per triple: session,
-- tombstones, selection (one slot on a cluster; any number of slots on one Redis).
-- Sessions live as long as the registration that holds them, so nothing is extended: this
-- only answers the sessions the pod no longer holds, the backstop for kills it never
-- received. Records of the pod's ended registrations are left to their sweep.
-- Returns per lost session: index (1-based), reason, pod, conn, fence with the current holder
-- ('' when none). The reason is the tombstone's ('taken_over', 'killed_by_admin') when the
-- connection has one, else 'taken_over' when another connection holds the key, else
-- 'expired'.
local pod, gen = ARGV[1], ARGV[2]
local now = now_ms()
local out = {}
local n = 0
for i = 3, #ARGV, 3 do
  n = n + 1
  local conn, fence = ARGV[i + 1], ARGV[i + 2]
  local sk, tk = KEYS[3 * n - 2], KEYS[3 * n - 1]
  local cur = redis.call('HMGET', sk, 'pod', 'gen', 'conn', 'fence')
  -- A record of an ended (earlier) registration of this pod is vacant (its sweep drops it).
  if cur[1] == pod and earlier_gen(cur[2] or '', gen) then cur = { false, false, false, false } end
  -- Held means held by this pod: another pod's grant is not the caller's to keep.
  if cur[1] ~= pod or cur[3] ~= conn or cur[4] ~= fence then
    local ended = tombstone(tk, conn, now)
    if ended then
      append(out, { fmt(n), ended, cur[1] or '', cur[3] or '', cur[4] or '' })
    elseif cur[1] then
      append(out, { fmt(n), 'taken_over', cur[1], cur[3] or '', cur[4] or '' })
    else
      append(out, { fmt(n), 'expired', '', '', '' })
    end
  end
end
return out
