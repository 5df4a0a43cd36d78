import type { BlacklistKeys } from '../datasets/blacklist.ts';
import type { RedisClient } from '../redis/client.ts';

/**
 * The Lua that keeps a Redis dataset's epoch, version, digest and change log
 * atomic with its data (Redis runs a script alone). Digest values are 16 hex
 * digits, XORed as two 32-bit halves with Redis's `bit` library; an entry's
 * hash is the first 16 hex digits of `redis.sha1hex(text)`, as replica/digest.ts
 * computes with SHA-1.
 */

const XOR_HEX = `
local function xorhex(a, b)
  local hi = bit.bxor(tonumber(string.sub(a, 1, 8), 16), tonumber(string.sub(b, 1, 8), 16))
  local lo = bit.bxor(tonumber(string.sub(a, 9, 16), 16), tonumber(string.sub(b, 9, 16), 16))
  return bit.tohex(hi, 8) .. bit.tohex(lo, 8)
end
local function combined(digestKey, from)
  local acc = '0000000000000000'
  local all = redis.call('HGETALL', digestKey)
  for i = 1, #all, 2 do
    if tonumber(all[i]) >= from then acc = xorhex(acc, all[i + 1]) end
  end
  return acc
end
`;

/**
 * State: KEYS epoch, version, digest, pending; ARGV fromBucket.
 * Returns [epoch or '', version, combined digest of buckets >= fromBucket, pending events].
 */
export const STATE_SCRIPT = `${XOR_HEX}
local pending = 0
if KEYS[4] ~= '' then pending = redis.call('LLEN', KEYS[4]) end
return {redis.call('GET', KEYS[1]) or '', redis.call('GET', KEYS[2]) or '0',
  combined(KEYS[3], tonumber(ARGV[1])), pending}`;

/**
 * The end of a load: KEYS epoch, version, digest, log; ARGV the version read
 * before the data, maxChanges. Returns [epoch or '', version, n (-1: the log
 * does not reach back), n log entries after that version, then bucket, hex,
 * bucket, hex, ...].
 */
export const SNAPSHOT_END_SCRIPT = `
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
local out = {redis.call('GET', KEYS[1]) or '', tostring(version), -1}
local n = version - tonumber(ARGV[1])
if n >= 0 and n <= tonumber(ARGV[2]) and (n == 0 or n <= redis.call('LLEN', KEYS[4])) then
  out[3] = n
  if n > 0 then
    for _, entry in ipairs(redis.call('LRANGE', KEYS[4], -n, -1)) do out[#out + 1] = entry end
  end
end
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all do out[#out + 1] = all[i] end
return out`;

/**
 * The expiries of a batch of keys in one call: KEYS the keys (a SCAN step's),
 * ARGV[1] 'EXPIRETIME' (Redis 7: the second it was written with) or 'PTTL'.
 * Returns one integer per key (-2: gone, -1: no expiry). One script call per
 * batch costs Redis about half of what one pipelined command per key does
 * (no request to parse, no reply to write, per key), and this process one
 * reply instead of a thousand. The keys are declared, as the scripting
 * contract asks, and the script only reads.
 */
export const EXPIRIES_SCRIPT = `
local cmd = ARGV[1]
local out = {}
for i = 1, #KEYS do out[i] = redis.call(cmd, KEYS[i]) end
return out`;

/**
 * Changes since a version: KEYS epoch, version, log, digest, pending;
 * ARGV epoch, sinceVersion, fromBucket, maxChanges. Returns [epoch, version,
 * digest, pending, complete (1/0), entries...], the entries (from the log's
 * tail) only when the log holds every version after sinceVersion.
 */
export const CHANGES_SCRIPT = `${XOR_HEX}
local epoch = redis.call('GET', KEYS[1]) or ''
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
local pending = 0
if KEYS[5] ~= '' then pending = redis.call('LLEN', KEYS[5]) end
local out = {epoch, tostring(version), combined(KEYS[4], tonumber(ARGV[3])), pending, 0}
local n = version - tonumber(ARGV[2])
if epoch ~= ARGV[1] or n < 0 or n > tonumber(ARGV[4]) or n > redis.call('LLEN', KEYS[3]) then return out end
out[5] = 1
if n > 0 then
  for _, entry in ipairs(redis.call('LRANGE', KEYS[3], -n, -1)) do out[#out + 1] = entry end
end
return out`;

