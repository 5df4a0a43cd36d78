import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

/** hostname (the pod name on Kubernetes) plus a random suffix: unique per process. */
export function newInstanceId(): string {
  const host =
    hostname()
      .replace(/[^A-Za-z0-9_.-]/g, '-')
      .slice(0, 63) || 'host';
  return `${host}-${randomBytes(4).toString('hex')}`;
}
