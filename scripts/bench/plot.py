#!/usr/bin/env python3
"""Plots a run's cost ratios as an SVG (no dependencies): for each benchmark, mpscript/CPython
and mpscript/floor on a log scale (below 1 = mpscript is cheaper), a ✓/✗ for its target.

    python3 scripts/bench/plot.py bench/results/ratios-STAMP.json [-o bench/results/ratios.svg]
"""
import argparse
import json
import math
import os
from xml.sax.saxutils import escape

ROW = 34
LEFT = 190
WIDTH = 560
LO, HI = 0.01, 1000.0   # log axis range


def x_of(r):
    r = min(max(r, LO), HI)
    return LEFT + (math.log10(r) - math.log10(LO)) / (math.log10(HI) - math.log10(LO)) * WIDTH


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ratios")
    ap.add_argument("-o", "--out")
    args = ap.parse_args()
    with open(args.ratios) as f:
        data = json.load(f)
    rows = data["rows"]
    m = data["machine"]
    out = args.out or os.path.join(os.path.dirname(args.ratios), "ratios.svg")
    top = 70
    h = top + ROW * len(rows) + 60
    w = LEFT + WIDTH + 60
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
         f'font-family="sans-serif" font-size="12">',
         f'<rect width="{w}" height="{h}" fill="white"/>',
         f'<text x="10" y="20" font-size="14" font-weight="bold">mpscript cost ratios '
         f'(log scale; left of 1 = mpscript cheaper)</text>',
         f'<text x="10" y="38">{escape(m["cpu"])}, {m["cpus"]} CPUs, kernel '
         f'{escape(m["kernel"])}, CPython {m["python"]}, {escape(m["date"])}</text>']
    for p in range(int(math.log10(LO)), int(math.log10(HI)) + 1):
        x = x_of(10 ** p)
        s.append(f'<line x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" y2="{h - 50}" '
                 f'stroke="{"#000" if p == 0 else "#ddd"}"/>')
        s.append(f'<text x="{x:.1f}" y="{h - 36}" text-anchor="middle">{10 ** p:g}×</text>')
    for i, r in enumerate(rows):
        y = top + i * ROW
        mark = {True: " ✓", False: " ✗"}.get(r.get("met"), "")
        s.append(f'<text x="{LEFT - 8}" y="{y + 15}" text-anchor="end">'
                 f'{escape(r["name"])}{mark}</text>')
        for k, (key, color) in enumerate((("vs_cpython", "#3b75af"), ("vs_floor", "#ef8636"))):
            v = r.get(key)
            if not v:
                continue
            x0, x1 = x_of(1.0), x_of(v)
            yy = y + 2 + k * 13
            s.append(f'<rect x="{min(x0, x1):.1f}" y="{yy}" width="{abs(x1 - x0):.1f}" '
                     f'height="11" fill="{color}"/>')
            s.append(f'<text x="{max(x0, x1) + 3:.1f}" y="{yy + 10}" font-size="10">'
                     f'{v:.3g}×</text>')
    ly = h - 18
    s.append(f'<rect x="10" y="{ly - 10}" width="12" height="10" fill="#3b75af"/>'
             f'<text x="26" y="{ly}">mpscript / CPython</text>'
             f'<rect x="170" y="{ly - 10}" width="12" height="10" fill="#ef8636"/>'
             f'<text x="186" y="{ly}">mpscript / C floor</text>'
             f'<text x="330" y="{ly}">✓/✗: issue 11 target met / not met</text>')
    s.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(s) + "\n")
    print(out)


if __name__ == "__main__":
    main()
