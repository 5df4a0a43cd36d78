import { pino } from 'pino';

/** The subset of pino's logger cachecast uses, so tests can pass a silent one. */
export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

/**
 * Structured JSON logs on stdout. Anything that could hold a secret is
 * redacted by path as a second line of defence; the first is never logging it.
 */
export function createLogger(options: { level?: LogLevel; name?: string } = {}): Logger {
  return pino({
    level: options.level ?? 'info',
    name: options.name ?? 'cachecast',
    redact: {
      paths: [
        'authorization',
        'token',
        'password',
        'secret',
        '*.authorization',
        '*.token',
        '*.password',
        '*.secret',
        'headers.authorization',
        'req.headers.authorization',
      ],
      censor: '[redacted]',
    },
  });
}

const noop = (): void => undefined;
export const silentLogger: Logger = {
  debug: noop,
  info: noop,
  warn: noop,
  error: noop,
  child: () => silentLogger,
};
