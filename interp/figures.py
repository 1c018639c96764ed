"""Plotly figure builders: data in, `go.Figure` out. Experiments save them into run folders and the
app draws the same figures, so a figure looks the same in both places."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50))


def _list(x):
    return x.tolist() if hasattr(x, "tolist") else list(x)


def heatmap(z, title: str, xlabel: str, ylabel: str, x: Sequence | None = None, y: Sequence | None = None,
            zmin: float | None = None, zmax: float | None = None, colorscale: str = "Viridis", zlabel: str = "",
            signed: bool | None = None) -> go.Figure:
    """A heatmap of a 2-D array, rows along y. A signed one (`signed`, or by default any array with
    values of both signs) gets a diverging scale whose white is exactly 0 (red below, blue above) and,
    when a range is given, a range symmetric about 0; say what the sign means in `zlabel`."""
    z = _list(z)
    if signed is None:
        signed = _both_signs(z)
    trace = go.Heatmap(z=z, x=x, y=y, zmin=zmin, zmax=zmax, colorscale=colorscale, colorbar=dict(title=zlabel))
    fig = go.Figure(_centre(trace) if signed else trace)
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, **_LAYOUT)
    return fig


def token_grid(z, tokens: Sequence[Sequence[str]], title: str, x: Sequence, y: Sequence, zlabel: str,
               zmin: float | None = 0.0, zmax: float | None = 1.0) -> go.Figure:
    """A layer × position heatmap whose cells are labelled with a token each (a lens's top prediction):
    colour is `z` (e.g. that token's probability), the label and hover say which token it is."""
    trace = go.Heatmap(z=_list(z), x=x, y=y, text=[list(r) for r in tokens], texttemplate="%{text}", zmin=zmin, zmax=zmax,
                       colorscale="Viridis", colorbar=dict(title=zlabel), textfont=dict(size=9),
                       hovertemplate="%{y} · %{x}<br>%{text}: %{z:.3f}<extra></extra>")
    fig = go.Figure(trace)
    fig.update_layout(title=title, xaxis_title="position (the prediction is for the next token)", yaxis_title="layer", **_LAYOUT)
    return fig


def _both_signs(z) -> bool:
    flat = [v for row in z for v in (row if isinstance(row, (list, tuple)) else [row]) if v is not None and v == v]
    return bool(flat) and min(flat) < 0 < max(flat)


def centre_signed(fig: go.Figure) -> go.Figure:
    """Centre every heatmap of `fig` that holds values of both signs on 0 (for figures stored before
    `heatmap` did so itself): a diverging scale with white at 0 and a range symmetric about it."""
    for t in fig.data:
        if t.type == "heatmap" and t.z is not None and _both_signs(t.z):
            _centre(t)
    return fig


def _centre(t: go.Heatmap) -> go.Heatmap:
    """A diverging scale whose white is exactly 0; a set range is made symmetric about it, none is left to the data."""
    set_range = [abs(v) for v in (t.zmin, t.zmax) if v is not None]
    bound = max(set_range) if set_range else None
    t.update(colorscale="RdBu", zmid=0.0, zmin=-bound if bound else None, zmax=bound, zauto=bound is None)
    return t


def clickable(fig: go.Figure) -> go.Figure:
    """Make each heatmap cell clickable (for a dashboard's point selection, which heatmap traces do not
    report): an invisible marker at the centre of every cell, carrying the heatmap's hover text."""
    xt, yt = fig.layout.xaxis.title.text or "x", fig.layout.yaxis.title.text or "y"
    for t in list(fig.data):
        if t.type != "heatmap" or t.z is None:
            continue
        zt = (t.colorbar.title.text if t.colorbar and t.colorbar.title else None) or "value"
        rows, cols = len(t.z), len(t.z[0])
        xs = list(t.x) if t.x is not None else list(range(cols))
        ys = list(t.y) if t.y is not None else list(range(rows))
        fig.add_trace(go.Scatter(x=[xs[c] for r in range(rows) for c in range(cols)], y=[ys[r] for r in range(rows) for c in range(cols)],
                                 customdata=[[r, c, t.z[r][c]] for r in range(rows) for c in range(cols)], mode="markers",
                                 marker=dict(symbol="square", size=14, opacity=0), showlegend=False,
                                 hovertemplate=t.hovertemplate or f"{yt} %{{y}}, {xt} %{{x}}<br>{zt}: %{{customdata[2]:.3f}}<extra></extra>",
                                 xaxis=t.xaxis, yaxis=t.yaxis))
        # the markers would pad the axes past the heatmap's cells: pin both to the cells' extent
        fig.update_layout({f"xaxis{(t.xaxis or 'x')[1:]}": dict(range=[-0.5, cols - 0.5]),
                           f"yaxis{(t.yaxis or 'y')[1:]}": dict(range=[-0.5, rows - 0.5])})
    return fig


def attention_heads(patterns, labels: Sequence[str], layer: int, heads: Sequence[int], title: str = "") -> go.Figure:
    """Attention patterns of several heads of one layer side by side, in CircuitsVis's orientation:
    query 0 at the top, keys along x, every token labelled (the height grows with the prompt), and a
    tooltip naming layer, head, query, key and the attention."""
    from plotly.subplots import make_subplots

    n = len(labels)
    fig = make_subplots(rows=1, cols=len(heads), shared_yaxes=True, horizontal_spacing=0.02,
                        subplot_titles=[f"L{layer}H{h}" for h in heads])
    for col, (h, z) in enumerate(zip(heads, patterns), start=1):
        fig.add_trace(go.Heatmap(z=_list(z), x=list(labels), y=list(labels), zmin=0, zmax=1, colorscale="Blues",
                                 showscale=col == len(heads), colorbar=dict(title="attention"),
                                 hovertemplate=f"layer {layer} head {h}<br>query %{{y}}<br>key %{{x}}<br>"
                                               "attention %{z:.3f}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(tickmode="array", tickvals=list(labels), tickangle=-90, row=1, col=col)
    fig.update_yaxes(autorange="reversed", tickmode="array", tickvals=list(labels))
    fig.update_layout(title=title, height=180 + 16 * n, **_LAYOUT)
    return fig


def lines(series: dict[str, Sequence[float]], title: str, xlabel: str, ylabel: str, x: Sequence | None = None,
          log_y: bool = False, mode: str = "lines+markers") -> go.Figure:
    """One line per named series over a shared x."""
    fig = go.Figure()
    for name, ys in series.items():
        ys = _list(ys)
        fig.add_trace(go.Scatter(x=_list(x) if x is not None else list(range(len(ys))), y=ys, name=name, mode=mode))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, **_LAYOUT)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def alpha_grid(alpha0, title: str = "α₀: attention to position 0") -> go.Figure:
    """α_0 as a layer × head grid."""
    return heatmap(alpha0, title, "head", "layer", zmin=0.0, zmax=1.0, zlabel="α₀")


def sink_by_position(rates: dict[str, Sequence[float]], epsilon: float) -> go.Figure:
    """Sink_k^ε across key positions, one line per condition."""
    return lines(rates, f"Sink rate by key position (ε = {epsilon})", "key position", f"Sink^{epsilon}", mode="lines")


def norms_by_position(norms, title: str, ylabel: str) -> go.Figure:
    """A layer × position heatmap of norms (log colour scale would hide the peak; keep it linear)."""
    return heatmap(norms, title, "position", "layer", zlabel=ylabel)


def line_panels(panels: dict[str, dict[str, tuple[Sequence, Sequence, Sequence | None]]], title: str, xlabel: str,
                ylabel: str, log_x: bool = False) -> go.Figure:
    """Side-by-side panels of lines with optional error bars: {panel: {series: (x, y, err)}}. A series
    name shared across panels keeps one colour and one legend entry."""
    from plotly.colors import DEFAULT_PLOTLY_COLORS
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels), shared_yaxes=True)
    colours: dict[str, str] = {}
    for col, series in enumerate(panels.values(), start=1):
        for name, (x, y, err) in series.items():
            colour = colours.setdefault(name, DEFAULT_PLOTLY_COLORS[len(colours) % len(DEFAULT_PLOTLY_COLORS)])
            fig.add_trace(go.Scatter(x=_list(x), y=_list(y), name=name, legendgroup=name, showlegend=col == 1,
                                     mode="lines+markers", line=dict(color=colour),
                                     error_y=dict(type="data", array=_list(err)) if err is not None else None), row=1, col=col)
        fig.update_xaxes(title_text=xlabel, type="log" if log_x else None, row=1, col=col)
    fig.update_yaxes(title_text=ylabel, row=1, col=1)
    fig.update_layout(title=title, **_LAYOUT)
    return fig


def density_histogram(density, title: str = "Feature density (log₁₀ share of tokens a feature fires on)") -> go.Figure:
    """Histogram of log10 feature densities; features that never fire are counted in the title."""
    import numpy as np

    d = np.asarray(density, dtype=float)
    fig = go.Figure(go.Histogram(x=np.log10(d[d > 0]).tolist(), nbinsx=50))
    fig.update_layout(title=f"{title}; {int((d == 0).sum())} never fire", xaxis_title="log₁₀ density",
                      yaxis_title="features", **_LAYOUT)
    return fig


def bars(groups: dict[str, tuple[Sequence, Sequence, Sequence | None]], title: str, xlabel: str, ylabel: str) -> go.Figure:
    """Grouped bars with optional error bars: {series: (x labels, heights, errors)}."""
    fig = go.Figure()
    for name, (x, y, err) in groups.items():
        fig.add_trace(go.Bar(x=_list(x), y=_list(y), name=name,
                             error_y=dict(type="data", array=_list(err)) if err is not None else None))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, barmode="group", **_LAYOUT)
    return fig


