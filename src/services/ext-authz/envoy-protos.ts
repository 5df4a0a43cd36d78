import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** Envoy's own protos, as shipped (with every import) by @grpc/grpc-js-xds: none copied here. */
export function envoyProtoIncludeDirs(): string[] {
  const root = dirname(createRequire(import.meta.url).resolve('@grpc/grpc-js-xds/package.json'));
  return ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((dir) => join(root, 'deps', dir));
}

export const EXTERNAL_AUTH_PROTO = 'envoy/service/auth/v3/external_auth.proto';

let loaded: grpc.ServiceClientConstructor | undefined;

/**
 * `envoy.service.auth.v3.Authorization` as a grpc-js client, loaded once
 * (about 80 ms of parsing): what the tests call the server with, as Envoy
 * would. The server itself reads the wire format (check-wire.ts).
 */
export function authorizationService(): grpc.ServiceClientConstructor {
  if (!loaded) {
    const definition = protoLoader.loadSync(EXTERNAL_AUTH_PROTO, {
      keepCase: true,
      longs: String,
      enums: Number,
      defaults: false,
      oneofs: true,
      includeDirs: envoyProtoIncludeDirs(),
    });
    const root = grpc.loadPackageDefinition(definition) as unknown as {
      envoy: { service: { auth: { v3: { Authorization: grpc.ServiceClientConstructor } } } };
    };
    loaded = root.envoy.service.auth.v3.Authorization;
  }
  return loaded;
}
