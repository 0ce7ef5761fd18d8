/**
 * What the `virt-graph` commands exit with, so scripts and service managers
 * can tell a typo from a bad file from an unreachable vCenter without
 * parsing messages. Documented in the README; changing one breaks callers.
 */
export const ExitCode = {
  /** Done; for `serve`, stopped by a signal after draining. */
  OK: 0,
  /** Anything else went wrong: an unexpected error, a shutdown that failed or was cut by a repeated signal, `print-schema --check` finding the file out of date. */
  FAILURE: 1,
  /** The command line: an unknown command or option, a missing or extra argument. */
  USAGE: 2,
  /** The configuration: a file that cannot be read or is invalid, a bad PORT/HOST/LOG_LEVEL, a secret that cannot be decrypted. */
  CONFIG: 3,
  /** `check-config` / `test-connection`: a platform could not be reached, refused the credentials or did not answer in time. */
  PLATFORM: 4,
  /** `serve`: the address cannot be listened on (in use, not permitted, not on this machine). */
  LISTEN: 5,
} as const;

export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** A command line that cannot be run as given; the message is one line, the usage follows it. */
export class UsageError extends Error {
  constructor(
    message: string,
    /** The usage text to print after the message. */
    readonly usage: string,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

/** A failure already worded for the operator, with the exit code it stands for. */
export class CommandFailure extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
  ) {
    super(message);
    this.name = 'CommandFailure';
  }
}
