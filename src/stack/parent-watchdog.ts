// Preloaded into every child of `cachecast stack` (node --import): when the
// stack process dies without stopping its children (SIGKILL, OOM), the child
// is re-parented, notices within a second, and stops itself the way the stack
// would have stopped it (SIGTERM: drain, then exit). No orphan keeps the
// stack's ports or consumes its queues.
const parent = process.ppid;
const timer = setInterval(() => {
  if (process.ppid === parent) return;
  clearInterval(timer);
  process.kill(process.pid, 'SIGTERM');
}, 1000);
timer.unref();

export {};
