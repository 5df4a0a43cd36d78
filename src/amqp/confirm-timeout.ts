/**
 * A publish's confirm, bounded: `work` (a confirm-mode publish) resolves or
 * rejects as it does, unless `ms` pass first; then the error `timeout()`
 * builds. The publish itself is not cancelled (the client cannot): callers
 * that must drain on close keep track of `work` themselves.
 */
export function withConfirmTimeout<T>(work: Promise<T>, ms: number, timeout: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(timeout()), ms);
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