def entropy_scatter(row, col, alpha0, labels: Sequence[str], row_max: float, col_min: float, title: str) -> go.Figure:
    """Heads as points (row entropy, column entropy) coloured by α₀, with the dormant detector's
    region (row ≤ row_max, col ≥ col_min) marked by its two threshold lines."""
    fig = go.Figure(go.Scatter(x=_list(row), y=_list(col), mode="markers", text=list(labels),
                               marker=dict(color=_list(alpha0), colorscale="Viridis", cmin=0, cmax=1,
                                           colorbar=dict(title="α₀")),
                               hovertemplate="%{text}<br>row %{x:.2f}, col %{y:.2f}<extra></extra>"))
    fig.add_vline(x=row_max, line_dash="dash")
    fig.add_hline(y=col_min, line_dash="dash")
    fig.update_layout(title=title, xaxis_title="row entropy (normalised)", yaxis_title="column entropy (normalised)", **_LAYOUT)
    return fig


def scatter(groups: dict[str, tuple[Sequence, Sequence, Sequence[str] | None]], title: str, xlabel: str, ylabel: str,
            log_x: bool = False, log_y: bool = False) -> go.Figure:
    """Points in named groups, each point with an optional hover label: {group: (x, y, labels)}."""
    fig = go.Figure()
    for name, (x, y, labels) in groups.items():
        fig.add_trace(go.Scatter(x=_list(x), y=_list(y), name=name, mode="markers", marker=dict(size=6, opacity=0.7),
                                 text=list(labels) if labels is not None else None,
                                 hovertemplate="%{text}<br>%{x}, %{y}<extra></extra>" if labels is not None else None))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, **_LAYOUT)
    fig.update_xaxes(type="log" if log_x else None)
    fig.update_yaxes(type="log" if log_y else None)
    return fig


