import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';

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

/** How each part a service opened is closed, in the order closeInOrder runs them. */
export type Closers = Array<[string, () => Promise<void>]>;

/**
 * Runs a service's start-up, `open`, which registers in `closers` how each
 * part it opens is closed. If `open` throws, what it had opened is closed and
 * the error rethrown; otherwise the service it describes gets a close() over
 * the same closers, with `onClose` first (e.g. turning readiness off).
 */
export async function openService<T extends { name: string; endpoints: Record<string, string> }>(
  closers: Closers,
  logger: Logger,
  open: () => Promise<{ service: T; onClose?: () => void }>,
): Promise<T & { close(): Promise<void> }> {
  try {
    const { service, onClose } = await open();
    return { ...service, close: closeInOrder(closers, logger, onClose) };
  } catch (err) {
    await closeInOrder(closers, logger)();
    throw err;
  }
}
