// Resolvers answer from the live inventory without a promise when they can:
// graphql-js completes a plain value at once, while every promise costs a
// microtask turn and garbage that, over a 10,000-VM listing, is most of the
// listing's time. Reads that go to a platform stay promises.

export type Awaitable<T> = T | Promise<T>;

/** Applies `f` now to a value, or later to a promise's (not named `then`: a module exporting `then` is a thenable). */
export function andThen<T, U>(value: Awaitable<T>, f: (v: T) => Awaitable<U>): Awaitable<U> {
  return value instanceof Promise ? value.then(f) : f(value);
}

/** The values, as an array now when none is a promise. */
export function all<T>(values: readonly Awaitable<T>[]): Awaitable<T[]> {
  return values.some((v) => v instanceof Promise) ? Promise.all(values) : (values as T[]);
}
