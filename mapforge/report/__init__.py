"""The run report: one self-contained HTML page per run folder, and read access to a run folder's parts."""

from mapforge.report.html import ReportConfig, build_report, write_report
from mapforge.report.run_folder import RunFolder

__all__ = ["ReportConfig", "RunFolder", "build_report", "write_report"]
