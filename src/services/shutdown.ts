import { describeError } from '../errors.ts';
import type { Logger } from '../observe/logger.ts';

/**
 * Returns an idempotent close(): runs `first`, then each closer in order
 * (public server first, so no new work arrives; connections last), logging
 * and continuing past failures so one stuck part cannot keep the rest open.
 */
export function closeInOrder(
  closers: ReadonlyArray<readonly [string, () => Promise<void>]>,
  logger: Logger,
  first?: () => void,
): () => Promise<void> {
  let closing: Promise<void> | undefined;
  return () => {
    closing ??= (async () => {
      first?.();
      for (const [name, close] of closers) {
        try {
          await close();
        } catch (err) {
          logger.warn({ part: name, err: describeError(err) }, 'close failed');
        }
      }
    })();
    return closing;
  };
}
