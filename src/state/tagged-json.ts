/**
 * JSON that keeps Dates and Maps, for values that travel between gateway
 * instances through Redis (inventory records carry both). A Date becomes
 * `{"$d": epochMs}`, a Map `{"$m": [[k, v], ...]}`; no record of ours has
 * keys that start with "$".
 */
export function encodeTagged(value: unknown): string {
  return JSON.stringify(value, function replace(this: Record<string, unknown>, key: string, v: unknown) {
    // JSON.stringify calls Date's toJSON before the replacer sees it: look at the holder's own value.
    const raw = this[key];
    if (raw instanceof Date) return { $d: raw.getTime() };
    if (raw instanceof Map) return { $m: [...raw] };
    return v;
  });
}

export function decodeTagged<T>(text: string): T {
  return JSON.parse(text, (_key, v: unknown) => {
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
      const o = v as Record<string, unknown>;
      if (typeof o['$d'] === 'number' && Object.keys(o).length === 1) return new Date(o['$d']);
      if (Array.isArray(o['$m']) && Object.keys(o).length === 1) return new Map(o['$m'] as [unknown, unknown][]);
    }
    return v;
  }) as T;
}
