-- Release, the session step (steps.rs; compare-and-delete): ARGV 1 pod, 2 its live
-- registration, 3 retention ms, 4 tombstone ms, then (skey, conn, fence) triples; KEYS 3 per
-- triple: session, tombstones, selection.
-- A pod acts only as itself: only a grant held on `pod` is ever deleted.
-- Fence '0' (never granted) abandons the connection: whatever grant it holds on `pod` is
-- deleted, any token, and it is tombstoned ('expired'), so an acquire of it that lands later
-- is refused. A connection that holds the key on another pod is that pod's: it is neither
-- deleted nor tombstoned.
-- Returns one letter per triple: 'r' released, 'h' still held by that connection (another
-- token, or on another pod: its memberships stay), 'n' not held by it.
local pod, gen = ARGV[1], ARGV[2]
local retention_ms, tomb_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local out = {}
local n = 0
for i = 5, #ARGV, 3 do
  n = n + 1
  local conn, fence = ARGV[i + 1], ARGV[i + 2]
  local sk, tk, selk = KEYS[3 * n - 2], KEYS[3 * n - 1], KEYS[3 * n]
  local cur = held_record(sk, selk, now, retention_ms, pod, gen, '', '')
  local abandon = fence == '0'
  local others = cur[3] == conn and cur[1] ~= pod
  if abandon and not others then bury(tk, conn, '0', 'expired', now, tomb_ms) end
  if cur[3] == conn and cur[1] == pod and (cur[4] == fence or abandon) then
    drop_session(sk, selk, cur[5], retention_ms)
    out[n] = 'r'
  elseif cur[3] == conn then
    out[n] = 'h'
  else
    out[n] = 'n'
  end
end
return out
