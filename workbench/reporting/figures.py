"""What the HTML report and the dashboard do to a suite's figures before showing them.

- A figure that is only a table (`go.Table`) becomes a real table (`figure_table`): a
  plotly table has a fixed height and cuts rows off (the report once showed 2 of 7 methods).
- Scatter traces with more points than a screen shows are decimated for display
  (`decimate`): lines keep each bucket's minimum and maximum (the drawn curve looks the
  same), markers keep an evenly spaced subset and the figure says "showing k of n points".
- The default plotly template (about 7 KB of JSON) is stripped from each figure
  (`figure_spec`) so the report carries it once.

Pure functions over plotly figure objects; plotly is imported only when called.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_POINTS = 2000  # per scatter trace: about the horizontal pixels of a wide screen
_ALIGNED = ("x", "y", "text", "customdata", "hovertext", "ids")
_MARKER = ("color", "size", "symbol", "opacity")
_ERRORS = ("error_x", "error_y")


def _cell(v: Any) -> str:
    from workbench.reporting.markdown import fmt_value

    if v is None:
        return ""
    if isinstance(v, float) and math.isnan(v):
        return ""
    if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
        return fmt_value(float(v))
    return str(v)


def figure_table(fig: Any) -> tuple[list[str], list[list[str]]] | None:
    """(header, rows) when the figure holds only one `go.Table` trace, else None. Cells are
    text; numbers formatted like every other number of the report."""
    data = list(getattr(fig, "data", ()) or ())
    if len(data) != 1 or data[0].type != "table":
        return None
    t = data[0]
    header = [str(h) for h in (t.header.values or [])]
    cols = [list(c) if isinstance(c, (list, tuple, np.ndarray)) else [c] for c in (t.cells.values or [])]
    n = max((len(c) for c in cols), default=0)
    rows = [[_cell(c[i]) if i < len(c) else "" for c in cols] for i in range(n)]
    return header, rows


def _length(v: Any) -> int | None:
    if v is None or isinstance(v, (str, bytes)):
        return None
    try:
        return len(v)
    except TypeError:
        return None


def decimation_index(y: Sequence[float] | None, n: int, max_points: int = MAX_POINTS, lines: bool = True) -> np.ndarray:
    """Indices to keep out of `n` points. Lines: the first and last point and, in each of
    `max_points // 2` equal buckets, the positions of the minimum and maximum of `y`, so
    the drawn envelope is unchanged. Markers (or non-numeric y): evenly spaced indices."""
    if n <= max_points:
        return np.arange(n)
    yv = None
    if lines and y is not None:
        try:
            yv = np.asarray(y, dtype=float)
        except (TypeError, ValueError):
            yv = None
    if yv is None or yv.shape != (n,) or not np.isfinite(yv).any():
        return np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    edges = np.linspace(0, n, max_points // 2 + 1).astype(int)
    keep = [0, n - 1]
    filled = np.where(np.isfinite(yv), yv, np.nan)
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        seg = filled[a:b]
        if np.isnan(seg).all():
            keep.append(a)
            continue
        keep += [a + int(np.nanargmin(seg)), a + int(np.nanargmax(seg))]
    return np.unique(np.asarray(keep))


def decimate(fig: Any, max_points: int = MAX_POINTS) -> Any:
    """Decimate, in place, every scatter trace over `max_points` points (see the module
    docstring); returns the figure. Arrays aligned with the points (text, customdata,
    per-point marker colour/size, error bars) are cut alike."""
    noted = []
    for trace in fig.data:
        if trace.type not in ("scatter", "scattergl"):
            continue
        n = _length(trace.x) if trace.x is not None else _length(trace.y)
        if not n or n <= max_points:
            continue
        lines = "lines" in str(trace.mode or "lines")
        idx = decimation_index(trace.y, n, max_points, lines=lines)
        for k in _ALIGNED:
            v = getattr(trace, k, None)
            if _length(v) == n:
                trace[k] = [v[i] for i in idx] if k in ("text", "hovertext", "ids") else np.asarray(v)[idx]
        for k in _MARKER:
            v = trace.marker[k] if trace.marker is not None else None
            if _length(v) == n:
                trace.marker[k] = [v[i] for i in idx] if k == "symbol" else np.asarray(v)[idx]
        for e in _ERRORS:
            for k in ("array", "arrayminus"):
                v = trace[e][k]
                if _length(v) == n:
                    trace[e][k] = np.asarray(v)[idx]
        if not lines:
            noted.append(f"{trace.name or 'points'}: showing {idx.size:,} of {n:,} (evenly spaced)")
    if noted:
        fig.add_annotation(text="; ".join(noted), xref="paper", yref="paper", x=0, y=-0.18, showarrow=False,
                           font={"size": 10, "color": "#59636e"}, xanchor="left")
    return fig


_TEMPLATES: dict[str, dict[str, Any]] = {}


def default_template() -> dict[str, Any]:
    """The layout template plotly applies by default now (`plotly.io.templates.default`,
    which a library such as Streamlit may change), as plain JSON (emitted once)."""
    import plotly.graph_objects as go
    import plotly.io as pio

    name = str(pio.templates.default)
    if name not in _TEMPLATES:
        _TEMPLATES[name] = json.loads(pio.to_json(go.Figure(), validate=False))["layout"].get("template", {})
    return _TEMPLATES[name]


def figure_spec(fig: Any) -> tuple[dict[str, Any], bool]:
    """(figure JSON as a dict, whether it uses the default template). A figure on the
    default template has it removed (the page applies the one shared copy)."""
    import plotly.io as pio

    spec = json.loads(pio.to_json(fig, validate=False))
    layout = spec.setdefault("layout", {})
    shared = layout.get("template") == default_template()
    if shared:
        layout.pop("template", None)
    return spec, shared


# --------------------------------------------------------------------------- colour conventions

# One convention for signed quantities everywhere (dashboard, report, every suite): red is
# positive (raises the explained output, adds to the input), blue negative, white zero.
SIGNED_COLORSCALE = "RdBu_r"
# Unsigned magnitudes (a perturbation's size, a count) use one sequential scale.
MAGNITUDE_COLORSCALE = "Reds"


def noise_floor(reference: Any = None, rel: float = 1e-5, absolute: float = 1e-12) -> float:
    """Below this, values are float round-off, not a signal: `rel` x the largest |value| of
    `reference` (the quantity they are measured against, e.g. the input), at least `absolute`.
    float32 keeps about 7 digits, so differences under 1e-5 of the scale are noise."""
    scale = 0.0
    if reference is not None:
        r = np.abs(np.asarray(reference, dtype=float))
        r = r[np.isfinite(r)]
        scale = float(r.max()) if r.size else 0.0
    return max(absolute, rel * scale)


def signed_scale(z: Any, reference: Any = None) -> tuple[dict[str, Any], str | None]:
    """Heatmap colour settings for a signed map: symmetric around 0 (`zmid=0`) on
    SIGNED_COLORSCALE, and a note instead of a stretched range when every |value| is under
    the noise floor (then the range is fixed at ±1, so the map shows as white).
    Returns (plotly heatmap keyword arguments, note or None)."""
    a = np.abs(np.asarray(z, dtype=float))
    a = a[np.isfinite(a)]
    m = float(a.max()) if a.size else 0.0
    floor = noise_floor(reference) if reference is not None else 1e-12
    kw = {"colorscale": SIGNED_COLORSCALE, "zmid": 0.0}
    if m <= floor:
        return {**kw, "zmin": -1.0, "zmax": 1.0}, (
            f"every value is within float round-off of 0 (max |value| {m:.1e}): nothing to show")
    return {**kw, "zmin": -m, "zmax": m}, None


def magnitude_scale(z: Any, reference: Any = None) -> tuple[dict[str, Any], str | None]:
    """Heatmap colour settings for a non-negative map from 0, refusing to stretch noise
    (see `signed_scale`)."""
    a = np.asarray(z, dtype=float)
    a = a[np.isfinite(a)]
    m = float(a.max()) if a.size else 0.0
    floor = noise_floor(reference) if reference is not None else 1e-12
    kw = {"colorscale": MAGNITUDE_COLORSCALE, "zmin": 0.0}
    if m <= floor:
        return {**kw, "zmax": 1.0}, f"every value is within float round-off of 0 (max {m:.1e}): nothing to show"
    return {**kw, "zmax": m}, None


def scale_to_unit(a: Any, floor: float = 1e-12) -> np.ndarray:
    """a / max|a| in [-1, 1] (for maps compared side by side, each on its own scale); a map
    whose max |value| is at or under `floor` is round-off and comes back as zeros, never
    stretched to full colour."""
    x = np.asarray(a, dtype=np.float64)
    m = float(np.nanmax(np.abs(x))) if x.size else 0.0
    return x / m if m > floor else np.zeros_like(x)


def shared_floor(maps: Any, rel: float = 1e-6) -> float:
    """The round-off floor of maps shown together: `rel` x the largest |value| of any of
    them (at least 1e-12), so a method that is zero up to round-off shows as zero."""
    m = max((float(np.nanmax(np.abs(np.asarray(a, dtype=float)))) for a in maps if np.asarray(a).size), default=0.0)
    return max(1e-12, rel * m)
