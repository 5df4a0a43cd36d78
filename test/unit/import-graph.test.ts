import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative, sep } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

// docs/architecture.md: imports only point down, and no files import each other in a circle.
const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(path);
    return e.name.endsWith('.ts') ? [path] : [];
  });
}

/** File (relative to src/) -> the files of src/ it imports, `import type`, `export ... from`, bare and dynamic imports included. */
function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const pattern = /(?:import|export)\s[^'"]*?from\s+'(\.[^']+)'|import\s*\(?\s*'(\.[^']+)'/g;
  for (const file of sourceFiles(SRC)) {
    const text = readFileSync(file, 'utf8');
    const deps = new Set<string>();
    for (const m of text.matchAll(pattern)) {
      const target = normalize(join(dirname(file), m[1] ?? m[2]!));
      if (target.startsWith(SRC)) deps.add(relative(SRC, target).split(sep).join('/'));
    }
    graph.set(relative(SRC, file).split(sep).join('/'), [...deps]);
  }
  return graph;
}

/** The top-level folder (or file, without .ts) of a path under src/. */
const area = (path: string): string => path.split('/')[0]!.replace(/\.ts$/, '');

describe('import graph of src/', () => {
  const graph = importGraph();

  it('has no circle of files importing each other', () => {
    const circles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const stack: string[] = [];
    const visit = (file: string): void => {
      state.set(file, 'open');
      stack.push(file);
      for (const dep of graph.get(file) ?? []) {
        if (state.get(dep) === 'open') circles.push([...stack.slice(stack.indexOf(dep)), dep].join(' -> '));
        else if (!state.has(dep)) visit(dep);
      }
      stack.pop();
      state.set(file, 'done');
    };
    for (const file of graph.keys()) if (!state.has(file)) visit(file);
    assert.deepEqual(circles, []);
  });

  it('never imports upward', () => {
    const base = new Set(['errors', 'clock', 'logger', 'options', 'events', 'util', 'http', 'db', 'redis']);
    // Who may import each upper area; an area not named here is below all of them.
    const importers: Record<string, readonly string[]> = {
      index: [],
      eco2: [],
      cli: [],
      stack: ['cli'],
      services: ['stack', 'cli', 'eco2'],
      observe: ['services', 'stack', 'cli', 'index'],
      'cache-aside': ['services', 'stack', 'cli', 'index'],
    };
    const replicaMayNotImport = new Set(['datasets', 'sources', 'outbox', 'catalog', 'auth', 'config']);
    const upward: string[] = [];
    for (const [file, deps] of graph) {
      const from = area(file);
      for (const dep of deps) {
        const to = area(dep);
        if (to === from) continue;
        const allowed = importers[to];
        const wrong =
          (allowed !== undefined && !allowed.includes(from)) ||
          (base.has(from) && !base.has(to)) ||
          (from === 'replica' && (replicaMayNotImport.has(to) || allowed !== undefined));
        if (wrong) upward.push(`${file} -> ${dep}`);
      }
    }
    assert.deepEqual(upward, []);
  });
});
