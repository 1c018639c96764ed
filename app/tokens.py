"""Tokens as HTML, never through Markdown: every token escaped, whitespace made visible (␣ ⏎ ⇥), so a
feature that fires on `_` or on a space shows exactly where it fires.

    visible(" is_file\\n")               -> "␣is_file⏎"
    context_html(tokens, acts, centre)  -> one context line, the firing token centred and outlined
    attention_html(tokens, pattern)     -> CircuitsVis-style tokens: hover one to see what it attends
                                           to (orange) and what attends to it (blue)
"""

from __future__ import annotations

import html
import json

import numpy as np

WHITESPACE = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"}


def visible(token: str) -> str:
    """A token's text with every whitespace character drawn as a visible symbol."""
    return "".join(WHITESPACE.get(ch, ch) for ch in token) if token else "∅"


def _span(token: str, act: float, peak: float, firing: bool) -> str:
    alpha = 0.0 if peak <= 0 else min(1.0, max(0.0, act / peak))
    value = f'<sup style="font-size:0.65em;color:#8a4b00">{act:.2f}</sup>' if act > 0 else ""
    outline = "outline:2px solid #d9480f;" if firing else ""
    return (f'<span class="tok{" fire" * firing}" title="activation {act:.4f}" data-act="{act:.4f}" '
            f'style="background:rgba(255,140,0,{alpha:.2f});{outline}padding:1px 2px;margin:0 1px;border-radius:2px">'
            f"{html.escape(visible(token))}{value}</span>")


def context_html(tokens: list[str], acts, centre: int, peak: float) -> str:
    """One context: the tokens before `centre` right-aligned, the firing token in the middle column,
    the rest left-aligned, so the firing token sits at the centre of every line."""
    acts = [float(a) for a in acts]
    left = "".join(_span(t, a, peak, False) for t, a in zip(tokens[:centre], acts[:centre]))
    mid = _span(tokens[centre], acts[centre], peak, True)
    right = "".join(_span(t, a, peak, False) for t, a in zip(tokens[centre + 1:], acts[centre + 1:]))
    cell = "white-space:nowrap;overflow:hidden;flex:1"
    return (f'<div class="context" style="display:flex;font-family:monospace;font-size:0.9em;line-height:1.9">'
            f'<div style="{cell};text-align:right;direction:rtl"><span style="direction:ltr;unicode-bidi:embed">{left}</span></div>'
            f'<div style="flex:none">{mid}</div><div style="{cell};text-align:left">{right}</div></div>')


def attention_html(tokens: list[str], pattern, title: str, box: str = "attn") -> str:
    """Tokens of a prompt; hovering token i colours each earlier token j by pattern[i, j] (what i attends
    to, orange) and each later token j by pattern[j, i] (what attends to i, blue). HTML with its script
    (for `st.html(..., unsafe_allow_javascript=True)`), scoped to the element id `box`."""
    p = np.asarray(pattern, dtype=float).round(4).tolist()
    spans = "".join(f'<span class="atok" data-i="{i}" title="{i}: {html.escape(visible(t))}">{html.escape(visible(t))}</span>'
                    for i, t in enumerate(tokens))
    return f"""<div id="{box}" style="font-family:monospace;font-size:14px;line-height:2.1">
<div style="font-family:sans-serif;font-size:13px;color:#555">{html.escape(title)} — hover a token: <span style="background:rgba(255,140,0,.8)">what it attends to</span>, <span style="background:rgba(30,110,220,.6)">what attends to it</span></div>
<div>{spans}</div><div class="info" style="font-family:sans-serif;font-size:12px;color:#333;min-height:1.5em"></div></div>
<style>#{box} .atok{{padding:2px 3px;margin:0 1px;border-radius:3px;cursor:default;border:1px solid #ddd}}</style>
<script>
(() => {{
const P = {json.dumps(p)};
const root = document.getElementById('{box}');
const toks = root.querySelectorAll('.atok');
toks.forEach(el => {{
  el.addEventListener('mouseenter', () => {{
    const i = +el.dataset.i;
    toks.forEach(o => {{
      const j = +o.dataset.i;
      o.style.background = j < i ? `rgba(255,140,0,${{P[i][j]}})` : j > i ? `rgba(30,110,220,${{P[j][i]}})`
                                 : `rgba(255,140,0,${{P[i][i]}})`;
      o.style.outline = j === i ? '2px solid #333' : '';
    }});
    const top = P[i].map((v, j) => [v, j]).filter(x => x[1] <= i).sort((a, b) => b[0] - a[0]).slice(0, 3);
    root.querySelector('.info').textContent = `query ${{i}} attends most to ` +
      top.map(([v, j]) => `${{j}} (${{v.toFixed(3)}})`).join(', ');
  }});
}});
}})();
</script>"""
