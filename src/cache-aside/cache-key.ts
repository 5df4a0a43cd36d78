import { CachecastError, OptionTypeError } from '../errors.ts';
import { integerRangeOption } from '../options.ts';
import { isWellFormedText } from '../util/text.ts';

/**
 * Cache keys are declared once (the seed's `CacheKey` enum) and every Redis
 * key is built from a declaration, never by hand: a name, a template whose
 * `{param}` placeholders are typed, a TTL and a version. Bumping the version
 * (a change of the cached value's shape) moves every reader to new keys at
 * once; the old ones expire with their TTL.
 */
export interface CacheKeySpec<T extends string = string> {
  /** e.g. `users:{user_id}:characters`; each `{name}` is a parameter. */
  template: T;
  /** Lifetime in Redis (the seed's `cache_enum.timeout`), milliseconds. */
  ttlMs: number;
  /** Part of the key: bump it when the cached value's shape changes. @default 1 */
  version?: number;
  /**
   * Lifetime in this process's in-memory tier, milliseconds; 0 = no in-process
   * tier for this key. Other instances never see this process's invalidations
   * of it, so keep it short, or 0 for data other instances change.
   * @default 0
   */
  localTtlMs?: number;
}

/** One declared key: what `getWithFallback`, `wrap` and `invalidate` take. */
export interface CacheKeyDef<T extends string = string> {
  /** The declaration's name (`USER_CHARACTERS`): alerts and statistics use it. */
  readonly name: string;
  readonly template: T;
  readonly ttlMs: number;
  readonly version: number;
  readonly localTtlMs: number;
  /** The template's parameters, in order. */
  readonly params: readonly string[];
}

type ParamNames<T extends string> = T extends `${string}{${infer P}}${infer Rest}`
  ? P | ParamNames<Rest>
  : never;

/** The parameters a template needs, e.g. `{ user_id: string | number }`; `{}` for none. */
export type KeyParams<T extends string> = [ParamNames<T>] extends [never]
  ? Record<string, never>
  : { readonly [P in ParamNames<T>]: string | number };

const NAME = /^[A-Z][A-Z0-9_]*$/;
const PARAM = /\{([^{}]*)\}/g;
const PARAM_NAME = /^[a-z_][a-z0-9_]*$/;
/** A parameter value's maximum length (after encoding), so keys stay small. */
export const MAX_PARAM_LENGTH = 2048;

function parseTemplate(name: string, template: string): string[] {
  if (typeof template !== 'string' || template.length === 0 || template.length > 200) {
    throw new OptionTypeError(`${name}: template must be a non-empty string of at most 200 characters`);
  }
  const params: string[] = [];
  for (const match of template.matchAll(PARAM)) {
    const param = match[1]!;
    if (!PARAM_NAME.test(param)) throw new OptionTypeError(`${name}: bad parameter name {${param}}`);
    if (params.includes(param)) throw new OptionTypeError(`${name}: parameter {${param}} appears twice`);
    params.push(param);
  }
  if (/[{}]/.test(template.replace(PARAM, '')))
    throw new OptionTypeError(`${name}: unbalanced braces in template`);
  if (/\s/.test(template)) throw new OptionTypeError(`${name}: template must not contain whitespace`);
  return params;
}

/**
 * Declares the project's cache keys, the TypeScript form of the seed's
 * `CacheKey` enum: each property's name becomes the key's name. Checks every
 * declaration at once (names, templates, TTLs, no two templates alike), so a
 * mistake fails at startup, not at the first request.
 *
 * ```ts
 * export const CacheKey = defineCacheKeys({
 *   USER_CHARACTERS: { template: 'users:{user_id}:characters', ttlMs: 300_000, version: 1 },
 * });
 * await cache.getWithFallback(CacheKey.USER_CHARACTERS, { user_id: id }, () => load(id));
 * ```
 */
export function defineCacheKeys<const S extends Record<string, CacheKeySpec>>(
  specs: S,
): { readonly [K in keyof S]: CacheKeyDef<S[K]['template']> } {
  const out: Record<string, CacheKeyDef> = {};
  const templates = new Map<string, string>();
  for (const [name, spec] of Object.entries(specs)) {
    if (!NAME.test(name))
      throw new OptionTypeError(`cache key name ${JSON.stringify(name)} must be UPPER_SNAKE_CASE`);
    const params = parseTemplate(name, spec.template);
    const version = integerRangeOption(`${name}: version`, spec.version, 1, 1);
    // Two declarations whose templates differ only by parameter names would build the same keys.
    const shape = `${version}:${spec.template.replace(PARAM, '{}')}`;
    const other = templates.get(shape);
    if (other) throw new OptionTypeError(`${name} and ${other} would build the same keys`);
    templates.set(shape, name);
    out[name] = Object.freeze({
      name,
      template: spec.template,
      ttlMs: integerRangeOption(`${name}: ttlMs`, spec.ttlMs, undefined, 1),
      version,
      localTtlMs: integerRangeOption(`${name}: localTtlMs`, spec.localTtlMs, 0, 0),
      params: Object.freeze(params),
    });
  }
  return Object.freeze(out) as { readonly [K in keyof S]: CacheKeyDef<S[K]['template']> };
}

/**
 * The Redis key for a declaration and its parameters:
 * `<prefix>:<version>:<template with each parameter URI-encoded>` (Django's
 * `KEY_PREFIX:VERSION:key` layout, as in the seed). Encoding keeps a
 * parameter from forging another key (`u:1` cannot become a second segment).
 * Throws `CACHE_BAD_KEY` for a missing, unknown, empty or oversized parameter,
 * and for a string that is not well-formed UTF-16 (a lone surrogate, which
 * has no UTF-8 form: `encodeURIComponent` would throw a `URIError`).
 */
export function buildCacheKey<T extends string>(
  prefix: string,
  key: CacheKeyDef<T>,
  params: KeyParams<T>,
): string {
  const given = (params ?? {}) as Record<string, unknown>;
  for (const name of Object.keys(given)) {
    if (!key.params.includes(name)) {
      throw new CachecastError('CACHE_BAD_KEY', `${key.name} has no parameter ${JSON.stringify(name)}`);
    }
  }
  let filled = key.template as string;
  if (key.params.length > 0) {
    filled = filled.replace(PARAM, (_m, name: string) => {
      const value = given[name];
      if (typeof value !== 'string' && (typeof value !== 'number' || !Number.isFinite(value))) {
        throw new CachecastError('CACHE_BAD_KEY', `${key.name} needs a string or number for {${name}}`);
      }
      const text = String(value);
      if (!isWellFormedText(text)) {
        throw new CachecastError('CACHE_BAD_KEY', `${key.name}: {${name}} holds a lone UTF-16 surrogate`);
      }
      const encoded = encodeURIComponent(text);
      if (encoded.length === 0 || encoded.length > MAX_PARAM_LENGTH) {
        throw new CachecastError(
          'CACHE_BAD_KEY',
          `${key.name}: {${name}} must be 1 to ${MAX_PARAM_LENGTH} characters once encoded`,
        );
      }
      return encoded;
    });
  }
  return `${prefix}:${key.version}:${filled}`;
}
