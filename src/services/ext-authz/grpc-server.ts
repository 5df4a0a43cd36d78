import * as grpc from '@grpc/grpc-js';
import { INVALID_TOKEN_CHALLENGE } from '../../auth/jwt/bearer.ts';
import type { Authorizer } from './authorizer.ts';
import type { AuthzDecision } from './decision.ts';
import { authorizationService } from './envoy-protos.ts';

/** google.rpc.Code values Envoy reads from CheckResponse.status. */
const OK = 0;
const UNAUTHENTICATED = 16;
/** envoy.type.v3.StatusCode.Unauthorized */
const HTTP_UNAUTHORIZED = 401;

interface CheckRequest {
  attributes?: { request?: { http?: { headers?: Record<string, string> } } };
}

const header = (key: string, value: string) => ({ header: { key, value } });

export function checkResponse(decision: AuthzDecision): Record<string, unknown> {
  if (decision.allow) {
    return {
      status: { code: OK },
      ok_response: { headers: [header('x-user-id', decision.sub), header('x-auth-jti', decision.jti)] },
    };
  }
  return {
    // A deny is a successful RPC with a non-zero status; a failed RPC is an error at Envoy.
    status: { code: UNAUTHENTICATED, message: decision.reason },
    denied_response: {
      status: { code: HTTP_UNAUTHORIZED },
      headers: [
        header('www-authenticate', INVALID_TOKEN_CHALLENGE),
        header('content-type', 'application/json'),
      ],
      body: JSON.stringify({ error: decision.reason }),
    },
  };
}

/** `envoy.service.auth.v3.Authorization/Check`, answering exactly as the HTTP service does. */
export function createAuthzGrpcServer(authorizer: Authorizer): grpc.Server {
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 1024 * 1024 });
  server.addService(authorizationService().service, {
    Check(
      call: grpc.ServerUnaryCall<CheckRequest, unknown>,
      callback: grpc.sendUnaryData<Record<string, unknown>>,
    ) {
      // Envoy lower-cases header names in the check request.
      const authorization = call.request.attributes?.request?.http?.headers?.authorization;
      const decision = authorizer.check(authorization, 'grpc');
      if (decision instanceof Promise) {
        decision.then(
          (d) => callback(null, checkResponse(d)),
          () => callback(null, checkResponse({ allow: false, reason: 'revocation_unavailable' })),
        );
      } else {
        callback(null, checkResponse(decision));
      }
    },
  });
  return server;
}

export function bindGrpc(server: grpc.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, bound) =>
      err ? reject(err) : resolve(bound),
    );
  });
}

/** Finishes in-flight calls, then forces what is left after `graceMs`. */
export function shutdownGrpc(server: grpc.Server, graceMs = 5000): Promise<void> {
  return new Promise((resolve) => {
    const force = setTimeout(() => server.forceShutdown(), graceMs);
    force.unref();
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}
