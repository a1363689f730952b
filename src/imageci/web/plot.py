"""A test's history as an SVG drawn on the server: one bar per version for its
pass rate (coloured and patterned by verdict, so colour is never the only
signal), and a line for its median duration on a second scale."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from imageci.app.history import HistoryPoint

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 720, 220, 44, 54, 12, 28


def _secs(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def history_svg(points: Sequence[HistoryPoint]) -> Markup:
    n = max(len(points), 1)
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    step = plot_w / n
    longest = max((p.duration for p in points), default=0.0) or 1.0
    parts = [f'<svg class="history" viewBox="0 0 {W} {H}" role="img" aria-labelledby="plot-title plot-desc" '
             f'xmlns="http://www.w3.org/2000/svg">',
             '<title id="plot-title">Pass rate and duration per version</title>',
             f'<desc id="plot-desc">Bars: pass rate of each of {len(points)} versions, oldest left. '
             f'Line: median duration, up to {longest:.2f} s.</desc>',
             '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
             'patternTransform="rotate(45)"><line x1="0" y1="0" x2="0" y2="6" class="hatch"/></pattern></defs>']
    for frac in (0, 0.5, 1):
        y = PAD_T + plot_h * (1 - frac)
        parts.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">{int(frac * 100)}%</text>'
                     f'<text x="{W - PAD_R + 6}" y="{y + 4:.1f}" class="axis">{_secs(longest * frac)}</text>')
    line = []
    for i, p in enumerate(points):
        x = PAD_L + i * step
        h = max(plot_h * p.pass_rate, 1.5)
        label = escape(f"{p.image}: {p.verdict}, {p.passes}/{p.attempts} passed, median {p.duration:.2f} s")
        fill = ' fill="url(#hatch)"' if p.verdict in ("fail", "error") else ""
        parts.append(f'<a href="/versions/{escape(p.image)}"><rect x="{x + step * 0.15:.1f}" '
                     f'y="{PAD_T + plot_h - h:.1f}" width="{max(step * 0.7, 1):.1f}" height="{h:.1f}" '
                     f'class="bar v-{escape(p.verdict)}"{fill}><title>{label}</title></rect></a>')
        line.append(f"{x + step / 2:.1f},{PAD_T + plot_h * (1 - p.duration / longest):.1f}")
    if line:
        parts.append(f'<polyline points="{" ".join(line)}" class="duration"/>')
    if points:
        parts.append(f'<text x="{PAD_L}" y="{H - 8}" class="axis">{escape(points[0].serial)}</text>'
                     f'<text x="{W - PAD_R}" y="{H - 8}" class="axis" text-anchor="end">'
                     f'{escape(points[-1].serial)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every value in it was escaped or is a number
