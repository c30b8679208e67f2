-- One page of an index: ARGV 2 index key, 3 SSCAN cursor, 4 count. KEYS[1] = the index.
-- Returns {next cursor, 7-string session records...}. Members whose session lapsed are removed
-- from the index here (nothing else notices a lease running out).
local index, cursor, count = ARGV[2], ARGV[3], ARGV[4]
local now = now_ms()
local res = redis.call('SSCAN', index, cursor, 'COUNT', count)
local out = { res[1] }
for _, skey in ipairs(res[2]) do
  local record = session_record(skey, now)
  if record then append(out, record) else redis.call('SREM', index, skey) end
end
return out
