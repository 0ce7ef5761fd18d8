/** At most `max` holders at a time; the rest wait in arrival order (never refused). */
export class Semaphore {
  private active = 0;
  private peak = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly max: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active += 1;
    this.peak = Math.max(this.peak, this.active);
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active -= 1;
    }
  }

  /** Holders now, the most there ever were, and callers waiting: for tests and metrics. */
  load(): { active: number; peak: number; waiting: number } {
    return { active: this.active, peak: this.peak, waiting: this.waiting.length };
  }
}
