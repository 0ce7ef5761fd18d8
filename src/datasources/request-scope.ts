/**
 * Reads a provider shares between the listings of one request (vSphere's
 * folder tree serves hosts, clusters, datastores and networks alike). Made
 * per request, like the DataLoaders, so nothing outlives the request.
 */
export interface RequestScope {
  memo<T>(key: string, read: () => Promise<T>): Promise<T>;
}

export function createRequestScope(): RequestScope {
  const reads = new Map<string, Promise<unknown>>();
  return {
    memo<T>(key: string, read: () => Promise<T>): Promise<T> {
      let p = reads.get(key) as Promise<T> | undefined;
      if (!p) {
        p = read();
        reads.set(key, p);
        // A failed read is not kept: a later field may try again.
        p.catch(() => reads.delete(key));
      }
      return p;
    },
  };
}
