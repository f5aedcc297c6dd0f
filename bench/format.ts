// Number formats of the bench's tables (report.ts, storm.ts), and the share they report most.
export const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '–');
export const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '–');
export const int = (n: number) => Math.round(n).toLocaleString('en-US');
export const mb = (bytes: number) => (bytes / 1024 / 1024).toFixed(1);
export const pct = (n: number) => `${(n * 100).toFixed(n === 1 ? 0 : 3)} %`;
/** What share of the expected events arrived (1 when none were expected). */
export const completeness = (r: { readonly delivered: number; readonly expected: number }) => (r.expected === 0 ? 1 : r.delivered / r.expected);
