-- Pod records: ARGV 2 'ids' then pod ids, or 'scan', cursor, count. KEYS[1] = the pod index.
-- Returns {next cursor ('0' for 'ids'), 8-string records of the live pods...}.
local now = now_ms()
local out = { '0' }
local ids = {}
if ARGV[2] == 'scan' then
  local res = redis.call('ZSCAN', K_PODS, ARGV[3], 'COUNT', ARGV[4])
  out[1] = res[1]
  for k = 1, #res[2], 2 do ids[#ids + 1] = res[2][k] end
else
  for k = 3, #ARGV do ids[#ids + 1] = ARGV[k] end
end
for _, pod in ipairs(ids) do
  if pod_live(pod, now) then append(out, pod_record(pod)) end
end
return out
