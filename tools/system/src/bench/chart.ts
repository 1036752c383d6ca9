export type Series = { name: string; color: string; points: { x: number; y: number }[] };

const escapeXml = (s: string) => s.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);

/** A line chart as a standalone SVG: latency (y, ms, log scale) against offered load (x). */
export function lineChart({
  title,
  xLabel,
  yLabel,
  series,
}: {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
}): string {
  const width = 720;
  const height = 420;
  const m = { left: 70, right: 170, top: 40, bottom: 50 };
  const points = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.y) && p.y > 0);
  const xMax = Math.max(1, ...points.map((p) => p.x));
  const yMin = Math.max(0.1, Math.min(...points.map((p) => p.y)));
  const yMax = Math.max(yMin * 10, ...points.map((p) => p.y));
  const lo = Math.floor(Math.log10(yMin));
  const hi = Math.ceil(Math.log10(yMax));
  const x = (v: number) => m.left + (v / xMax) * (width - m.left - m.right);
  const y = (v: number) =>
    height - m.bottom - ((Math.log10(v) - lo) / (hi - lo)) * (height - m.top - m.bottom);

  const grid: string[] = [];
  for (let e = lo; e <= hi; e++) {
    const v = 10 ** e;
    grid.push(`<line x1="${m.left}" x2="${width - m.right}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`);
    grid.push(
      `<text x="${m.left - 8}" y="${y(v) + 4}" text-anchor="end">${v >= 1 ? v : v.toFixed(1)}</text>`,
    );
  }
  for (let i = 0; i <= 5; i++) {
    const v = Math.round((xMax * i) / 5);
    grid.push(`<text x="${x(v)}" y="${height - m.bottom + 18}" text-anchor="middle">${v}</text>`);
  }
  const lines = series.map((s, i) => {
    const pts = s.points.filter((p) => Number.isFinite(p.y) && p.y > 0);
    const path = pts.map((p) => `${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`).join(" ");
    const dots = pts.map((p) => `<circle cx="${x(p.x)}" cy="${y(p.y)}" r="3" fill="${s.color}"/>`).join("");
    const legendY = m.top + i * 20;
    return `<polyline points="${path}" fill="none" stroke="${s.color}" stroke-width="2"/>${dots}<rect x="${width - m.right + 15}" y="${legendY - 9}" width="12" height="12" fill="${s.color}"/><text x="${width - m.right + 32}" y="${legendY + 1}">${escapeXml(s.name)}</text>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="${width / 2}" y="22" text-anchor="middle" font-size="15">${escapeXml(title)}</text>
${grid.join("\n")}
<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${height - m.bottom}" stroke="#333"/>
<line x1="${m.left}" x2="${width - m.right}" y1="${height - m.bottom}" y2="${height - m.bottom}" stroke="#333"/>
<text x="${(m.left + width - m.right) / 2}" y="${height - 12}" text-anchor="middle">${escapeXml(xLabel)}</text>
<text x="18" y="${height / 2}" text-anchor="middle" transform="rotate(-90 18 ${height / 2})">${escapeXml(yLabel)}</text>
${lines.join("\n")}
</svg>
`;
}
