-- KillSession: ARGV 2 skey, 3 conn ('' = whoever holds it), 4 message, 5 retention ms,
-- 6 tombstone ms. KEYS[1] = the session key, KEYS[2] = the key's tombstones.
-- Returns {'none'} | {'killed', <session record (7)>}.
-- The killed connection is tombstoned, so neither its renew nor an acquire brings it back. A
-- kill naming a connection that does not hold the key (its acquire may still be in flight) is
-- tombstoned as well: that acquire is then refused.
local skey, conn, message = ARGV[2], ARGV[3], ARGV[4]
local retention_ms, tomb_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local tombs = KEYS[2]
local now = now_ms()
local record = session_record(skey, now)
if not record or (conn ~= '' and record[3] ~= conn) then
  if conn ~= '' then bury(tombs, conn, '0', 'killed_by_admin', now, tomb_ms) end
  return { 'none' }
end
drop_session(skey, record[2], record[7], retention_ms)
bury(tombs, record[3], record[4], 'killed_by_admin', now, tomb_ms)
publish_kill(record[2], record[3], record[4], 'killed_by_admin', skey, now, message, tomb_ms)
local out = { 'killed' }
append(out, record)
return out