NODE_STYLES = {  # circuit-tracer's feature_type -> legend name, marker symbol, colour
    "embedding": ("token embedding", "diamond", "#6b7280"),
    "cross layer transcoder": ("transcoder feature", "circle", "#d97706"),
    "mlp reconstruction error": ("error node (what the transcoder misses)", "square", "#9ca3af"),
    "logit": ("output logit", "triangle-up", "#16a34a"),
}


def attribution_graph(doc: dict, title: str = "", hover: dict[str, str] | None = None, share: dict[str, float] | None = None,
                      max_edges: int | None = None) -> go.Figure:
    """A pruned attribution graph (circuit-tracer's JSON document: metadata.prompt_tokens, nodes, links)
    as a layered network: layers up (embeddings at the bottom, logits on top), token positions across,
    the nodes of one (layer, position) side by side within its column. Node size is its influence on the
    logits (`share`: node_id -> share of the total; else taken from the JSON's cumulative influence), edge
    width its |weight| (four bins, relative to the largest), edge colour its sign. `hover` adds text per
    node_id. Each node's marker carries its node_id as customdata, for a click to select it. `max_edges`:
    draw only that many, the largest |weight| first (a pruned graph of a 10-token prompt keeps ~10^5)."""
    nodes, tokens = doc["nodes"], list(doc["metadata"]["prompt_tokens"])
    layers = [int(n["layer"]) for n in nodes if n["feature_type"] not in ("embedding", "logit")]
    top = max([int(n["layer"]) - 1 for n in nodes if n["feature_type"] == "logit"] + [max(layers, default=-1) + 1])
    if share is None:  # the JSON keeps the cumulative share (largest first): a node's own is its step in it
        ranked = sorted((n for n in nodes if n.get("influence") is not None), key=lambda n: n["influence"])
        share, prev = {}, 0.0
        for n in ranked:
            share[n["node_id"]], prev = max(n["influence"] - prev, 0.0), n["influence"]
    cells: dict[tuple, list] = {}
    for n in nodes:
        y = -1 if n["feature_type"] == "embedding" else top if n["feature_type"] == "logit" else int(n["layer"])
        cells.setdefault((y, n["ctx_idx"] if n["feature_type"] != "logit" else len(tokens) - 1), []).append(n)
    where = {}
    for (y, pos), group in cells.items():
        group.sort(key=lambda n: -share.get(n["node_id"], 0.0))
        width = 0.8 if group[0]["feature_type"] != "logit" else min(len(tokens) - 0.2, 0.45 * len(group))
        for j, n in enumerate(group):
            off = 0.0 if len(group) == 1 else width * (j / (len(group) - 1) - 0.5)
            where[n["node_id"]] = (pos + off - (width / 2 if n["feature_type"] == "logit" and len(group) > 1 else 0.0), y)
    fig = go.Figure()
    links = [lk for lk in doc["links"] if lk["source"] in where and lk["target"] in where]
    if max_edges is not None and len(links) > max_edges:
        links = sorted(links, key=lambda lk: -abs(lk["weight"]))[:max_edges]
    biggest = max((abs(lk["weight"]) for lk in links), default=1.0) or 1.0
    for sign, colour in ((1, "rgba(37,99,235,{a})"), (-1, "rgba(220,38,38,{a})")):
        legend = True  # once per sign, on its first drawn bin
        for b, (lo, hi) in enumerate(((0, 0.1), (0.1, 0.3), (0.3, 0.6), (0.6, 1.01))):
            xs, ys = [], []
            for lk in links:
                r = abs(lk["weight"]) / biggest
                if (lk["weight"] >= 0) == (sign > 0) and lo <= r < hi:
                    (x0, y0), (x1, y1) = where[lk["source"]], where[lk["target"]]
                    xs += [x0, x1, None]
                    ys += [y0, y1, None]
            if xs:
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=legend,
                                         name="positive edge" if sign > 0 else "negative edge", legendgroup=f"edge{sign}",
                                         line=dict(width=0.6 + 1.6 * b, color=colour.format(a=0.25 + 0.15 * b))))
                legend = False
    peak = max(share.values(), default=1.0) or 1.0
    for kind, (name, symbol, colour) in NODE_STYLES.items():
        group = [n for n in nodes if n["feature_type"] == kind]
        if not group:
            continue
        fig.add_trace(go.Scatter(
            x=[where[n["node_id"]][0] for n in group], y=[where[n["node_id"]][1] for n in group], mode="markers", name=name,
            customdata=[[n["node_id"]] for n in group], text=[_node_text(n, tokens, share, hover) for n in group],
            hovertemplate="%{text}<extra></extra>",
            marker=dict(symbol=symbol, color=colour, line=dict(width=0.5, color="#111"),
                        size=[7 + 23 * (n["token_prob"] if kind == "logit" else share.get(n["node_id"], 0.0) / peak) ** 0.5
                              for n in group])))
    fig.update_layout(title=title, height=max(480, 26 * (top + 2)), hovermode="closest", dragmode="pan",
                      legend=dict(orientation="h", y=-0.12), **_LAYOUT)
    fig.update_xaxes(title="token position", tickmode="array", tickvals=list(range(len(tokens))),
                     ticktext=[f"{i}: {t!r}"[:24] for i, t in enumerate(tokens)], range=[-0.7, len(tokens) - 0.3],
                     showgrid=False, zeroline=False)
    fig.update_yaxes(title="layer", tickmode="array", tickvals=[-1, *range(top), top],
                     ticktext=["embed", *map(str, range(top)), "logits"], range=[-1.6, top + 0.6], zeroline=False)
    return fig


def _node_text(n: dict, tokens: list[str], share: dict[str, float], hover: dict[str, str] | None) -> str:
    import html

    kind, pos = n["feature_type"], n["ctx_idx"]
    head = {"embedding": f"<b>token embedding</b> · pos {pos}",
            "cross layer transcoder": f"<b>feature L{n['layer']}/{n['node_id'].split('_')[1]}</b> · pos {pos}",
            "mlp reconstruction error": f"<b>error node</b> L{n['layer']} · pos {pos}",
            "logit": "<b>logit</b>"}[kind]
    lines = [head]
    if kind != "logit":
        lines.append(f"token {html.escape(repr(tokens[pos]))}")
    if n.get("activation") is not None:
        lines.append(f"activation {n['activation']:.3f}")
    if n.get("clerp"):
        lines.append(html.escape(n["clerp"]))
    if n["node_id"] in share:
        lines.append(f"influence {share[n['node_id']]:.2%} of the total (cumulative {n['influence']:.1%})"
                     if n.get("influence") is not None else f"influence {share[n['node_id']]:.2%}")
    if hover and hover.get(n["node_id"]):
        lines.append(hover[n["node_id"]])
    return "<br>".join(lines)
