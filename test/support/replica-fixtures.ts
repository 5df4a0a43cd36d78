import { MemoryBroker, MemoryBus } from '../../src/bus/memory-bus.ts';
import type { Bus } from '../../src/bus/bus.ts';
import type { Character } from '../../src/datasets/catalog.ts';
import { encodeEvent } from '../../src/events/codec.ts';

export function character(
  code: string,
  match_label = `label-${code}`,
  extra: Partial<Character> = {},
): Character {
  return {
    id: `id-${code}`,
    code,
    name: `Name ${code}`,
    match_label,
    type_label: 'type',
    dialog: 'hello',
    is_default: false,
    ...extra,
  };
}

/** Publishes an event the way cachecast publishers do. */
export async function publishEvent(
  bus: Bus,
  topic: string,
  payload: Record<string, unknown>,
  envelope: { version?: number; published_at?: number } = {},
  secret?: string,
): Promise<void> {
  const { body, headers } = encodeEvent(payload, envelope, secret);
  await bus.publish(topic, body, { headers });
}

export function memoryPair(): { broker: MemoryBroker; bus: MemoryBus; publisher: MemoryBus } {
  const broker = new MemoryBroker();
  return { broker, bus: new MemoryBus(broker), publisher: new MemoryBus(broker) };
}
