import { GraphQLError, parse } from 'graphql';
import { describe, expect, it } from 'vitest';

import { type CheckedDocument, CheckedDocuments } from '../src/server/checked-documents.js';

/** Parses like the gateway (a text with "bad" in it fails validation) and counts how often it was asked. */
function counting(opts: { maxEntries?: number; maxChars?: number } = {}) {
  const checks: string[] = [];
  const documents = new CheckedDocuments({
    ...opts,
    check: (text): CheckedDocument => {
      checks.push(text);
      return text.includes('bad') ? { errors: [new GraphQLError('refused')] } : { document: parse(text) };
    },
  });
  return { documents, checks };
}

describe('checked documents', () => {
  it('parses and validates a text once, and hands every caller the same document', () => {
    const { documents, checks } = counting();
    const a = documents.get('{ a }');
    const b = documents.get('{ a }');
    expect(a).toBe(b);
    expect(checks).toEqual(['{ a }']);
  });

  it('keeps a refusal too, so a client repeating a bad document is not parsed again', () => {
    const { documents, checks } = counting();
    const first = documents.get('{ bad }');
    expect('errors' in first && first.errors[0]?.message).toBe('refused');
    expect(documents.get('{ bad }')).toBe(first);
    expect(checks).toHaveLength(1);
  });

  it('drops the least recently used text beyond maxEntries', () => {
    const { documents, checks } = counting({ maxEntries: 2 });
    documents.get('{ a }');
    documents.get('{ b }');
    documents.get('{ a }'); // now { b } is the least recently used
    documents.get('{ c }');
    expect(documents.size()).toBe(2);
    documents.get('{ a }');
    documents.get('{ b }');
    expect(checks).toEqual(['{ a }', '{ b }', '{ c }', '{ b }']);
  });

  it('drops texts beyond maxChars, and never keeps a text larger than the whole bound', () => {
    const { documents, checks } = counting({ maxChars: 12 });
    documents.get('{ a }'); // 5
    documents.get('{ b }'); // 10
    documents.get('{ c }'); // 15: { a } goes
    expect(documents.size()).toBe(2);
    const large = '{ aVeryLongFieldName }';
    documents.get(large);
    documents.get(large);
    expect(documents.size()).toBe(2);
    documents.get('{ b }');
    documents.get('{ a }');
    expect(checks).toEqual(['{ a }', '{ b }', '{ c }', large, large, '{ a }']);
  });
});
