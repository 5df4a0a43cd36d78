import { Connection } from 'rabbitmq-client';
import type { AsyncMessage, Channel, Consumer, ConsumerProps, ConsumerStatus } from 'rabbitmq-client';

export { ConsumerStatus } from 'rabbitmq-client';
export type { AsyncMessage, Consumer } from 'rabbitmq-client';

/** A delivery whose body is the bytes the broker sent. */
export type RawMessage = Omit<AsyncMessage, 'body'> & { body: Buffer };

/**
 * Stands in for a content encoding while a delivery is decoded, then removed.
 * rabbitmq-client parses a body itself (JSON.parse for `application/json`,
 * toString for `text/plain`) when the message has no content encoding, and
 * has no option to skip it; it leaves the body a Buffer when one is set.
 */
const RAW_BODY = Symbol('cachecast raw body');

interface InternalChannel {
  _onHeader(frame: { fields: Record<string, unknown> }): void;
}

/**
 * `connection.createConsumer(props, handler)`, except that the handler always
 * gets the body as the raw Buffer the broker sent, never parsed by the client:
 * a size limit can then be checked before any parsing (a 16 MiB JSON body is
 * hundreds of MiB once parsed, and the client parsed it before any handler
 * could refuse it). Other properties are as sent.
 *
 * This reaches into one rabbitmq-client internal (Channel._onHeader, which
 * reads the content header before the body frames) on the consumer's own
 * channels only, and throws at once if it is not there (a changed client must
 * fail loudly, not parse quietly).
 */
export function createRawBodyConsumer(
  connection: Connection,
  props: ConsumerProps,
  handler: (msg: RawMessage) => Promise<ConsumerStatus | void> | ConsumerStatus | void,
): Consumer {
  // The consumer acquires its channel (again after each reconnect) through this view of the connection.
  const view = Object.create(connection) as Connection;
  view.acquire = async (options) => {
    const channel = await connection.acquire(options);
    keepBodiesRaw(channel);
    return channel;
  };
  return Connection.prototype.createConsumer.call(view, props, (msg) => {
    if ((msg.contentEncoding as unknown) === RAW_BODY) msg.contentEncoding = undefined;
    return handler(msg);
  });
}

function keepBodiesRaw(channel: Channel): void {
  const internal = channel as unknown as Partial<InternalChannel>;
  const onHeader = internal._onHeader;
  if (typeof onHeader !== 'function') {
    throw new Error('rabbitmq-client has no Channel._onHeader: raw bodies cannot be kept; check the upgrade');
  }
  internal._onHeader = (frame) => {
    if (!frame.fields.contentEncoding) frame.fields = { ...frame.fields, contentEncoding: RAW_BODY };
    onHeader.call(channel, frame);
  };
}
