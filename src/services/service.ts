/** A running service: `cachecast serve <name>` starts one and closes it on SIGTERM/SIGINT. */
export interface RunningService {
  readonly name: string;
  /** Where it listens, for the startup line (no secrets). */
  readonly endpoints: Record<string, string>;
  /** Stops taking work, drains what is in flight, closes every connection. Idempotent. */
  close(): Promise<void>;
}

export type ServiceStarter = (env: NodeJS.ProcessEnv) => Promise<RunningService>;
