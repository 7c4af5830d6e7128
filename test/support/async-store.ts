import type { SqliteBuildStore } from '../../src/coordinator/sqlite-build-store.js';
import type { BuildStore, StoreWrite } from '../../src/coordinator/store.js';

/**
 * The SQLite store seen as an asynchronous one (as PostgreSQL is): its
 * commits go through `commit`, and it has no synchronous path.
 */
export function asAsyncStore(
  store: SqliteBuildStore,
  commit: (writes: readonly StoreWrite[]) => Promise<void>,
): BuildStore {
  return new Proxy(store, {
    get(target, key) {
      if (key === 'commit') return commit;
      if (key === 'commitSync') return undefined;
      const value: unknown = Reflect.get(target, key);
      return typeof value === 'function' ? (value as () => unknown).bind(target) : value;
    },
  }) as BuildStore;
}