/**
 * The revocation (seed 001's logout) and everything that must change with it,
 * in one step: KEYS blacklist:{jti}, version, pending, epoch, digest, log, the
 * epoch's server; ARGV exat, jti, an epoch id to use if the source has none,
 * log size, bucket width (s). A repeated logout changes nothing (SET NX
 * decides) and returns 0; otherwise [the new version, the epoch].
 *
 * The epoch is bound to the Redis server process it began on (INFO's run_id).
 * A source without an epoch (new, or restarted empty) or with one begun on
 * another server (a restart, or a Sentinel failover to a replica that may lack
 * the old master's last writes, whose versions replicas already hold) starts a
 * new one, so replicas reload instead of taking a reused version number for a
 * duplicate. Versions of the old epoch are never compared with it.
 */
export const REVOKE_SCRIPT = `${XOR_HEX}
if not redis.call('SET', KEYS[1], '1', 'EXAT', ARGV[1], 'NX') then
  -- Rewritten as it is, so that a WAIT after this call also covers the first write,
  -- which another connection may have made and no replica may have yet.
  redis.call('SET', KEYS[1], '1', 'XX', 'KEEPTTL')
  return 0
end
local server = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
local epoch = redis.call('GET', KEYS[4])
if not epoch or redis.call('GET', KEYS[7]) ~= server then
  epoch = ARGV[3]
  redis.call('SET', KEYS[4], epoch)
  redis.call('SET', KEYS[7], server)
  redis.call('DEL', KEYS[6])
end
local v = redis.call('INCR', KEYS[2])
local entry = v .. ':' .. ARGV[1] .. ':' .. ARGV[2]
redis.call('RPUSH', KEYS[3], entry)
redis.call('RPUSH', KEYS[6], entry)
redis.call('LTRIM', KEYS[6], -tonumber(ARGV[4]), -1)
local width = tonumber(ARGV[5])
local bucket = math.floor(tonumber(ARGV[1]) / width)
local cur = redis.call('HGET', KEYS[5], bucket) or '0000000000000000'
redis.call('HSET', KEYS[5], bucket, xorhex(cur, string.sub(redis.sha1hex(ARGV[2] .. '|' .. ARGV[1]), 1, 16)))
if v % 64 == 0 then
  -- Buckets that expired everywhere are never compared again.
  local expired = math.floor(tonumber(redis.call('TIME')[1]) / width) - 2
  for _, field in ipairs(redis.call('HKEYS', KEYS[5])) do
    if tonumber(field) < expired then redis.call('HDEL', KEYS[5], field) end
  end
end
return {v, epoch}`;

/** Where the blacklist's epoch records the server it began on (beside the epoch key). */
export function epochServerKey(keys: BlacklistKeys): string {
  return `${keys.epochKey}:server`;
}

export interface RevokeArgs {
  jti: string;
  /** Whole unix seconds (EXAT). */
  expireAt: number;
  /** The epoch to start if the source has none. */
  newEpoch: string;
  /** Entries kept in the change log. */
  logSize: number;
  /** Digest bucket width in seconds. */
  bucketS: number;
}

/**
 * Runs REVOKE_SCRIPT: the key, the version, the pending event, the log and the
 * digest change together. Undefined when the token was already revoked.
 */
export async function runRevokeScript(
  redis: RedisClient,
  keys: BlacklistKeys,
  args: RevokeArgs,
): Promise<{ version: number; epoch: string } | undefined> {
  const result = await redis.eval(REVOKE_SCRIPT, {
    keys: [
      keys.prefix + args.jti,
      keys.versionKey,
      keys.pendingKey,
      keys.epochKey,
      keys.digestKey,
      keys.logKey,
      epochServerKey(keys),
    ],
    arguments: [String(args.expireAt), args.jti, args.newEpoch, String(args.logSize), String(args.bucketS)],
  });
  if (!Array.isArray(result)) return undefined;
  const [version, epoch] = result as [number, string];
  return { version, epoch };
}
