-- LookupRoutes: ARGV 2.. groups of (n, n routes), one group per query. KEYS[1] = the pod index.
-- Returns {per query: array of live pods, array of 8-string records of those pods}.
local now = now_ms()
local live = {}
local records = {}
local results = {}
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local seen = {}
  local pods = {}
  for j = i + 1, i + n do
    for _, pod in ipairs(redis.call('SMEMBERS', k_route(ARGV[j]))) do
      if not seen[pod] then
        seen[pod] = true
        if live[pod] == nil then
          live[pod] = pod_live(pod, now)
          if live[pod] then append(records, pod_record(pod)) end
        end
        if live[pod] then pods[#pods + 1] = pod end
      end
    end
  end
  results[#results + 1] = pods
  i = i + n + 1
end
return { results, records }
