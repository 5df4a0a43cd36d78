import { startAuth } from '../../src/services/auth/main.ts';
import { startExtAuthz } from '../../src/services/ext-authz/main.ts';
import type { RunningService } from '../../src/services/service.ts';
import { DATABASE_URL, RABBITMQ_URL, REDIS_URL } from './env.ts';
import { waitFor } from './wait.ts';

export const TEST_JWT_SECRET = 'test-secret-0123456789-abcdefghijklmnopqrstuvwxyz';
/** ADMIN_PORT_TOKEN of the services tests start: the admin port's detail routes need it. */
export const TEST_ADMIN_PORT_TOKEN = 'test-admin-port-token-0123456789';

export interface FleetMember {
  service: RunningService;
  http: string;
  admin: string;
  grpc?: string;
}

function member(service: RunningService): FleetMember {
  const local = (url: string) => url.replace('0.0.0.0', '127.0.0.1');
  return {
    service,
    http: local(service.endpoints.http!),
    admin: local(service.endpoints.admin!),
    ...(service.endpoints.grpc ? { grpc: local(service.endpoints.grpc) } : {}),
  };
}

/** Environment for an in-process service on free ports. */
export function serviceEnv(overrides: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    HOST: '127.0.0.1',
    PORT: '0',
    ADMIN_PORT: '0',
    GRPC_PORT: '0',
    RABBITMQ_URL,
    REDIS_URL,
    DATABASE_URL,
    JWT_SECRET: TEST_JWT_SECRET,
    ADMIN_PORT_TOKEN: TEST_ADMIN_PORT_TOKEN,
    LOG_LEVEL: 'silent',
    ...overrides,
  };
}

export async function startAuthMember(env: NodeJS.ProcessEnv = {}): Promise<FleetMember> {
  return member(await startAuth(serviceEnv(env)));
}

export async function startAuthzMember(env: NodeJS.ProcessEnv = {}): Promise<FleetMember> {
  return member(await startExtAuthz(serviceEnv(env)));
}

export async function login(auth: FleetMember, userId: string): Promise<string> {
  const res = await fetch(`${auth.http}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user_id: userId }),
  });
  if (res.status !== 200) throw new Error(`login: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { access_token: string }).access_token;
}

export async function logout(auth: FleetMember, token: string): Promise<number> {
  const res = await fetch(`${auth.http}/api/v1/auth/logout`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}` },
  });
  await res.arrayBuffer();
  return res.status;
}

export interface CheckResult {
  status: number;
  error?: string;
  userId?: string | null;
  jti?: string | null;
  challenge?: string | null;
}

export async function check(
  authz: FleetMember,
  token: string | undefined,
  init: RequestInit = {},
): Promise<CheckResult> {
  const headers = new Headers(init.headers);
  if (token !== undefined) headers.set('authorization', `Bearer ${token}`);
  const res = await fetch(`${authz.http}/some/api/path?q=1`, { ...init, headers });
  const text = await res.text();
  const result: CheckResult = {
    status: res.status,
    userId: res.headers.get('x-user-id'),
    jti: res.headers.get('x-auth-jti'),
    challenge: res.headers.get('www-authenticate'),
  };
  if (text) result.error = (JSON.parse(text) as { error: string }).error;
  return result;
}

/** A detail route of a member's admin port (/decisions, /revocations), with the admin-port token. */
export async function adminJson<T>(member: FleetMember, path: string): Promise<T> {
  const res = await fetch(`${member.admin}${path}`, {
    headers: { authorization: `Bearer ${TEST_ADMIN_PORT_TOKEN}` },
  });
  if (res.status !== 200) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

export async function replicaState(authz: FleetMember): Promise<string | undefined> {
  const res = await fetch(`${authz.admin}/replicas`);
  const replicas = (await res.json()) as Array<{ dataset: string; state: string }>;
  return replicas.find((r) => r.dataset === 'blacklist')?.state;
}

/** Polls until the instance refuses `token`; returns the ms it took. */
export async function waitRefused(authz: FleetMember, token: string, timeoutMs = 5000): Promise<number> {
  const started = performance.now();
  await waitFor(async () => (await check(authz, token)).status === 401, 'token refused', timeoutMs, 1);
  return performance.now() - started;
}
