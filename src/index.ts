// `cachecast`: the reusable library core (bus, replica, sources, outbox,
// cache-aside, observability). The Eco2 application's pieces (its datasets,
// their sources and key names, its cache keys) are `cachecast/eco2`
// (src/eco2.ts). Services and the CLI are not exported.
export { CachecastError, isCachecastError } from './errors.ts';
export type { ErrorCode } from './errors.ts';
export { systemClock } from './clock.ts';
export type { Clock, TimerHandle } from './clock.ts';

export type {
  Bus,
  BusHandler,
  BusMessage,
  BusState,
  PublishOptions,
  SubscribeOptions,
  Subscription,
} from './bus/bus.ts';
export { MemoryBroker, MemoryBus } from './bus/memory-bus.ts';
export type { MemoryBusOptions } from './bus/memory-bus.ts';
export { RabbitMQBus } from './amqp/rabbitmq-bus.ts';
export type { EventDelivery, RabbitMQBusOptions } from './amqp/rabbitmq-bus.ts';
export { normalizeRabbitMQBusOptions } from './amqp/rabbitmq-bus.ts';
export { parseAmqpUrls } from './amqp/url.ts';
export { normalizeAmqpConnectionOptions, openAmqpConnection } from './amqp/connection.ts';
export type { AmqpConnectionOptions } from './amqp/connection.ts';
export { WorkQueuePublisher } from './amqp/work-queue.ts';
export type { WorkQueuePublisherOptions } from './amqp/work-queue.ts';

export { encodeEvent, parseEventMessage, SIGNATURE_HEADER } from './events/codec.ts';
export type { Change, DecodedEvent, EventEnvelope } from './events/event.ts';

export { ReplicatedCache } from './replica/replicated-cache.ts';
export type { ReplicaState, ReplicaStats } from './replica/replicated-cache.ts';
export type { ReplicatedCacheOptions } from './replica/options.ts';
export type { Dataset, DegradedReadPolicy } from './replica/dataset.ts';

export type { SnapshotSource } from './replica/source.ts';
export { MemorySource } from './sources/memory-source.ts';
export { PostgresSource } from './sources/postgres-source.ts';
export type { PostgresSourceOptions } from './sources/postgres-source.ts';
export { RedisKeySource } from './sources/redis-source.ts';
export type { RedisKeySourceOptions } from './sources/redis-source.ts';

export { appendToOutbox } from './outbox/outbox.ts';
export { OutboxRelay } from './outbox/relay.ts';
export type { OutboxRelayOptions, RelayStats } from './outbox/relay.ts';
export { OutboxDrainer, normalizeDrainerOptions } from './outbox/drainer.ts';
export type { ConfirmMode, DrainerStats, OutboxDrainerOptions } from './outbox/drainer.ts';
export type { OutboxEntry, OutboxStore } from './outbox/store.ts';
export { PostgresOutboxStore } from './outbox/postgres-store.ts';
export { RedisOutboxStore } from './outbox/redis-store.ts';
export { Lifecycle } from './util/lifecycle.ts';
export type { LifecycleOptions, PartOptions } from './util/lifecycle.ts';
export { migrate } from './db/migrate.ts';
export { withTransaction } from './db/transaction.ts';

export { AdminServer } from './observe/admin-server.ts';
export type { AdminServerOptions } from './observe/admin-server.ts';
export { createMetricsRegistry } from './observe/metrics.ts';
export { createLogger, silentLogger } from './logger.ts';
export type { Logger, LogLevel } from './logger.ts';
export { loadCommonConfig } from './config/env.ts';
export type { CommonConfig } from './config/env.ts';

// Cache-aside (seed 003): Redis in front of a fallback, a circuit breaker, Slack alerts.
export { CacheAside } from './cache-aside/cache-aside.ts';
export type { CacheAsideStats } from './cache-aside/stats.ts';
export type { CacheAsideOptions, CacheAsideConfig } from './cache-aside/options.ts';
export { loadCacheAsideConfig } from './cache-aside/options.ts';
export { defineCacheKeys, buildCacheKey } from './cache-aside/cache-key.ts';
export type { CacheKeyDef, CacheKeySpec, KeyParams } from './cache-aside/cache-key.ts';
export { CircuitBreaker, COUNTED_ERROR_KINDS, DEFAULT_BREAKER_SETTINGS } from './cache-aside/breaker.ts';
export type {
  BreakerPermit,
  BreakerSettings,
  BreakerState,
  BreakerStats,
  BreakerTransition,
} from './cache-aside/breaker.ts';
export { classifyRedisError } from './cache-aside/redis-errors.ts';
export type { RedisErrorKind } from './cache-aside/redis-errors.ts';
export { CacheAlerts, logAlertSink, slackWebhookSink } from './cache-aside/alerts.ts';
export type { AlertMessage, AlertSink, AlertStats, CacheAlertsOptions } from './cache-aside/alerts.ts';
export { registerCacheAsideMetrics } from './cache-aside/metrics.ts';
