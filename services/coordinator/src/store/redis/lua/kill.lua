-- KillSession, the session step (steps.rs): KEYS 1 session, 2 tombstones, 3 selection.
-- ARGV 1 conn ('' = whoever holds it), 2 retention ms, 3 tombstone ms, then the holder the
-- caller read and checked: 4 pod, 5 gen, 6 conn, 7 fence ('' = none), 8 '1' when that holder's
-- registration lives, 9 the kill-command channel, 10 the session key, 11 the message.
-- Returns {'changed'} when the record is no longer the one read (the caller reads again),
-- {'none'}, or {'killed', kill line} (published here). The killed connection is tombstoned, so neither its renew nor an
-- acquire brings it back. A kill naming a connection that does not hold the key (its acquire
-- may still be in flight) is tombstoned as well: that acquire is then refused.
local sk, tombs, selk = KEYS[1], KEYS[2], KEYS[3]
local conn = ARGV[1]
local retention_ms, tomb_ms = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local cur = redis.call('HMGET', sk, 'pod', 'gen', 'conn', 'fence', 'chat')
if (cur[1] or '') ~= ARGV[4] or (cur[2] or '') ~= ARGV[5] or (cur[3] or '') ~= ARGV[6]
  or (cur[4] or '') ~= ARGV[7] then
  return { 'changed' }
end
if cur[1] and ARGV[8] ~= '1' then
  -- Its registration ended: vacant, as the pod's sweep would leave it.
  drop_session(sk, selk, cur[5], retention_ms)
  cur[1] = false
end
if not cur[1] or (conn ~= '' and cur[3] ~= conn) then
  if conn ~= '' then bury(tombs, conn, '0', 'killed_by_admin', now, tomb_ms) end
  return { 'none' }
end
drop_session(sk, selk, cur[5], retention_ms)
bury(tombs, cur[3], cur[4], 'killed_by_admin', now, tomb_ms)
return { 'killed', publish_kill(ARGV[9], cur[1], cur[3], cur[4], 'killed_by_admin', ARGV[10], now,
  ARGV[11]) }
