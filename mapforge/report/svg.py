"""Small SVG charts for the HTML report and run folders: line charts, histograms, horizontal bars and 2D
trajectories.

Each function returns one `<svg>` element as a string, sized in CSS pixels, with axes, ticks and a legend; it is
well-formed XML with the SVG namespace, so it also stands alone as an `.svg` file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

import numpy as np

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")
_MARGIN = (56, 16, 34, 44)  # left, right, top, bottom, in pixels
_FONT = 'font-family="sans-serif" font-size="11"'


@dataclass
class Series:
    """One line / set of markers: `x [N]`, `y [N]`; `line` joins the points, `markers` draws dots."""

    label: str
    x: np.ndarray
    y: np.ndarray
    color: str = PALETTE[0]
    line: bool = True
    markers: bool = False
    dashed: bool = False


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = min((m * power for m in (1, 2, 5, 10)), key=lambda candidate: abs(math.log(candidate / raw)))
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + 1e-9 * step:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.0e}"
    return f"{value:.4g}"


class _Frame:
    """Maps data coordinates to the plot area of a `width` x `height` figure."""

    def __init__(self, width: int, height: int, x_range: tuple[float, float], y_range: tuple[float, float], log_y: bool):
        self.width, self.height, self.log_y = width, height, log_y
        left, right, top, bottom = _MARGIN
        self.x0, self.x1 = left, width - right
        self.y0, self.y1 = height - bottom, top
        self.xr = x_range if x_range[1] > x_range[0] else (x_range[0] - 0.5, x_range[0] + 0.5)
        yr = tuple(math.log10(v) for v in y_range) if log_y else y_range
        self.yr = yr if yr[1] > yr[0] else (yr[0] - 0.5, yr[0] + 0.5)

    def px(self, x: np.ndarray) -> np.ndarray:
        return self.x0 + (np.asarray(x, float) - self.xr[0]) / (self.xr[1] - self.xr[0]) * (self.x1 - self.x0)

    def py(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, float)
        if self.log_y:
            y = np.log10(y)
        return self.y0 + (y - self.yr[0]) / (self.yr[1] - self.yr[0]) * (self.y1 - self.y0)


def _open(width: int, height: int, title: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}" class="chart">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" font-family="sans-serif" font-size="13" '
        f'font-weight="bold">'
        f"{escape(title)}</text>",
    ]


def _axes(frame: _Frame, xlabel: str, ylabel: str, x_ticks: list[float] | None = None) -> list[str]:
    parts = [f'<rect x="{frame.x0}" y="{frame.y1}" width="{frame.x1 - frame.x0}" height="{frame.y0 - frame.y1}" '
             f'fill="none" stroke="#444" stroke-width="1"/>']
    if x_ticks is None:
        x_ticks = nice_ticks(*frame.xr)
    for t in x_ticks:
        if frame.xr[0] - 1e-12 <= t <= frame.xr[1] + 1e-12:
            x = float(frame.px(t))
            parts.append(f'<line x1="{x:.1f}" y1="{frame.y0}" x2="{x:.1f}" y2="{frame.y0 + 4}" stroke="#444"/>')
            parts.append(f'<text x="{x:.1f}" y="{frame.y0 + 15}" text-anchor="middle" {_FONT}>{_fmt(t)}</text>')
    if frame.log_y:
        decades = range(math.floor(frame.yr[0]), math.ceil(frame.yr[1]) + 1)
        mantissas = (1,) if frame.yr[1] - frame.yr[0] > 2 else (1, 2, 5)
        y_ticks = [m * 10.0**e for e in decades for m in mantissas]
    else:
        y_ticks = nice_ticks(*frame.yr)
    for t in y_ticks:
        value = math.log10(t) if frame.log_y else t
        if frame.yr[0] - 1e-12 <= value <= frame.yr[1] + 1e-12:
            y = float(frame.py(t))
            parts.append(f'<line x1="{frame.x0}" y1="{y:.1f}" x2="{frame.x1}" y2="{y:.1f}" stroke="#ddd"/>')
            parts.append(f'<text x="{frame.x0 - 5}" y="{y + 4:.1f}" text-anchor="end" {_FONT}>{_fmt(t)}</text>')
    parts.append(f'<text x="{(frame.x0 + frame.x1) / 2:.1f}" y="{frame.height - 6}" text-anchor="middle" {_FONT}>'
                 f"{escape(xlabel)}</text>")
    yc = (frame.y0 + frame.y1) / 2
    parts.append(f'<text x="12" y="{yc:.1f}" text-anchor="middle" transform="rotate(-90 12 {yc:.1f})" {_FONT}>'
                 f"{escape(ylabel)}</text>")
    return parts


def _legend(frame: _Frame, items: list[tuple[str, str, bool]]) -> list[str]:
    parts = []
    for i, (label, color, dashed) in enumerate(items):
        y = frame.y1 + 12 + 14 * i
        x = frame.x1 - 150
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        parts.append(f'<line x1="{x}" y1="{y - 4}" x2="{x + 18}" y2="{y - 4}" stroke="{color}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{x + 23}" y="{y}" {_FONT}>{escape(label)}</text>')
    return parts


def line_chart(
    series: list[Series], title: str, xlabel: str, ylabel: str, log_y: bool = False, width: int = 480, height: int = 270
) -> str:
    """A line chart of `series` (non-finite values are skipped; with `log_y`, non-positive values too)."""
    cleaned = []
    for s in series:
        x, y = np.asarray(s.x, float), np.asarray(s.y, float)
        keep = np.isfinite(x) & np.isfinite(y) & ((y > 0) if log_y else True)
        if keep.any():
            cleaned.append((s, x[keep], y[keep]))
    parts = _open(width, height, title)
    if not cleaned:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" {_FONT}>no data</text></svg>')
        return "\n".join(parts)
    xs = np.concatenate([c[1] for c in cleaned])
    ys = np.concatenate([c[2] for c in cleaned])
    if log_y:
        y_range = (float(ys.min()), float(ys.max()))
    else:
        pad = 0.05 * (ys.max() - ys.min() or abs(ys.max()) or 1.0)
        y_range = (float(ys.min() - pad), float(ys.max() + pad))
    frame = _Frame(width, height, (float(xs.min()), float(xs.max())), y_range, log_y)
    parts += _axes(frame, xlabel, ylabel)
    for s, x, y in cleaned:
        px, py = frame.px(x), frame.py(y)
        if s.line and len(x) > 1:
            points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py))
            dash = ' stroke-dasharray="5 3"' if s.dashed else ""
            parts.append(f'<polyline points="{points}" fill="none" stroke="{s.color}" stroke-width="1.6"{dash}/>')
        if s.markers or len(x) == 1:
            parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{s.color}"/>' for a, b in zip(px, py)]
    parts += _legend(frame, [(s.label, s.color, s.dashed) for s, _, _ in cleaned])
    parts.append("</svg>")
    return "\n".join(parts)


def histogram(
    values: np.ndarray, title: str, xlabel: str, bins: int = 30, upper: float | None = None,
    width: int = 480, height: int = 270, color: str = PALETTE[0],
) -> str:
    """A histogram of `values [N]` over [0, upper] (default: the 99th percentile, so outliers do not squash it);
    values above `upper` are counted in the last bin."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    parts = _open(width, height, title)
    if values.size == 0:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" {_FONT}>no data</text></svg>')
        return "\n".join(parts)
    lo = min(0.0, float(values.min()))
    hi = float(upper if upper is not None else np.percentile(values, 99))
    if hi <= lo:
        hi = lo + 1.0
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    frame = _Frame(width, height, (lo, hi), (0.0, float(counts.max()) * 1.05), False)
    parts += _axes(frame, xlabel, "observations")
    base = frame.py(0.0)
    for count, a, b in zip(counts, edges[:-1], edges[1:]):
        x0, x1, top = float(frame.px(a)), float(frame.px(b)), float(frame.py(count))
        parts.append(f'<rect x="{x0:.1f}" y="{top:.1f}" width="{max(x1 - x0 - 1, 0.5):.1f}" '
                     f'height="{base - top:.1f}" fill="{color}" class="bar"/>')
    parts.append("</svg>")
    return "\n".join(parts)


