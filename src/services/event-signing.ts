import type { CommonConfig } from '../config/env.ts';
import type { Logger } from '../logger.ts';

/**
 * The one warning line a service that publishes or consumes events logs at
 * start while CACHE_EVENT_SECRET is unset: unsigned events stay accepted (the
 * seed's kombu publishers send them), but then anyone who can publish to the
 * broker can change every replica.
 */
export function warnIfEventsUnsigned(config: Pick<CommonConfig, 'eventSecret'>, logger: Logger): void {
  if (config.eventSecret !== undefined) return;
  logger.warn(
    {},
    'CACHE_EVENT_SECRET is not set: events are sent and accepted unsigned, so anyone who can publish to the broker can forge them; set it (the same value everywhere) to sign and require signatures',
  );
}
