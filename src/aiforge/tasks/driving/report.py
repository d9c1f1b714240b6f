"""report.html and replay.gif: watch a drive, then read the table.

The replay is the first recorded episode of the shielded policy, rendered by highway-env
(``render_mode="rgb_array"``) and written with Pillow; frames where the shield overrode the
policy get a red border and a label. The page shows the replay, the speed/collision trade-off
of every policy (an inline SVG), their summaries and the per-episode numbers.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.tasks.driving.closedloop import ClosedLoop
from aiforge.tasks.driving.rollout import Episode

__all__ = ["REPLAY_JSON", "write_gif", "write_replay", "write_report"]

REPLAY_JSON = "replay.json"


def write_gif(episode: Episode, path: Path, *, fps: int = 4) -> Path | None:
    """The episode's frames as an animated GIF (shield overrides framed in red); None without frames."""
    from PIL import Image, ImageDraw

    if not episode.frames:
        return None
    marked = set(episode.overridden_steps)
    images = []
    for step, frame in enumerate(episode.frames):
        img = Image.fromarray(np.asarray(frame, dtype=np.uint8)).convert("RGB")
        draw = ImageDraw.Draw(img)
        if step in marked:
            draw.rectangle([0, 0, img.width - 1, img.height - 1], outline=(220, 0, 0), width=4)
            draw.text((8, 6), "shield override", fill=(220, 0, 0))
        draw.text((img.width - 70, 6), f"t={step}s", fill=(0, 0, 0))
        images.append(img.quantize(colors=64))
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0,
                   optimize=True)
    return path


def write_replay(episode: Episode, path: Path, *, actions: tuple[str, ...] | list[str], fps: int = 4) -> Path | None:
    """The replay's recorded steps as JSON: each step's observation, radar, the action taken and
    whether the shield overrode the policy there (the playground replays and re-posts them)."""
    if not episode.recorded:
        return None
    marked = set(episode.overridden_steps)
    steps = [{"step": i, "observation": obs.tolist(), "radar": radar.tolist(), "action": actions[a],
              "shield_overrode": i in marked} for i, (obs, radar, a) in enumerate(episode.recorded)]
    body = {"seed": episode.seed, "fps": fps, "steps": steps, "episode_steps": episode.steps,
            "overridden_steps": list(episode.overridden_steps), "crashed": episode.crashed}
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


def _tradeoff_svg(loop: ClosedLoop) -> str:
    w, h, pad = 420, 260, 40
    rows = list(loop.summaries.values())
    speeds = [r.mean_speed for r in rows] or [0.0]
    lo, hi = min(speeds) - 1, max(speeds) + 1
    parts = [f'<svg width="{w}" height="{h}" xmlns="http://www.w3.org/2000/svg" font-size="11">',
             f'<line x1="{pad}" y1="{h - pad}" x2="{w - 10}" y2="{h - pad}" stroke="#444"/>',
             f'<line x1="{pad}" y1="10" x2="{pad}" y2="{h - pad}" stroke="#444"/>',
             f'<text x="{w // 2 - 40}" y="{h - 8}">mean speed (m/s)</text>',
             '<text x="4" y="20">collision</text><text x="4" y="32">rate</text>',
             f'<text x="{pad - 4}" y="{h - pad + 14}">{lo:.0f}</text>',
             f'<text x="{w - 30}" y="{h - pad + 14}">{hi:.0f}</text>',
             f'<text x="{pad - 22}" y="{14}">1.0</text><text x="{pad - 22}" y="{h - pad}">0</text>']
    for r in rows:
        x = pad + (r.mean_speed - lo) / (hi - lo) * (w - pad - 20)
        y = (h - pad) - r.collision_rate * (h - pad - 10)
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#1f77b4"/>'
                     f'<text x="{x + 7:.1f}" y="{y - 4:.1f}">{html.escape(r.policy)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    cols = list(rows[0])

    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{cell(r[c])}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(loop: ClosedLoop, path: Path, *, title: str, gif: Path | None) -> Path:
    """Write the HTML report (the GIF is referenced by its file name, beside the page)."""
    summaries = [s.to_dict() for s in loop.summaries.values()]
    per_episode = [{"policy": name, **e.to_dict()} for name, eps in loop.episodes.items() for e in eps]
    for row in per_episode:
        row["overridden_steps"] = ",".join(map(str, row["overridden_steps"])) or "-"
    shielded = loop.episodes.get("aiforge+shield", [])
    where = [f"seed {e.seed}: steps {', '.join(map(str, e.overridden_steps))}" for e in shielded if e.overrides]
    replay = (f'<img src="{html.escape(gif.name)}" alt="episode replay">' if gif is not None
              else "<p>(no replay recorded)</p>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(loop.env.scenario)} scenario, {html.escape(loop.env.observation)} observations,
{len(loop.seeds)} seeded episodes (seeds {loop.seeds[0]}-{loop.seeds[-1]}).</p>
<h2>Replay (aiforge + shield, first episode; red frames: the shield overrode the policy)</h2>{replay}
<h2>Speed / collision trade-off</h2>{_tradeoff_svg(loop)}
<h2>Policies</h2>{_table(summaries)}
<h2>Where the shield intervened</h2><p>{html.escape('; '.join(where)) or 'nowhere'}</p>
<h2>Episodes</h2>{_table(per_episode)}
</body></html>"""
    path.write_text(page, encoding="utf-8")
    return path
