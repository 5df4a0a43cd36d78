import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** Binds a node:http server; resolves with the bound port (`0` picks a free one), rejects on EADDRINUSE. */
export function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}
