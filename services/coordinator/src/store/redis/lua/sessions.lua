-- Session records: ARGV 2.. skeys. KEYS[1] = the sequence key (cluster routing).
-- Returns the 7-string records of the keys somebody holds.
local now = now_ms()
local out = {}
for i = 2, #ARGV do
  local record = session_record(ARGV[i], now)
  if record then append(out, record) end
end
return out
