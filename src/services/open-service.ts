import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { Lifecycle } from '../util/lifecycle.ts';

/** A service's parts: `add()` each in start order, they close in reverse. */
export type ServiceParts = Pick<Lifecycle, 'add' | 'addOuter'>;

/**
 * Runs a service's start-up, `open`, which adds to `parts` each part it opens,
 * in start order (the admin port with `addOuter`: probes answer until the
 * end). If `open` throws, what it had opened is closed and the error
 * rethrown; otherwise the service it describes gets an idempotent close()
 * that runs `onClose` (e.g. turning readiness off), then closes the parts in
 * reverse, logging and continuing past a part that fails or hangs.
 */
export async function openService<T extends { name: string; endpoints: Record<string, string> }>(
  logger: Logger,
  open: (parts: ServiceParts) => Promise<{ service: T; onClose?: () => void }>,
): Promise<T & { close(): Promise<void> }> {
  const lifecycle = new Lifecycle({
    onCloseError: (part, err) => logger.warn({ part, err: describeError(err) }, 'close failed'),
  });
  try {
    const { service, onClose } = await open(lifecycle);
    let closing: Promise<void> | undefined;
    const close = (): Promise<void> => {
      closing ??= (async () => {
        onClose?.();
        await lifecycle.close();
      })();
      return closing;
    };
    return { ...service, close };
  } catch (err) {
    await lifecycle.close();
    throw err;
  }
}
