/** Renders the benchmark's rows as a fixed-width text table. */

export type Row =
  | { section: string; name?: undefined }
  | { section?: undefined; name: string; value: number; unit: string; ratio?: number; target?: string; pass?: boolean };

function fmt(value: number): string {
  if (!Number.isFinite(value)) return "n/a";
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString("en-US");
  if (Math.abs(value) >= 100) return value.toFixed(0);
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(3);
}

export function renderTable(rows: readonly Row[]): string {
  const header = ["name", "value", "unit", "vs floor", "target", "result"];
  const body = rows.map((r) =>
    r.name === undefined
      ? [r.section]
      : [r.name, fmt(r.value), r.unit, r.ratio === undefined ? "" : `${r.ratio.toFixed(2)}x`, r.target ?? "", r.pass === undefined ? "" : r.pass ? "PASS" : "MISS"],
  );
  const widths = header.map((h, i) => Math.max(h.length, ...body.filter((b) => b.length > 1).map((b) => (b[i] ?? "").length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 1 || i === 3 ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join("  ").trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  const out = [line(header), rule];
  for (const b of body) out.push(b.length === 1 ? `\n[${b[0]}]` : line(b));
  return out.join("\n");
}
