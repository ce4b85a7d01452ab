"""A self-contained HTML report of a caex run (figures inlined, no external resources)."""

from caex.report.html import ReportSources, build_report, render_report

__all__ = ["ReportSources", "build_report", "render_report"]
