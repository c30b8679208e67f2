-- Shared prelude of every daisi coordinator script (prepended at build time).
--
-- Key layout (built by keys.rs; P = the key prefix). Keys are sharded by what a call looks up,
-- each group under one hash tag, so on Redis Cluster they spread over every master. No script
-- touches two slots, and every key a script touches arrives in KEYS: a call that concerns
-- several slots is a short sequence of scripts (store/redis/steps.rs documents its order).
--
-- Session slot {P:s:<skey>} (skey "u:<c>:<a>:<u>" or "a:<admin>"):
--   :s      session hash: pod, gen (the pod registration that granted it), conn, fence,
--           since (ms), chat; no TTL. Valid exactly while that registration is its pod's
--           current one and within its lease (the pod's heartbeat keeps all its sessions);
--           scripts here cannot read the pod, so
--           the caller passes what it learnt of the holder's pod (dead_pod/dead_gen, own gen)
--   :t      tombstones: hash conn -> "<until ms>|<fence>|<reason>" of each connection taken
--           over or killed within the tombstone lifetime (PEXPIRE = that lifetime)
--   :sel    selected chat kept after the session (TTL = selection retention)
--   :f      the key's last fencing token (kept FENCE_KEEP_MS after its latest grant; tokens
--           are max(last + 1, clock in µs), so they strictly increase per key across every
--           session of it, and keep doing so once the key expired)
-- Company slot {P:c:<company>} ('*' for admin routes without a company):
--   :r:<route>  set of "<pod> <gen>" registered for the route (a sweep removes exactly the
--               member of the ended registration, never the pod's current one)
--   :ix         set of "<skey> <conn>" of the company's user sessions (admin listing)
--   :ix:a:<a>   the same for one agent
-- Pod slot {P:p:<pod>}:
--   :pod    pod hash: inst, gen, addr, reg, hb, exp (ms), us, as
--   :gen    sequence of the pod's registration numbers (PEXPIRE = SEQ_KEEP_MS after its
--           last use; numbers never go back, see next_seq, so a lapsed registration never
--           lives again)
--   :ps     set of "<skey> <conn>" of the grants the pod took (added before the grant)
--   :pr     set of routes of the pod (added before the route sets)
--   :ib     inbox: sorted set sequence -> "<seq>\n<until ms>\n<kill line>" of the kill
--           commands raised for it (newest INBOX_LIMIT, PEXPIRE = tombstone lifetime)
--   :ibseq  sequence of inbox entries (PEXPIRE = SEQ_KEEP_MS; never goes back, see
--           next_seq, so acknowledged sequences stay valid)
--   :sweeps sorted set gen -> lock expiry (ms) of the unfinished sweeps of ended registrations
--   :sw:<gen>, :sw:<gen>:s, :sw:<gen>:r  the sweep of registration gen: hash pod, gen, and
--           the registration's :ps and :pr renamed
-- Deployment slot {P}:
--   :pods   sorted set pod -> when a reaper should look at it (its lease expiry, or a
--           reaper's lock); removed once the pod is gone and swept
--   :ix:adm set of "<skey> <conn>" of admin sessions
--   :cmd    pub/sub channel of kill commands (a channel, not a key)
-- Ids never contain whitespace, ':', '{' or '}'; members join two ids with one space.
local INBOX_LIMIT = 1000
local FENCE_KEEP_MS = 86400000

local SEQ_KEEP_MS = 86400000

-- Integers as plain decimal text (tostring would switch to exponent notation).
local function fmt(n) return string.format('%d', n) end

-- This master's clock. Every lease is read and written on the master of its own slot, so each
-- comparison uses one clock.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The next number of the sequence kept at `key`: above its last one, above `floor` (the
-- highest number still in use elsewhere, or nil) and at least the clock in µs, so numbers
-- keep increasing once the key expired (it is kept SEQ_KEEP_MS after its last use, so pods
-- that come and go leave no key behind for good). Like fences; exact in a Lua number until
-- the year 2255.
local function next_seq(key, floor, now)
  local n = math.max((tonumber(redis.call('GET', key)) or 0) + 1, (tonumber(floor) or 0) + 1,
    now * 1000)
  redis.call('SET', key, fmt(n), 'PX', SEQ_KEEP_MS)
  return fmt(n)
end

local function append(out, items)
  for _, v in ipairs(items) do out[#out + 1] = v end
end

-- The current registration number of a pod hash, or nil when the pod is not live.
local function live_gen(pk, now)
  local r = redis.call('HMGET', pk, 'gen', 'exp')
  if r[2] and tonumber(r[2]) >= now then return r[1] or '' end
  return nil
end

local function keep_selection(selk, chat, retention_ms)
  if chat and chat ~= '' then
    redis.call('SET', selk, chat, 'PX', retention_ms)
  end
end

-- The live tombstone of `conn` in the tombstone hash `tk`: its reason and fence, or nil.
local function tombstone(tk, conn, now)
  local v = redis.call('HGET', tk, conn)
  if not v then return nil end
  local until_ms, fence, reason = string.match(v, '^(%d+)|(%d+)|(.+)$')
  if not until_ms or tonumber(until_ms) < now then return nil end
  return reason, fence
end

-- Remembers for `ttl_ms` that `conn` lost the session (taken over or killed), so renew reports
-- the true reason and no acquire brings the connection back. The first reason wins while it
-- lives. Expired entries are dropped here: the hash holds only the burials of the last `ttl_ms`.
local function bury(tk, conn, fence, reason, now, ttl_ms)
  local all = redis.call('HGETALL', tk)
  for i = 1, #all, 2 do
    local until_ms = tonumber(string.match(all[i + 1], '^(%d+)|'))
    if not until_ms or until_ms < now then redis.call('HDEL', tk, all[i]) end
  end
  if not tombstone(tk, conn, now) then
    redis.call('HSET', tk, conn, fmt(now + ttl_ms) .. '|' .. fence .. '|' .. reason)
  end
  redis.call('PEXPIRE', tk, ttl_ms)
end

-- Deletes a session, keeping its selection; its memberships are the caller's next step.
local function drop_session(sk, selk, chat, retention_ms)
  keep_selection(selk, chat, retention_ms)
  redis.call('DEL', sk)
end

-- Whether registration `gen` of a pod came before `own_gen` (numbers, increasing per pod).
-- Only earlier ones are known dead: a caller that read `own_gen` before the pod registered
-- anew must not take a session of the newer registration for dead.
local function earlier_gen(gen, own_gen)
  local g, o = tonumber(gen), tonumber(own_gen)
  if g and o then return g < o end
  return gen ~= own_gen
end

-- The record of session hash `sk` as HMGET of pod, gen, conn, fence, chat, or all false when
-- nobody holds it. A record the caller knows to be dead (its registration `dead_gen` of
-- `dead_pod` ended, or `own_pod` now runs a later registration `own_gen`) is dropped here, as
-- its pod's sweep would: the key is vacant at once.
local function held_record(sk, selk, now, retention_ms, own_pod, own_gen, dead_pod, dead_gen)
  local cur = redis.call('HMGET', sk, 'pod', 'gen', 'conn', 'fence', 'chat')
  if cur[1] then
    local gen = cur[2] or ''
    local dead = (cur[1] == own_pod and earlier_gen(gen, own_gen))
      or (dead_pod ~= '' and cur[1] == dead_pod and gen == dead_gen)
    if dead then
      drop_session(sk, selk, cur[5], retention_ms)
      for i = 1, 5 do cur[i] = false end
    end
  end
  return cur
end

-- Ends a pod's registration `gen` in O(1): its record goes, and its session and route sets
-- are renamed to the sweep's keys (`sw`, `sw_s`, `sw_r`, declared by the caller for this
-- gen), which sweep.lua and the caller empty in bounded chunks. Its sessions are vacant from
-- now on. Returns true when there is something to sweep (locked for `lock_ms`).
local function claim_pod(pk, ps, pr, sweeps, sw, sw_s, sw_r, pod, gen, now, lock_ms)
  redis.call('DEL', pk)
  local has_s, has_r = redis.call('EXISTS', ps) == 1, redis.call('EXISTS', pr) == 1
  if not has_s and not has_r then return false end
  redis.call('HSET', sw, 'pod', pod, 'gen', gen)
  if has_s then redis.call('RENAME', ps, sw_s) end
  if has_r then redis.call('RENAME', pr, sw_r) end
  redis.call('ZADD', sweeps, now + lock_ms, gen)
  return true
end

-- Unfinished sweeps of the pod whose lock lapsed (their sweeper died), locked for the caller.
local function due_sweeps(sweeps, now, lock_ms)
  local due = redis.call('ZRANGEBYSCORE', sweeps, '-inf', '(' .. fmt(now), 'LIMIT', 0, 16)
  for _, g in ipairs(due) do redis.call('ZADD', sweeps, now + lock_ms, g) end
  return due
end

-- Publishes a kill command from the session step that raised it, so the kills of one key go
-- out in token order and even a coordinator that dies right after still sent it; the caller
-- then keeps the returned line in the pod's inbox (pod_kill.lua). Line format (ids contain no
-- newline; the free-text message comes last): v1, pod, connection, fencing, reason, session
-- key, issued at (ms), message.
local function publish_kill(channel, pod, conn, fence, reason, skey, now, message)
  local line = table.concat({ 'v1', pod, conn, fence, reason, skey, fmt(now), message }, '\n')
  redis.call('PUBLISH', channel, line)
  return line
end

-- A pod's record as 8 strings: pod, inst, addr, reg, hb, exp, us, as ('' when absent).
local function pod_record(pk, pod)
  local r = redis.call('HMGET', pk, 'inst', 'addr', 'reg', 'hb', 'exp', 'us', 'as')
  return { pod, r[1] or '', r[2] or '', r[3] or '', r[4] or '', r[5] or '', r[6] or '', r[7] or '' }
end
