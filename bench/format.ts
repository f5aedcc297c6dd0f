// Number formats of the bench's tables (report.ts, storm.ts).
export const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '–');
export const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '–');
export const int = (n: number) => Math.round(n).toLocaleString('en-US');
export const mb = (bytes: number) => (bytes / 1024 / 1024).toFixed(1);
export const pct = (n: number) => `${(n * 100).toFixed(n === 1 ? 0 : 3)} %`;
