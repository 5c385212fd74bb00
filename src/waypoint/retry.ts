// Retries as Istio configures Envoy, with Envoy's retry budget so retries
// cannot multiply an outage: when most requests fail, at most a fifth more
// are sent, not two or three times the load. Pure: the clock and the random
// source are injected (docs/waypoint.md, "Retries", for the figures).
import type { Random } from './balance';
import { RESPONSE_FLAGS, type ResponseFlag } from './flags';
import { DEFAULT_RETRY_ON, type RetryCondition, type RetryPolicy } from './types';

/** Monotonic milliseconds, as performance.now. */
export type Clock = () => number;

/** Envoy's default base interval when a policy names none. */
export const DEFAULT_BACKOFF_BASE_MS = 25;
/** Envoy caps one wait at ten times the base interval by default. */
export const BACKOFF_CAP_FACTOR = 10;

/** Istio's default for every route without a retry policy of its own. */
export const ISTIO_DEFAULT_RETRY: RetryPolicy = Object.freeze({
  attempts: 2,
  on: DEFAULT_RETRY_ON,
  codes: Object.freeze<number[]>([]),
  backoffBaseMs: DEFAULT_BACKOFF_BASE_MS,
  backoffMaxMs: DEFAULT_BACKOFF_BASE_MS * BACKOFF_CAP_FACTOR,
});

/** gRPC status codes the default conditions name. */
export const GRPC_CANCELLED = 1;
export const GRPC_UNAVAILABLE = 14;

/** How one attempt ended. */
export type AttemptOutcome =
  /** An answer came: its status, and for gRPC the grpc-status (trailers or a trailers-only response). */
  | { kind: 'response'; status: number; grpcStatus?: number }
  /** No connection to the endpoint (TCP, TLS or HBONE set-up failed): nothing was sent. */
  | { kind: 'connect-failure' }
  /** HTTP/2 REFUSED_STREAM: the endpoint did not process the request. */
  | { kind: 'refused-stream' }
  /** Reset after the request went out: it may have been processed. */
  | { kind: 'reset' }
  /** timeouts.backendRequest elapsed for this attempt. */
  | { kind: 'backend-timeout' };

/** Whether the policy retries this outcome. */
export function retriable(policy: RetryPolicy, o: AttemptOutcome): boolean {
  const on = (c: RetryCondition): boolean => policy.on.includes(c);
  switch (o.kind) {
    case 'connect-failure':
      return on('connect-failure');
    case 'refused-stream':
      return on('refused-stream');
    case 'reset':
      return on('reset');
    case 'backend-timeout':
      // Gateway API: an attempt that reaches backendRequest is cancelled and the next one scheduled.
      return true;
    case 'response':
      if (o.grpcStatus === GRPC_UNAVAILABLE && on('unavailable')) return true;
      if (o.grpcStatus === GRPC_CANCELLED && on('cancelled')) return true;
      return on('retriable-status-codes') && policy.codes.includes(o.status);
  }
}

/**
 * Envoy's fully jittered exponential backoff: before retry n (1-based) a
 * wait drawn uniformly from [0, min(cap, base × (2ⁿ − 1))).
 */
export function backoffMs(policy: RetryPolicy, retry: number, random: Random): number {
  const multiplier = 2 ** Math.min(retry, 30) - 1;
  const upper = Math.min(policy.backoffMaxMs, policy.backoffBaseMs * multiplier);
  return Math.floor(random() * upper);
}

export interface BudgetOptions {
  /** Retries in flight allowed, as a percentage of requests in flight (Envoy: 20). */
  percent: number;
  /** Retries in flight always allowed, however few requests (Envoy: 3). */
  minConcurrency: number;
}

export const ENVOY_RETRY_BUDGET: BudgetOptions = Object.freeze({ percent: 20, minConcurrency: 3 });

/**
 * Envoy's retry budget for one destination: a retry may start while the
 * retries in flight stay under max(minConcurrency, percent % of the
 * requests in flight).
 */
export class RetryBudget {
  private requests = 0;
  private retries = 0;

  constructor(private readonly opts: BudgetOptions = ENVOY_RETRY_BUDGET) {}

  get activeRequests(): number {
    return this.requests;
  }
  get activeRetries(): number {
    return this.retries;
  }
  /** Retries in flight allowed now. */
  get limit(): number {
    return Math.max(this.opts.minConcurrency, Math.floor((this.requests * this.opts.percent) / 100));
  }

  /** Counts a request in flight; the returned function ends it (idempotent). */
  request(): () => void {
    this.requests++;
    return once(() => this.requests--);
  }

  /** A slot for one retry attempt, or undefined when the budget is spent; call the slot's function when the attempt ends. */
  retry(): (() => void) | undefined {
    if (this.retries >= this.limit) return undefined;
    this.retries++;
    return once(() => this.retries--);
  }
}

function once(f: () => void): () => void {
  let done = false;
  return () => {
    if (!done) {
      done = true;
      f();
    }
  };
}

export type RetryDecision =
  | { retry: true; delayMs: number }
  | {
      retry: false;
      /**
       * Why not: the outcome is final, the attempts or the budget are spent,
       * the destination's maxRetries are in flight, or the wait would pass the request deadline.
       */
      reason: 'final' | 'attempts' | 'budget' | 'overflow' | 'deadline';
      /** URX when retrying stopped on a retriable failure after every attempt. */
      flag?: ResponseFlag;
    };

/**
 * The retries of one request. next() is called with each attempt's
 * outcome; it releases the previous retry's budget slot and decides on the
 * next. finish() releases what is held when the request ends.
 */
export class RetryState {
  private retries = 0;
  private slot?: () => void;

  constructor(
    private readonly policy: RetryPolicy,
    private readonly budget: RetryBudget,
    private readonly clock: Clock,
    private readonly random: Random,
    /** Absolute clock time past which nothing may be attempted (timeouts.request), if any. */
    private readonly deadline?: number,
    /** The destination's circuit breaker of retries in flight (connectionPool.http.maxRetries), if any. */
    private readonly breaker?: () => (() => void) | undefined,
  ) {}

  /** Retries started so far. */
  get count(): number {
    return this.retries;
  }

  next(outcome: AttemptOutcome): RetryDecision {
    this.release();
    if (!retriable(this.policy, outcome)) return { retry: false, reason: 'final' };
    if (this.retries >= this.policy.attempts)
      return this.policy.attempts > 0 ? { retry: false, reason: 'attempts', flag: RESPONSE_FLAGS.URX } : { retry: false, reason: 'final' };
    const delayMs = backoffMs(this.policy, this.retries + 1, this.random);
    if (this.deadline !== undefined && this.clock() + delayMs >= this.deadline) return { retry: false, reason: 'deadline' };
    const slot = this.budget.retry();
    if (!slot) return { retry: false, reason: 'budget' };
    const held = this.breaker ? this.breaker() : undefined;
    if (this.breaker && !held) {
      slot();
      return { retry: false, reason: 'overflow' };
    }
    this.slot = () => {
      slot();
      held?.();
    };
    this.retries++;
    return { retry: true, delayMs };
  }

  finish(): void {
    this.release();
  }

  private release(): void {
    this.slot?.();
    this.slot = undefined;
  }
}
