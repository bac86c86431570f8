"""``mmr demo``'s run: shapes in a table, embedded by the worker, searched five ways, shown as HTML.

Everything runs locally: the embedded PostgreSQL, the project's own ``shapes-clip`` model
(onnx_models/shapes-clip), the worker and the SQL search functions.
"""

from __future__ import annotations

import html
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import psycopg
from psycopg import sql

from .. import collections as coll
from .. import db, install, retrieval
from ..encoders import get_encoder
from ..search import Hit, search
from . import sql as dsql
from .shapes.generator import Attributes, canonical_caption, generate, render

__all__ = ["DemoResult", "run_demo"]

COLLECTION = "demo_shapes"
TABLE = "demo_shapes"
MODEL = "shapes-clip"


@dataclass
class Section:
    """One query of the demo and its results."""

    title: str
    query_text: str | None
    query_image: bytes | None
    hits: list[tuple[int, float]]
    sql: str = ""  # the statement a psql user runs for the same results (mmr.embed)
    query_file: str | None = None  # where query_image is written, under the page's img/
    query_label: str = "query image"


@dataclass
class DemoResult:
    """What the demo did: rows, timings and the page it wrote."""

    rows: int
    seconds: float
    page: Path
    sections: list[Section]


def _png(img: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _fixed_scenes() -> list[Attributes]:
    """Scenes the queries below are about, so the demo always has them."""
    return [
        Attributes("circle", "red", "large", "center", 1),
        Attributes("circle", "blue", "large", "center", 1),
        Attributes("star", "yellow", "small", "top", 2),
        Attributes("triangle", "green", "large", "left", 1),
        Attributes("square", "purple", "small", "right", 3),
    ]


def _create_table(conn: psycopg.Connection[Any], n: int) -> list[tuple[int, bytes, str]]:
    rng = np.random.default_rng(7)
    rows: list[tuple[int, bytes, str]] = []
    for i, a in enumerate(_fixed_scenes()):
        rows.append((i + 1, _png(render(a, rng)), canonical_caption(a)))
    for sample in generate(n - len(rows), seed=7):
        rows.append((len(rows) + 1, _png(sample.image), sample.caption))
    if conn.execute(
        "SELECT 1 FROM mmr.collections WHERE collection = %s", (COLLECTION,)
    ).fetchone():
        coll.drop_collection(conn, COLLECTION)
    conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    conn.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, image bytea, caption text)")
    with conn.cursor().copy(f"COPY {TABLE} (id, image, caption) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    return rows


def _embed(items: Sequence[str | bytes]) -> list[np.ndarray[Any, Any]]:
    return list(get_encoder(MODEL).embed_batch(items))


def _hits(result: Sequence[Hit]) -> list[tuple[int, float]]:
    return [(int(h.key), float(h.score)) for h in result]


def run_demo(
    out_dir: Path,
    n: int = 400,
    k: int = 6,
    url: str | None = None,
    worker_url: str | None = None,
) -> DemoResult:
    """Build the demo collection, embed it with the worker, run the queries, write the page.

    The worker logs in at ``worker_url`` (default: ``url`` when given, else ``mmr_worker`` on
    the embedded server or ``MMR_WORKER_DATABASE_URL``/``MMR_DATABASE_URL``).
    """
    from ..worker import Worker, WorkerConfig

    start = time.monotonic()
    target = db.resolve_url(url)
    install.upgrade(target)
    encoder = get_encoder(MODEL)
    with db.connect(target, autocommit=True) as conn:
        rows = _create_table(conn, n)
        coll.create_collection(
            conn, COLLECTION, TABLE, image_column="image", text_columns=["caption"]
        )
        coll.add_space(conn, COLLECTION, "clip_image", MODEL, "image", encoder.dimension)
        coll.add_space(conn, COLLECTION, "clip_caption", MODEL, "caption", encoder.dimension)
        retrieval.create_text_index(conn, COLLECTION)
    as_worker = worker_url or url or db.resolve_worker_url()
    stats = Worker(as_worker, WorkerConfig(collections=(COLLECTION,), once=True)).run()
    embedded_s = time.monotonic() - start

    sections: list[Section] = []
    img_dir = out_dir.resolve() / "img"
    with db.connect(target, autocommit=True) as conn:
        text = "a large red circle in the center"
        (tvec,) = _embed([text])
        sections.append(
            Section(
                "Text → image",
                text,
                None,
                _hits(search(conn, COLLECTION, "clip_image", tvec, k)),
                dsql.text_search_sql(COLLECTION, "clip_image", text, k),
            )
        )

        # a new drawing the table does not hold (another random layout of the scene)
        query_png = _png(
            render(Attributes("star", "yellow", "small", "top", 2), np.random.default_rng(3))
        )
        (ivec,) = _embed([query_png])
        sections.append(
            Section(
                "Image → image (a new drawing, not in the table)",
                None,
                query_png,
                _hits(search(conn, COLLECTION, "clip_image", ivec, k)),
                dsql.image_search_sql(COLLECTION, "clip_image", img_dir / "query.png", k),
                "query.png",
            )
        )

        ref_png = rows[0][1]  # the large red circle in the center
        modifier = "make it blue"
        (mvec,) = _embed([modifier])
        composed = retrieval.composed_search(
            conn,
            COLLECTION,
            "clip_image",
            None,
            mvec,
            method="weighted",
            k=k,
            reference_key=1,
            params={"alpha": 0.5},
        )
        sections.append(
            Section(
                f"Composed: this image, but “{modifier}”",
                modifier,
                ref_png,
                _hits(composed),
                dsql.composed_sql(
                    COLLECTION, "clip_image", 1, modifier, "weighted", k, {"alpha": 0.5}
                ),
                "reference.png",
                "reference: row #1",
            )
        )

        hybrid_text = "green triangle"
        (hvec,) = _embed([hybrid_text])
        hybrid = retrieval.hybrid_search(
            conn, COLLECTION, hybrid_text, [("clip_image", hvec), ("clip_caption", hvec)], k=k
        )
        sections.append(
            Section(
                "Hybrid: full-text + text→image + text→caption (RRF)",
                hybrid_text,
                None,
                _hits(hybrid),
                dsql.hybrid_sql(COLLECTION, hybrid_text, ["clip_image", "clip_caption"], k),
            )
        )

        filtered_text = "a star"
        (fvec,) = _embed([filtered_text])
        filtered = search(conn, COLLECTION, "clip_image", fvec, k, filter={"id": {"<=": 100}})
        sections.append(
            Section(
                "Filtered: “a star” among rows with id ≤ 100",
                filtered_text,
                None,
                _hits(filtered),
                dsql.text_search_sql(
                    COLLECTION, "clip_image", filtered_text, k, filter={"id": {"<=": 100}}
                ),
            )
        )
        table = sql.Identifier(TABLE)
        images = dict(conn.execute(sql.SQL("SELECT id, image FROM {}").format(table)).fetchall())
        captions = dict(
            conn.execute(sql.SQL("SELECT id, caption FROM {}").format(table)).fetchall()
        )

    elapsed = time.monotonic() - start
    page = _write_page(out_dir, sections, images, captions, len(rows), elapsed, stats.done)
    for s in sections:
        click.echo(f"\n{s.title}" + (f": {s.query_text!r}" if s.query_text else ""))
        for key, score in s.hits:
            click.echo(f"  {score:6.3f}  #{key:<4} {captions[key]}")
    click.echo(
        f"\n{len(rows)} rows embedded by the worker in {embedded_s:.1f} s "
        f"(image and caption spaces, {encoder.provider}); everything in {elapsed:.1f} s"
    )
    click.echo(f"results page: {page}")
    click.echo(
        "Use a real CLIP instead: `mmr models export openai/clip-vit-base-patch32 --name clip` "
        "(needs network access to the Hugging Face hub), then add spaces with encoder 'clip' "
        "(docs/models.md)."
    )
    return DemoResult(len(rows), elapsed, page, sections)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; background: #fafafa; color: #222; }
section { margin-bottom: 2em; }
.row { display: flex; gap: 1em; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 0; text-align: center; width: 132px; font-size: 12px; }
figure img { width: 128px; height: 128px; image-rendering: pixelated; border: 1px solid #ccc; }
.query img { border: 3px solid #c33; }
.score { color: #666; }
.sql { position: relative; max-width: 60em; }
.sql pre { background: #272822; color: #f8f8f2; padding: 0.8em 1em; border-radius: 4px;
           overflow-x: auto; font-size: 13px; margin: 0.5em 0 1em; }
.sql button { position: absolute; top: 0.4em; right: 0.4em; font-size: 12px; }
"""

# Counts the images that actually decoded, for the browser test and for curious readers.
_SCRIPT = """
function copySql(button) {
  const text = document.getElementById(button.dataset.target).textContent;
  const done = ok => { button.dataset.copied = ok ? 'yes' : 'no';
                       button.textContent = ok ? 'Copied' : 'Select and copy'; };
  const fallback = () => {
    const area = document.createElement('textarea');
    area.value = text;
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
    area.remove();
    done(ok);
  };
  if (navigator.clipboard) {
    navigator.clipboard.writeText(text).then(() => done(true), fallback);
  } else {
    fallback();
  }
}
window.addEventListener('load', () => {
  if (location.hash === '#copy-test') {
    document.querySelectorAll('button.copy').forEach(b => copySql(b));
  }
  const imgs = Array.from(document.images);
  document.body.dataset.imagesTotal = imgs.length;
  document.body.dataset.imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
});
"""


def _figure(src: str, caption: str, extra: str = "", cls: str = "") -> str:
    return (
        f'<figure class="{cls}"><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}{extra}</figcaption></figure>"
    )


def _write_page(
    out_dir: Path,
    sections: list[Section],
    images: dict[int, bytes],
    captions: dict[int, str],
    rows: int,
    elapsed: float,
    embedded: int,
) -> Path:
    img_dir = out_dir / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>pg_mmretrieval demo</title>",
        f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>",
        "<h1>pg_mmretrieval demo</h1>",
        f"<p>{rows} generated shape images with captions in PostgreSQL, {embedded} embeddings "
        f"written by the worker with the project's <code>shapes-clip</code> model, searched with "
        f"the SQL functions of schema <code>mmr</code> ({elapsed:.1f} s in all). Each section "
        "shows the SQL statement that gives its results from psql: <code>mmr.embed</code> "
        "encodes the query text or image in the database.</p>",
    ]
    for i, s in enumerate(sections):
        parts.append(f"<section><h2>{html.escape(s.title)}</h2><div class='row'>")
        if s.query_image is not None:
            name = s.query_file or f"query{i}.png"
            (img_dir / name).write_bytes(s.query_image)
            parts.append(_figure(f"img/{name}", s.query_label, cls="query"))
        if s.query_text:
            parts.append(f"<p><b>query:</b> “{html.escape(s.query_text)}”</p>")
        parts.append("</div>")
        if s.sql:
            parts.append(
                f"<div class='sql'><button class='copy' data-target='sql{i}' "
                "onclick='copySql(this)'>Copy</button>"
                f"<pre><code id='sql{i}' class='language-sql'>{html.escape(s.sql)}</code></pre>"
                "</div>"
            )
        parts.append("<div class='row'>")
        for rank, (key, score) in enumerate(s.hits, 1):
            name = f"{key}.png"
            (img_dir / name).write_bytes(images[key])
            parts.append(
                _figure(
                    f"img/{name}",
                    f"{rank}. {captions[key]}",
                    f"<br><span class='score'>#{key} · {score:.3f}</span>",
                )
            )
        parts.append("</div></section>")
    parts.append("</body></html>")
    page = out_dir / "index.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return page.resolve()
