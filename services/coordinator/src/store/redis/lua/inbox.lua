-- A pod's inbox (pod_kill.lua): KEYS 1 the inbox. ARGV 1 acked sequence.
-- Drops the entries up to the acknowledged sequence and those past their lifetime; returns
-- (sequence, kill line) pairs of the rest, oldest first.
local ib = KEYS[1]
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', ib, '-inf', ARGV[1])
local out = {}
for _, entry in ipairs(redis.call('ZRANGE', ib, 0, -1)) do
  local seq, until_ms, line = string.match(entry, '^(%d+)\n(%d+)\n(.*)$')
  if seq and tonumber(until_ms) >= now then
    out[#out + 1] = seq
    out[#out + 1] = line
  else
    redis.call('ZREM', ib, entry)
  end
end
return out
