/** The q-quantile (0..1) of `values` by nearest rank; NaN when empty. */
export function quantile(values: number[], q: number): number {
  return rank(
    [...values].sort((a, b) => a - b),
    q,
  );
}

function rank(sorted: number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
}

export type Summary = { count: number; p50: number; p95: number; p99: number; max: number };

/**
 * Sorted once; the maximum is its last value, not `Math.max(...values)`, whose arguments overflow the
 * stack past about 120,000 values (a 5× overload phase of a fast hour refuses more than that).
 */
export function summarize(values: number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    count: sorted.length,
    p50: rank(sorted, 0.5),
    p95: rank(sorted, 0.95),
    p99: rank(sorted, 0.99),
    max: sorted.length ? (sorted.at(-1) as number) : Number.NaN,
  };
}
