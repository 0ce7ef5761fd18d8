import { Kind, parse } from 'graphql';

/** The label of values past the cap, and of names not registered when only registered ones may run. */
export const OTHER_OPERATION = 'other';
/** The label of an operation without a name. */
export const ANONYMOUS_OPERATION = 'anonymous';
/** The label of a request refused before its operation was known (unauthenticated, unparsable, too large). */
export const UNKNOWN_OPERATION = 'unknown';

/** Distinct client-chosen names given a label of their own when no manifest bounds them. @default 200 */
export const DEFAULT_NAME_CAP = 200;

const MAX_LABEL_LENGTH = 64;

/**
 * Client-chosen values (operation names) as metric labels, in bounded
 * number: the `known` values (the trusted documents' operation names) always
 * have a label of their own; others get one each, first come, up to `cap`
 * (0 when only trusted documents may run), and share `other` after that.
 * Each is cut to [A-Za-z0-9_]{1,64}.
 */
export class BoundedLabels {
  private readonly seen = new Set<string>();

  constructor(
    private readonly known: ReadonlySet<string> = new Set(),
    private readonly cap: number = DEFAULT_NAME_CAP,
  ) {}

  label(value: string): string {
    const clean = value.replace(/[^A-Za-z0-9_]/g, '_').slice(0, MAX_LABEL_LENGTH) || '_';
    if (this.known.has(clean) || this.seen.has(clean)) return clean;
    if (this.seen.size >= this.cap) return OTHER_OPERATION;
    this.seen.add(clean);
    return clean;
  }

  /** The label of an operation whose document names it `name` (null: anonymous). */
  operation(name: string | null): string {
    return name === null || name === '' ? ANONYMOUS_OPERATION : this.label(name);
  }
}

/** The operation names of a set of documents (a trusted-documents manifest); a document that does not parse names none. */
export function operationNamesOf(documents: Iterable<string>): Set<string> {
  const names = new Set<string>();
  for (const text of documents) {
    let definitions;
    try {
      definitions = parse(text).definitions;
    } catch {
      // The manifest was checked when it was loaded; a document that does not parse can never run.
      continue;
    }
    for (const d of definitions) {
      if (d.kind === Kind.OPERATION_DEFINITION && d.name) names.add(d.name.value.slice(0, MAX_LABEL_LENGTH));
    }
  }
  return names;
}
