import { GraphQLScalarType, Kind } from 'graphql';

import { ErrorCode, GatewayError } from '../model/errors.js';

export const DateTime = new GraphQLScalarType<Date, string>({
  name: 'DateTime',
  description: 'An ISO 8601 timestamp in UTC.',
  serialize(value) {
    const date = value instanceof Date ? value : new Date(String(value));
    if (Number.isNaN(date.getTime())) throw new TypeError(`DateTime cannot represent ${String(value)}`);
    return date.toISOString();
  },
  parseValue: parseDate,
  parseLiteral(ast) {
    return parseDate(ast.kind === Kind.STRING ? ast.value : undefined);
  },
});

function parseDate(value: unknown): Date {
  const date = typeof value === 'string' ? new Date(value) : new Date(Number.NaN);
  if (Number.isNaN(date.getTime())) {
    throw new GatewayError(ErrorCode.BAD_USER_INPUT, 'DateTime must be an ISO 8601 timestamp string.');
  }
  return date;
}

const SAFE_INT_MESSAGE = 'SafeInt must be an integer within ±(2^53 − 1).';

export const SafeInt = new GraphQLScalarType<number, number>({
  name: 'SafeInt',
  description: 'An integer within ±(2^53 − 1).',
  serialize(value) {
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
      throw new TypeError(`SafeInt cannot represent ${String(value)}`);
    }
    return value;
  },
  parseValue(value) {
    if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
      throw new GatewayError(ErrorCode.BAD_USER_INPUT, SAFE_INT_MESSAGE);
    }
    return value;
  },
  parseLiteral(ast) {
    const n = ast.kind === Kind.INT ? Number(ast.value) : Number.NaN;
    if (!Number.isSafeInteger(n)) throw new GatewayError(ErrorCode.BAD_USER_INPUT, SAFE_INT_MESSAGE);
    return n;
  },
});
