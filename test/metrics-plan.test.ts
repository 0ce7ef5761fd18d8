import { describe, expect, it } from 'vitest';

import { type HistoryOffer, planHistory } from '../src/metrics/history-plan.js';

const DAY = 86_400;
const NOW = Date.UTC(2026, 10, 30, 12, 0, 0);
const vsphere: HistoryOffer = {
  source: 'PLATFORM',
  resolutions: [
    { resolutionSeconds: 300, retentionSeconds: DAY },
    { resolutionSeconds: 1800, retentionSeconds: 7 * DAY },
    { resolutionSeconds: 7200, retentionSeconds: 30 * DAY },
    { resolutionSeconds: 86_400, retentionSeconds: 365 * DAY },
  ],
};
const recorded: HistoryOffer = {
  source: 'RECORDED',
  raw: { resolutionSeconds: 60, retentionSeconds: DAY },
  rollup: { resolutionSeconds: 300, retentionSeconds: 30 * DAY },
};
const hoursAgo = (h: number) => NOW - h * 3_600_000;
const code = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return { code: (e as { extensions: { code: string } }).extensions.code, message: (e as Error).message };
  }
  return null;
};

describe('choosing the resolution of a history read', () => {
  it("picks vSphere's finest interval that reaches back far enough and fits the point cap", () => {
    expect(planHistory(vsphere, { from: hoursAgo(6), to: NOW }, null, 1440, NOW).resolutionSeconds).toBe(300);
    expect(planHistory(vsphere, { from: hoursAgo(72), to: NOW }, null, 1440, NOW).resolutionSeconds).toBe(1800);
    expect(planHistory(vsphere, { from: hoursAgo(24 * 20), to: NOW }, null, 1440, NOW).resolutionSeconds).toBe(7200);
    // Fits the day's 300 s points, but not within 100 points: the next interval that does.
    expect(planHistory(vsphere, { from: hoursAgo(20), to: NOW }, null, 100, NOW).resolutionSeconds).toBe(1800);
  });

  it('answers recorded raw samples while they reach back, then rollups that fit the cap', () => {
    expect(planHistory(recorded, { from: hoursAgo(2), to: NOW }, null, 1440, NOW)).toEqual({
      resolutionSeconds: 60,
      raw: true,
    });
    // Two days: past the raw retention, 5-minute rollups (577 points).
    expect(planHistory(recorded, { from: hoursAgo(48), to: NOW }, null, 1440, NOW)).toEqual({
      resolutionSeconds: 300,
      raw: false,
    });
    // 30 days within 1440 points: a multiple of 300 s.
    const month = planHistory(recorded, { from: hoursAgo(24 * 29), to: NOW }, null, 1440, NOW);
    expect(month.raw).toBe(false);
    expect(month.resolutionSeconds % 300).toBe(0);
    expect(Math.floor((29 * DAY) / month.resolutionSeconds) + 1).toBeLessThanOrEqual(1440);
    // Asked: any multiple of the rollup window.
    expect(planHistory(recorded, { from: hoursAgo(48), to: NOW }, 3600, 1440, NOW)).toEqual({
      resolutionSeconds: 3600,
      raw: false,
    });
  });

  it('refuses with a code and what the platform keeps', () => {
    const reversed = code(() => planHistory(vsphere, { from: NOW, to: hoursAgo(1) }, null, 1440, NOW));
    expect(reversed?.code).toBe('INVALID_METRICS_REQUEST');
    expect(reversed?.message).toContain('`from` is after `to`');

    const unknown = code(() => planHistory(vsphere, { from: hoursAgo(1), to: NOW }, 60, 1440, NOW));
    expect(unknown?.code).toBe('INVALID_METRICS_REQUEST');
    expect(unknown?.message).toContain('300 s (kept 1 d), 1800 s (kept 7 d)');

    const tooOld = code(() => planHistory(vsphere, { from: hoursAgo(48), to: NOW }, 300, 1440, NOW));
    expect(tooOld?.message).toContain('reaches back 1 d');

    const tooMany = code(() => planHistory(recorded, { from: hoursAgo(23), to: NOW }, 60, 100, NOW));
    expect(tooMany?.message).toContain('1381 points; at most 100');

    const rawTooOld = code(() => planHistory(recorded, { from: hoursAgo(30), to: NOW }, 60, 1440, NOW));
    expect(rawTooOld?.code).toBe('INVALID_METRICS_REQUEST');

    const beyond = code(() => planHistory(recorded, { from: hoursAgo(24 * 40), to: NOW }, null, 1440, NOW));
    expect(beyond?.message).toContain('No history of this platform covers that range');
    expect(code(() => planHistory(recorded, { from: hoursAgo(1), to: NOW }, 0, 1440, NOW))?.code).toBe(
      'INVALID_METRICS_REQUEST',
    );
  });
});
