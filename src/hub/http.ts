/**
 * The one HTTP request of the Hub client: a bearer token when there is one, a few retries
 * on rate limits and server errors, and every failure turned into a one-line TuneError whose
 * wording the caller gives (what was being fetched, and what the user can do about it).
 */
import { TuneError } from "../errors.ts";

/** How a failed request is explained to the user, per kind of failure. */
export interface HubFailureText {
  /** The hub could not be reached at all (`why` is the network error's first line). */
  unreachable(origin: string, why: string): string;
  /** HTTP 401 or 403. */
  denied(status: number, origin: string): string;
  /** HTTP 404 (`path` is the URL's path). */
  notFound(path: string, origin: string): string;
  /** Any other non-success status. */
  other(status: number, url: string): string;
}

/** Options of `hubRequest`. */
export interface HubRequestOptions {
  token: string | null;
  /** Extra request headers (e.g. `range`). */
  headers?: Record<string, string>;
  /** Statuses that are answers, not failures (e.g. 416 for a finished ranged download). */
  accept?: readonly number[];
}

const RETRIES = 3;
const TIMEOUT_MS = 300_000;

/** GET `url`; returns an ok (or accepted) response, else throws the caller's one-line TuneError. */
export async function hubRequest(
  url: string,
  options: HubRequestOptions,
  failure: HubFailureText,
): Promise<Response> {
  const headers = new Headers({ "user-agent": "tune", ...options.headers });
  if (options.token) headers.set("authorization", `Bearer ${options.token}`);
  const origin = new URL(url).origin;
  let res: Response;
  for (let attempt = 0;; attempt++) {
    try {
      res = await fetch(url, { headers, signal: AbortSignal.timeout(TIMEOUT_MS) });
    } catch (e) {
      const why = String(e instanceof Error ? e.message : e).split("\n")[0];
      throw new TuneError(failure.unreachable(origin, why));
    }
    // Rate limits and transient server errors: wait 1, 2, 4 s and try again.
    if ((res.status === 429 || res.status >= 500) && attempt < RETRIES) {
      await res.body?.cancel();
      await new Promise((r) => setTimeout(r, 1000 * 2 ** attempt));
      continue;
    }
    break;
  }
  if (res.ok || options.accept?.includes(res.status)) return res;
  await res.body?.cancel();
  if (res.status === 401 || res.status === 403) {
    throw new TuneError(failure.denied(res.status, origin));
  }
  if (res.status === 404) throw new TuneError(failure.notFound(new URL(url).pathname, origin));
  throw new TuneError(failure.other(res.status, url));
}
