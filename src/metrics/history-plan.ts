import { ErrorCode, GatewayError } from '../model/errors.js';
import type { HistoryResolution } from '../model/metrics.js';

/** Where a platform's history comes from, and what it keeps. */
export type HistoryOffer =
  | { source: 'PLATFORM'; resolutions: readonly HistoryResolution[] }
  | {
      source: 'RECORDED';
      /** The recording interval (raw samples), and how long raw samples are kept. */
      raw: HistoryResolution;
      /** Rollups: this length or any multiple of it, kept this long. */
      rollup: HistoryResolution;
    };

export interface HistoryRange {
  from: number;
  to: number;
}

/** The resolution a history read answers at, and whether it is the recorded raw samples. */
export interface HistoryPlan {
  resolutionSeconds: number;
  raw: boolean;
}

const describe = (r: HistoryResolution) => `${r.resolutionSeconds} s (kept ${humanDuration(r.retentionSeconds)})`;

function humanDuration(seconds: number): string {
  if (seconds % 86_400 === 0) return `${seconds / 86_400} d`;
  if (seconds % 3_600 === 0) return `${seconds / 3_600} h`;
  return `${seconds} s`;
}

function invalid(message: string, extensions: Record<string, unknown>): GatewayError {
  return new GatewayError(ErrorCode.INVALID_METRICS_REQUEST, message, extensions);
}

/**
 * Chooses (or checks) the resolution of a history read: the finest that
 * still reaches back to `from` and gives at most `maxPoints` points, or the
 * one asked for when the platform keeps it for that range. Every refusal
 * says what the platform keeps.
 */
export function planHistory(
  offer: HistoryOffer,
  range: HistoryRange,
  asked: number | null,
  maxPoints: number,
  now: number,
): HistoryPlan {
  if (range.from > range.to) {
    throw invalid('`from` is after `to`.', { from: new Date(range.from), to: new Date(range.to) });
  }
  const age = (now - range.from) / 1000;
  const points = (resolution: number) => Math.floor((range.to - range.from) / 1000 / resolution) + 1;
  // The candidates, finest first: fixed intervals (vSphere), or raw samples then rollups.
  const candidates: { r: HistoryResolution; raw: boolean }[] =
    offer.source === 'PLATFORM'
      ? [...offer.resolutions].sort((a, b) => a.resolutionSeconds - b.resolutionSeconds).map((r) => ({ r, raw: false }))
      : [{ r: offer.raw, raw: true }];
  const kept =
    offer.source === 'PLATFORM'
      ? offer.resolutions.map(describe)
      : [describe(offer.raw), `multiples of ${describe(offer.rollup)}`];
  const extensions = { kept, maxPoints };

  if (asked !== null) {
    if (!Number.isInteger(asked) || asked <= 0)
      throw invalid('`resolutionSeconds` must be a positive whole number.', extensions);
    let match = candidates.find((c) => c.r.resolutionSeconds === asked);
    if (!match && offer.source === 'RECORDED' && asked % offer.rollup.resolutionSeconds === 0) {
      match = { r: { resolutionSeconds: asked, retentionSeconds: offer.rollup.retentionSeconds }, raw: false };
    }
    if (!match) {
      throw invalid(`This platform keeps no history at ${asked} s; it keeps ${kept.join(', ')}.`, extensions);
    }
    if (age > match.r.retentionSeconds) {
      throw invalid(
        `History at ${asked} s reaches back ${humanDuration(match.r.retentionSeconds)}; \`from\` is older. This platform keeps ${kept.join(', ')}.`,
        extensions,
      );
    }
    if (points(asked) > maxPoints) {
      throw invalid(
        `The range at ${asked} s has ${points(asked)} points; at most ${maxPoints} are served. Narrow the range or ask a coarser resolution.`,
        extensions,
      );
    }
    return { resolutionSeconds: asked, raw: match.raw };
  }

  for (const c of candidates) {
    if (age <= c.r.retentionSeconds && points(c.r.resolutionSeconds) <= maxPoints) {
      return { resolutionSeconds: c.r.resolutionSeconds, raw: c.raw };
    }
  }
  if (offer.source === 'RECORDED' && age <= offer.rollup.retentionSeconds) {
    const step = offer.rollup.resolutionSeconds;
    const needed = Math.ceil((range.to - range.from) / 1000 / Math.max(1, maxPoints - 1) / step) * step;
    return { resolutionSeconds: Math.max(step, needed), raw: false };
  }
  throw invalid(
    `No history of this platform covers that range within ${maxPoints} points; it keeps ${kept.join(', ')}.`,
    extensions,
  );
}
