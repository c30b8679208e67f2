-- KillSession: ARGV 2 skey, 3 conn ('' = whoever holds it), 4 message, 5 retention ms.
-- KEYS[1] = the session key. Returns {'none'} | {'killed', <session record (7)>}.
local skey, conn, message = ARGV[2], ARGV[3], ARGV[4]
local retention_ms = tonumber(ARGV[5])
local now = now_ms()
local record = session_record(skey, now)
if not record then return { 'none' } end
if conn ~= '' and record[3] ~= conn then return { 'none' } end
drop_session(skey, record[2], record[7], retention_ms)
publish_kill(record[2], record[3], record[4], 'killed_by_admin', skey, now, message)
local out = { 'killed' }
append(out, record)
return out
