// A RabbitMQ vhost of their own for the tests and the benchmarks, so they
// neither disturb nor read a stack running on the same broker (the contract's
// exchange and queue names are fixed). Made with rabbitmqctl, as the broker's
// local administrator; where that is not possible the caller keeps vhost /.
import { spawnSync } from 'node:child_process';

/**
 * `amqp://guest:guest@127.0.0.1:5672/<name>` once the vhost exists with
 * guest's permissions, or undefined (with the reason on stderr).
 */
export function ensureVhost(name) {
  const ctl = (...args) =>
    spawnSync('rabbitmqctl', ['-q', ...args], { encoding: 'utf8', timeout: 60_000, stdio: 'pipe' });
  const listed = ctl('list_vhosts');
  const exists = listed.status === 0 && listed.stdout.split('\n').some((l) => l.trim() === name);
  // Permissions every time: a run that created the vhost may have died before granting them.
  const ok =
    (exists || ctl('add_vhost', name).status === 0) &&
    ctl('set_permissions', '-p', name, 'guest', '.*', '.*', '.*').status === 0;
  if (ok) return `amqp://guest:guest@127.0.0.1:5672/${name}`;
  console.error(`could not create the RabbitMQ vhost ${name} with rabbitmqctl; using vhost /`);
  return undefined;
}
