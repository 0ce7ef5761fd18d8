import { type Logger, pino } from 'pino';

/** Structured JSON logs on stdout; secrets are redacted wherever they appear by name. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: 'virt-graph' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: ['password', '*.password', '*.*.password', 'authorization', '*.authorization', 'headers.authorization'],
      censor: '[redacted]',
    },
  });
}