def horizontal_bars(labels: list[str], values: list[float], title: str, unit: str, width: int = 480) -> str:
    """One labelled horizontal bar per value (e.g. seconds per stage), with the value printed at its end."""
    height = 40 + 22 * max(len(labels), 1)
    parts = _open(width, height, title)
    top, left, right = 30, 120, 70
    vmax = max([v for v in values if math.isfinite(v)] or [1.0]) or 1.0
    for i, (label, value) in enumerate(zip(labels, values)):
        y = top + 22 * i
        length = (width - left - right) * (value / vmax if math.isfinite(value) else 0.0)
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" {_FONT}>{escape(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{max(length, 0.5):.1f}" height="16" '
                     f'fill="{PALETTE[i % len(PALETTE)]}" class="bar"/>')
        parts.append(f'<text x="{left + length + 5:.1f}" y="{y + 13}" {_FONT}>{_fmt(value)} {escape(unit)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def trajectory_plot(
    estimated: np.ndarray,
    title: str,
    truth: np.ndarray | None = None,
    axis_labels: tuple[str, str] = ("x", "y"),
    labels: tuple[str, str] = ("estimated", "ground truth"),
    size: int = 420,
) -> str:
    """A top-down plot with equal axes of camera positions `estimated [N, 2]` joined in order, and, when given,
    `truth [N, 2]` (corresponding rows) with a line from each estimate to its ground truth."""
    estimated = np.asarray(estimated, float).reshape(-1, 2)
    everything = estimated if truth is None else np.concatenate([estimated, np.asarray(truth, float).reshape(-1, 2)])
    parts = _open(size, size, title)
    if len(everything) == 0:
        parts.append(f'<text x="{size / 2}" y="{size / 2}" text-anchor="middle" {_FONT}>no cameras</text></svg>')
        return "\n".join(parts)
    lo, hi = everything.min(0), everything.max(0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2 * 1.08, 1e-9)
    frame = _Frame(size, size, (centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half), False)
    parts += _axes(frame, *axis_labels)
    items = []
    if truth is not None:
        truth = np.asarray(truth, float).reshape(-1, 2)
        for (a, b), (c, d) in zip(estimated, truth):
            parts.append(f'<line x1="{float(frame.px(a)):.1f}" y1="{float(frame.py(b)):.1f}" '
                         f'x2="{float(frame.px(c)):.1f}" y2="{float(frame.py(d)):.1f}" stroke="#d62728" stroke-width="1"/>')
        parts.append(_path(frame, truth, "#7f7f7f", dashed=True))
        parts += [f'<circle cx="{float(frame.px(a)):.1f}" cy="{float(frame.py(b)):.1f}" r="3" fill="none" stroke="#7f7f7f"/>'
                  for a, b in truth]
        items.append((labels[1], "#7f7f7f", True))
    parts.append(_path(frame, estimated, PALETTE[0], dashed=False))
    parts += [f'<circle cx="{float(frame.px(a)):.1f}" cy="{float(frame.py(b)):.1f}" r="2.5" fill="{PALETTE[0]}" class="camera"/>'
              for a, b in estimated]
    items.insert(0, (labels[0], PALETTE[0], False))
    parts += _legend(frame, items)
    parts.append("</svg>")
    return "\n".join(parts)


def _path(frame: _Frame, xy: np.ndarray, color: str, dashed: bool) -> str:
    points = " ".join(f"{float(frame.px(a)):.1f},{float(frame.py(b)):.1f}" for a, b in xy)
    dash = ' stroke-dasharray="4 3"' if dashed else ""
    return f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1"{dash} opacity="0.7"/>'
