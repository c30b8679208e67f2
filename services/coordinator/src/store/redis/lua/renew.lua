-- Renew, the session step (steps.rs): ARGV 1 pod, 2 its live registration, 3 lease ms,
-- 4 retention ms, then (skey, conn, fence) triples; KEYS 3 per triple: session, tombstones,
-- selection (one slot on a cluster; any number of slots on one Redis).
-- Returns per lost session: index (1-based), reason, pod, conn, fence with the current holder
-- ('' when none). The reason is the tombstone's ('taken_over', 'killed_by_admin') when the
-- connection has one, else 'taken_over' when another connection holds the key, else
-- 'expired'.
local pod, gen = ARGV[1], ARGV[2]
local lease_ms, retention_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local out = {}
local n = 0
for i = 5, #ARGV, 3 do
  n = n + 1
  local conn, fence = ARGV[i + 1], ARGV[i + 2]
  local sk, tk, selk = KEYS[3 * n - 2], KEYS[3 * n - 1], KEYS[3 * n]
  local cur = held_record(sk, selk, now, retention_ms, pod, gen, '', '')
  if cur[3] == conn and cur[4] == fence then
    redis.call('PEXPIRE', sk, lease_ms)
    -- The selection outlives the session by the retention, counted from the last renew.
    keep_selection(selk, cur[5], retention_ms)
  else
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
