export { TcpProxy } from '../../src/util/tcp-proxy.ts';
