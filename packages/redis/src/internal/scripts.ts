// The Lua scripts that own streams' keys in Redis. One call serves several streams: KEYS holds,
// for each stream in turn, its hash (fields `data`, `steps`, `fence`) and its lease
// (`<token>:<owner>`, expiring after the lease time); a stream's two keys share a hash tag, and on
// a cluster every stream of one call shares a slot. Each stream is decided alone (a refused
// stream leaves the others of its call written) and the call replies with one entry per stream.
import { createHash } from "node:crypto"

/**
 * ARGV: owner, leaseMs, then one start flag ("1"/"0") per stream. Grants each stream a new
 * fencing token unless another owner holds its lease. Without start, a stream with no stored
 * state is unknown (nothing is created). Each entry is {"OK", token, data|false, steps} |
 * {"LEASED", holder, token, pttl} | {"UNKNOWN"}.
 */
const ACQUIRE = `
local owner, ms = ARGV[1], ARGV[2]
local out = {}
for i = 1, #KEYS / 2 do
  local hash, lease, start = KEYS[2 * i - 1], KEYS[2 * i], ARGV[2 + i]
  local cur = redis.call('GET', lease)
  local tok, own
  if cur then tok, own = string.match(cur, '^(%d+):(.*)$') end
  if cur and own ~= owner then
    out[i] = {'LEASED', own, tonumber(tok), redis.call('PTTL', lease)}
  elseif start ~= '1' and redis.call('HEXISTS', hash, 'data') == 0 then
    out[i] = {'UNKNOWN'}
  else
    local token = redis.call('HINCRBY', hash, 'fence', 1)
    redis.call('SET', lease, token .. ':' .. owner, 'PX', ms)
    if start == '1' then
      redis.call('HDEL', hash, 'data', 'steps')
      out[i] = {'OK', token, false, 0}
    else
      local v = redis.call('HMGET', hash, 'data', 'steps')
      out[i] = {'OK', token, v[1], tonumber(v[2] or '0')}
    end
  end
end
return out
`

/**
 * ARGV: owner, leaseMs, then five per stream: token, mode ("write" | "renew" | "release" |
 * "forget"), data, steps, release ("1"/"0"). A stream is refused unless its token is the newest
 * granted (a hash that vanished, as after a restart without persistence, takes the writer's
 * token). "write" stores data and steps; "forget" drops them (keeping the fence). The lease is
 * renewed, or deleted on release/forget. Each entry is {"OK"} | {"FENCED", fence, holder|false}.
 */
const WRITE = `
local owner, ms = ARGV[1], ARGV[2]
local out = {}
for i = 1, #KEYS / 2 do
  local hash, lease, a = KEYS[2 * i - 1], KEYS[2 * i], 2 + 5 * (i - 1)
  local fence = tonumber(redis.call('HGET', hash, 'fence') or '0')
  local token = tonumber(ARGV[a + 1])
  if token < fence then
    local cur = redis.call('GET', lease)
    local holder = false
    if cur then holder = string.match(cur, '^%d+:(.*)$') end
    out[i] = {'FENCED', fence, holder}
  else
    if token > fence then redis.call('HSET', hash, 'fence', token) end
    local mode = ARGV[a + 2]
    if mode == 'write' then
      redis.call('HSET', hash, 'data', ARGV[a + 3], 'steps', ARGV[a + 4])
    elseif mode == 'forget' then
      redis.call('HDEL', hash, 'data', 'steps')
    end
    if mode == 'release' or mode == 'forget' or ARGV[a + 5] == '1' then
      redis.call('DEL', lease)
    else
      redis.call('SET', lease, ARGV[a + 1] .. ':' .. owner, 'PX', ms)
    end
    out[i] = {'OK'}
  end
end
return out
`

export interface Script {
  readonly source: string
  readonly sha: string
}

const script = (source: string): Script => ({
  source,
  sha: createHash("sha1").update(source).digest("hex"),
})

export const SCRIPTS = { acquire: script(ACQUIRE), write: script(WRITE) } as const

/** What the tier needs of a node-redis client or cluster (after `withTypeMapping`). */
export interface ScriptRunner {
  eval(
    script: string,
    options: { keys: string[]; arguments: (string | Buffer)[] },
  ): Promise<unknown>
  evalSha(
    sha1: string,
    options: { keys: string[]; arguments: (string | Buffer)[] },
  ): Promise<unknown>
}

/** EVALSHA, falling back to EVAL (which caches the script) on a node that does not have it yet. */
export async function runScript(
  client: ScriptRunner,
  s: Script,
  keys: string[],
  args: (string | Buffer)[],
): Promise<unknown> {
  try {
    return await client.evalSha(s.sha, { keys, arguments: args })
  } catch (e) {
    if (e instanceof Error && e.message.startsWith("NOSCRIPT")) {
      return client.eval(s.source, { keys, arguments: args })
    }
    throw e
  }
}
