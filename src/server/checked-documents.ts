import type { DocumentNode, GraphQLError } from 'graphql';

/** A document as parsed and validated, or the errors that refuse it. */
export type CheckedDocument = { document: DocumentNode } | { errors: readonly GraphQLError[] };

export interface CheckedDocumentsOptions {
  /** Parses and validates one text; what it returns is kept and shared, so it must not depend on the request. */
  check(text: string): CheckedDocument;
  /** Distinct texts kept. @default 500 */
  maxEntries?: number;
  /** Characters of text kept in all (a parsed document takes about a hundred times its text). @default 262_144 // 256 KiB */
  maxChars?: number;
}

/**
 * Parses and validates each distinct document text once: a thousand
 * dashboards subscribing with the same text share one parsed document (about
 * 20 KB of tokens and nodes for a short subscription), as Apollo Server's
 * document store does for HTTP. The least recently used texts are dropped
 * first once either bound is passed; a text larger than the whole bound is
 * checked every time and never kept, so no client can flush the cache with
 * one document.
 */
export class CheckedDocuments {
  private readonly entries = new Map<string, CheckedDocument>();
  private chars = 0;
  private readonly maxEntries: number;
  private readonly maxChars: number;

  constructor(private readonly opts: CheckedDocumentsOptions) {
    this.maxEntries = opts.maxEntries ?? 500;
    this.maxChars = opts.maxChars ?? 256 * 1024;
  }

  get(text: string): CheckedDocument {
    const kept = this.entries.get(text);
    if (kept) {
      // Re-inserted so that Map order is least recently used first.
      this.entries.delete(text);
      this.entries.set(text, kept);
      return kept;
    }
    const checked = this.opts.check(text);
    if (text.length > this.maxChars) return checked;
    this.entries.set(text, checked);
    this.chars += text.length;
    while (this.entries.size > this.maxEntries || this.chars > this.maxChars) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
      this.chars -= oldest.length;
    }
    return checked;
  }

  /** Distinct texts kept now. */
  size(): number {
    return this.entries.size;
  }
}
