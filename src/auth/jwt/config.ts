import { intVar, secretVar } from '../../config/env.ts';
import { CachecastError } from '../../errors.ts';
import { redactUrl } from '../../util/redact.ts';
import { MIN_SECRET_BYTES } from './keys.ts';
import type { JwtAlgorithm } from './keys.ts';
import { JWT_ALGORITHMS } from './keys.ts';

/**
 * Used when JWT_SECRET is unset, so that a local stack works out of the box;
 * services warn at start while it is in use (secretIsDevelopment).
 */
export const DEVELOPMENT_JWT_SECRET = 'cachecast-development-jwt-secret-do-not-use-in-production';

/** The auth and ext-authz services' JWT settings (CONTRACT.md, configuration). */
export interface JwtConfig {
  /** JWT_SECRET: the HS256 key shared by auth and ext-authz. */
  secret: string;
  /** True when JWT_SECRET was unset and the development secret is in use. */
  secretIsDevelopment: boolean;
  /** JWT_ISSUER */
  issuer: string;
  /** JWT_AUDIENCE */
  audience: string;
  /** JWT_ALGORITHMS: algorithms the verifier accepts. */
  algorithms: JwtAlgorithm[];
  /** JWT_JWKS_URL: public keys for RS256/ES256/EdDSA. */
  jwksUrl: string | undefined;
  /** JWT_CLOCK_SKEW_S */
  clockSkewS: number;
  /** ACCESS_TOKEN_TTL: lifetime of issued tokens, seconds. */
  accessTokenTtlS: number;
}

function fail(message: string): never {
  throw new CachecastError('CONFIG_INVALID', message);
}

/**
 * Reads the JWT variables. Errors name the variable and never echo
 * JWT_SECRET; a JWKS URL is shown without its password.
 */
export function loadJwtConfig(env: NodeJS.ProcessEnv = process.env): JwtConfig {
  // secretVar counts UTF-16 code units; each is at least one UTF-8 byte, so this also means 32 bytes.
  const configured = secretVar(env, 'JWT_SECRET', MIN_SECRET_BYTES);
  const issuer = env.JWT_ISSUER?.trim() || 'cachecast';
  const audience = env.JWT_AUDIENCE?.trim() || 'cachecast';

  const algorithms: JwtAlgorithm[] = [];
  for (const entry of (env.JWT_ALGORITHMS?.trim() || 'HS256').split(',')) {
    const name = entry.trim();
    if (!JWT_ALGORITHMS.includes(name as JwtAlgorithm)) {
      fail(
        `JWT_ALGORITHMS must be a comma-separated list of ${JWT_ALGORITHMS.join(', ')}; ` +
          `got ${JSON.stringify(name.slice(0, 32))}`,
      );
    }
    if (!algorithms.includes(name as JwtAlgorithm)) algorithms.push(name as JwtAlgorithm);
  }

  const rawUrl = env.JWT_JWKS_URL?.trim() || undefined;
  if (rawUrl !== undefined) {
    let parsed: URL | undefined;
    try {
      parsed = new URL(rawUrl);
    } catch {
      fail(`JWT_JWKS_URL is not a URL: ${redactUrl(rawUrl)}`);
    }
    // Whoever can answer this URL chooses the keys: plain http only inside the machine
    // (a sidecar, or tests).
    const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(parsed.hostname);
    if (parsed.protocol !== 'https:' && !(parsed.protocol === 'http:' && loopback)) {
      fail(
        `JWT_JWKS_URL must use https: (http: only for localhost), got ${parsed.protocol}//${parsed.hostname}`,
      );
    }
  }
  const asymmetric = algorithms.filter((alg) => alg !== 'HS256');
  if (asymmetric.length > 0 && rawUrl === undefined) {
    fail(`JWT_ALGORITHMS allows ${asymmetric.join(', ')}, which needs JWT_JWKS_URL for the public keys`);
  }
  if (asymmetric.length === 0 && rawUrl !== undefined) {
    fail('JWT_JWKS_URL is set but JWT_ALGORITHMS allows only HS256, which never uses it');
  }

  return {
    secret: configured ?? DEVELOPMENT_JWT_SECRET,
    secretIsDevelopment: configured === undefined,
    issuer,
    audience,
    algorithms,
    jwksUrl: rawUrl,
    clockSkewS: intVar(env, 'JWT_CLOCK_SKEW_S', 30, 0, 300),
    accessTokenTtlS: intVar(env, 'ACCESS_TOKEN_TTL', 900, 1, 86_400),
  };
}
