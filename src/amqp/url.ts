import { CachecastError } from '../errors.ts';
import { redactUrl } from '../util/redact.ts';

export interface AmqpEndpoints {
  /** The first URL: credentials, vhost and TLS come from it. */
  url: string;
  /** "hostname:port" of every node, tried round-robin on (re)connect. */
  hosts: string[];
}

/**
 * RABBITMQ_URL may list several comma-separated URLs (the nodes of a cluster).
 * They must agree on everything but host and port, since one connection's
 * credentials and vhost are used for whichever node answers.
 */
export function parseAmqpUrls(value: string | readonly string[]): AmqpEndpoints {
  const urls = (typeof value === 'string' ? value.split(',') : value).map((u) => u.trim()).filter(Boolean);
  if (urls.length === 0) throw new CachecastError('CONFIG_INVALID', 'RABBITMQ_URL is empty');
  const parsed = urls.map((raw) => {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw new CachecastError('CONFIG_INVALID', `RABBITMQ_URL is not a URL: ${redactUrl(raw)}`);
    }
    if (url.protocol !== 'amqp:' && url.protocol !== 'amqps:') {
      throw new CachecastError(
        'CONFIG_INVALID',
        `RABBITMQ_URL must use amqp: or amqps:, got ${url.protocol}`,
      );
    }
    if (!url.hostname)
      throw new CachecastError('CONFIG_INVALID', `RABBITMQ_URL has no host: ${redactUrl(raw)}`);
    return url;
  });
  const first = parsed[0]!;
  const identity = (u: URL): string => `${u.protocol}//${u.username}:${u.password}@/${u.pathname}${u.search}`;
  for (const url of parsed.slice(1)) {
    if (identity(url) !== identity(first)) {
      throw new CachecastError(
        'CONFIG_INVALID',
        'RABBITMQ_URL lists nodes with different schemes, credentials or vhosts; they must agree',
      );
    }
  }
  const defaultPort = first.protocol === 'amqps:' ? '5671' : '5672';
  return {
    url: urls[0]!,
    hosts: parsed.map((u) => `${u.hostname}:${u.port || defaultPort}`),
  };
}
