-- A live pod's record: KEYS 1 pod. ARGV 1 pod. Returns {} when the pod is not live, else its
-- registration followed by the 8-string record (common.lua, pod_record).
local pk = KEYS[1]
local gen = live_gen(pk, now_ms())
if not gen then return {} end
local out = { gen }
append(out, pod_record(pk, ARGV[1]))
return out
