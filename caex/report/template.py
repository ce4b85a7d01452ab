"""The page skeleton and inline style of the HTML report.

Everything the page needs is in this one string: no external CSS, fonts or
scripts, so the report opens offline and can be mailed as one file.
"""

from __future__ import annotations

STYLE = """
:root { --ink: #1f2933; --muted: #616e7c; --rule: #d9e2ec; --accent: #2f6f9f; --paper: #ffffff;
        --band: #f5f7fa; --good: #2f7d4f; --bad: #a33a3a; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--band); color: var(--ink);
       font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: var(--accent); color: #fff; padding: 28px 40px 22px; }
header h1 { margin: 0 0 4px; font-size: 26px; font-weight: 600; }
header p { margin: 0; opacity: .9; }
nav { background: var(--paper); border-bottom: 1px solid var(--rule); padding: 10px 40px; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 18px; white-space: nowrap; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 40px 60px; }
@media (max-width: 600px) { header, nav { padding-left: 14px; padding-right: 14px; }
                            main { padding: 14px 8px 40px; } section { padding: 14px 12px; } }
.table-scroll { overflow-x: auto; }
section { background: var(--paper); border: 1px solid var(--rule); border-radius: 8px;
          padding: 20px 26px; margin: 0 0 22px; }
h2 { margin: 0 0 10px; font-size: 20px; font-weight: 600; }
h3 { margin: 18px 0 6px; font-size: 16px; font-weight: 600; }
p.lead { color: var(--muted); margin: 0 0 14px; }
p.reading { margin: 8px 0 4px; padding: 8px 12px; border-left: 4px solid var(--accent);
            background: var(--band); }
figure { margin: 12px 0; text-align: center; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--rule); border-radius: 4px; }
figure img.enlarge { width: min(100%, 560px); image-rendering: pixelated; }
figure.example { display: flex; flex-direction: column; align-items: center; gap: 8px;
                 border-top: 1px solid var(--rule); padding-top: 12px; }
figure.example img.map { width: min(100%, 220px); image-rendering: pixelated; }
figure.example figcaption { color: var(--ink); font-weight: 600; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
table { border-collapse: collapse; margin: 10px 0 4px; font-size: 14px; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; color: var(--muted); font-size: 13px; padding: 0 0 4px; }
th, td { padding: 5px 12px; border-bottom: 1px solid var(--rule); text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: var(--band); border-bottom: 2px solid var(--rule); font-weight: 600; }
tr.highlight td { font-weight: 600; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 12px; }
.missing { color: var(--muted); }
.missing li { margin: 2px 0; }
.kpis { display: flex; flex-wrap: wrap; gap: 12px; margin: 6px 0 4px; }
.kpi { flex: 1 1 170px; background: var(--band); border-radius: 6px; padding: 10px 14px; }
.kpi b { display: block; font-size: 22px; font-weight: 600; }
.kpi span { color: var(--muted); font-size: 13px; }
footer { color: var(--muted); font-size: 13px; text-align: center; padding: 10px; }
/* a data spec or path has no spaces to break at: it widened a phone's page past the screen */
header h1, header p, p.reading, p.lead, figcaption, .missing li { overflow-wrap: anywhere; }
/* a counterfactual strip at its own size, scrolled sideways: shrunk to the page its frame labels were ~5 px */
.strip-scroll { max-width: 100%; overflow-x: auto; }
.strip-scroll img.strip { width: auto; max-width: none; height: auto; }
@media print {
  body { background: #fff; }
  header { background: none; color: var(--ink); padding: 0 0 8px; border-bottom: 2px solid var(--accent); }
  header p { opacity: 1; }
  nav { display: none; }
  main { max-width: none; padding: 0; }
  section { border: none; padding: 0; }
  figure, table, p.reading, .kpis { break-inside: avoid; }
  h2, h3, figure.example figcaption { break-after: avoid; }
  .strip-scroll { overflow: visible; }
  .strip-scroll img.strip { width: 100%; }
}
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
<header><h1>{title}</h1><p>{subtitle}</p></header>
<nav>{nav}</nav>
<main>
{body}
</main>
<footer>{footer}</footer>
</body>
</html>
"""
