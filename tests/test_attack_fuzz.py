"""Issue 12: a fuzz test over every function of schema mmr (those PUBLIC may execute, and the
administrative ones), with random and boundary arguments.

Every function is called ``CALLS`` times with arguments drawn (fixed seed) per argument: often a
plausible value chosen by the parameter's name (the fixture's collection and spaces, a valid
vector, k = 5, a known method, realistic params), else a boundary value of its type: NULL, 0, -1,
huge integers, NaN / Infinity floats, empty, blank, huge and odd-unicode texts, malformed and
deeply nested jsonb, empty and large arrays, zero, NaN-free-but-huge, and wrong-dimension vectors,
names of missing collections and spaces.  Each call runs in its own transaction, always rolled
back (administrative calls leave nothing behind), under ``statement_timeout = 3s``.

The rule: a call passes when it returns a result, or fails with a clear error.  It FAILS when it
  * runs into the statement timeout (57014: unbounded work),
  * ends the connection (a backend crash) or raises anything that is not a database error,
  * fails with an internal error: SQLSTATE class XX (elog(ERROR), "cache lookup failed", ...),
  * fails with 22012 division_by_zero (an unchecked parameter reached a formula),
  * or (search functions returning scores) returns a NaN or infinite score.
Every other SQLSTATE (22023 invalid_parameter_value, 54000 program_limit_exceeded, 42704
undefined_object, 22P02 invalid_text_representation from a cast of the caller's text, 42601 from
the internal statement runners that take SQL text, ...) is a clear error the caller can act on.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

import pg_mmretrieval as mmr
from pg_mmretrieval import retrieval

from .helpers import unit_vectors

Conn = psycopg.Connection[Any]
D = 8
N = 30
CALLS = 100
SEED = int(os.environ.get("MMR_FUZZ_SEED", "20261202"))  # another seed: explore further
TIMEOUT = "3s"
# Functions never called: trigger functions can only run as triggers (a clear 0A000 anyway).
SKIP_RETURN_TYPES = {"trigger", "event_trigger"}


def _vec(v: Any) -> str:
    return "[" + ",".join(repr(float(x)) for x in v) + "]"


@pytest.fixture(scope="module")
def fz(db_url: str) -> Iterator[Conn]:
    """Collection fz (N rows, a caption, a price) with external spaces img (cosine), l2 (l2) and
    imgh (halfvec), a text index, a BASIC projection and a multi-vector space mv."""
    v = unit_vectors(N, D, seed=11)
    with mmr.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE fz_t (id int PRIMARY KEY, caption text, price int)")
        conn.execute(
            "INSERT INTO fz_t SELECT g, "
            "(ARRAY['red circle','blue square','green star'])[g % 3 + 1], "
            f"g % 7 FROM generate_series(0, {N - 1}) g"
        )
        mmr.create_collection(conn, "fz", "fz_t", text_columns=["caption"])
        retrieval.create_text_index(conn, "fz")
        for name, distance, storage in (
            ("img", "cosine", "vector"),
            ("l2", "l2", "vector"),
            ("imgh", "cosine", "halfvec"),
        ):
            mmr.add_space(conn, "fz", name, "external", None, D, distance=distance, storage=storage)
            mmr.put_embeddings(conn, "fz", name, list(range(N)), v)
        conn.execute(
            "SELECT mmr.set_projection('fz', 'img', ARRAY[%s::vector, %s::vector], %s::vector)",
            (_vec(np.eye(D)[0]), _vec(np.eye(D)[1]), _vec(v[3])),
        )
        conn.execute("SELECT mmr.add_multivector_space('fz', 'mv', %s)", (D,))
        conn.execute(
            "SELECT mmr.put_multivectors('fz', 'mv', '2', ARRAY[%s::vector, %s::vector])",
            (_vec(v[0]), _vec(v[1])),
        )
        # The first mmr.embed in a backend starts PL/Python's interpreter and imports the
        # encoding modules (0.3 s on a quiet machine, seconds under load): done once here, so
        # that the fuzz's 3 s bound measures what each call's arguments make it do.
        for space in ("img", "l2"):  # external spaces: an error, after the imports
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT mmr._embed_each('fz', ARRAY[%s], 'warm up')", (space,))
        yield conn


class Gen:
    """SQL expressions for arguments: plausible by parameter name, else boundary by type."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        vs = unit_vectors(4, D, seed=3)
        self.good_vec = [f"'{_vec(x)}'::vector" for x in vs]
        self.bad_vec = [
            f"'{_vec(np.zeros(D))}'::vector",
            "'[1,2,3]'::vector",
            f"'{_vec(np.full(D, 1e30))}'::vector",
            f"'{_vec(np.full(D, -3e38))}'::vector",
            f"'{_vec(np.full(D, 1e-40))}'::vector",
            "NULL::vector",
            "array_fill(1, ARRAY[16000])::real[]::vector",
        ]

    def pick(self, xs: list[str]) -> str:
        return self.rng.choice(xs)

    def lit(self, value: str, typ: str) -> str:
        return sql.Literal(value).as_string(None) + "::" + typ

    def text_boundary(self) -> str:
        return self.pick(
            [
                "NULL::text",
                "''",
                "'   '",
                "E'\\t\\n'",
                "repeat('x', 20000)",
                "repeat('w ', 3000)",
                "'semi; DROP TABLE fz_t; --'",
                "'we\"ird'",
                "'quote''d'",
                "U&'\\00e9\\4e2d\\+01F600'",
                "'NaN'",
                "'missing'",
                "E'\\u3000'",
                "'%s %I %L'",
                "'$1'",
            ]
        )

    def jsonb_boundary(self) -> str:
        deep = "[" * 400 + "]" * 400  # (the server takes far deeper; a client decodes it)
        return self.pick(
            [
                "NULL::jsonb",
                "'{}'::jsonb",
                "'[]'::jsonb",
                "'[1]'::jsonb",
                "'null'::jsonb",
                "'\"x\"'::jsonb",
                "'1'::jsonb",
                "'1e300'::jsonb",
                f"'{deep}'::jsonb",
                '\'{"a": {"b": {"c": [1, {"d": null}]}}}\'::jsonb',
                "'{\"price\": [4, 5]}'::jsonb",
                '\'{"price": {"<": [1]}}\'::jsonb',
                '\'{"price": {"in": 5}}\'::jsonb',
                "'{\"nope\": 1}'::jsonb",
                '\'{"id": {"~": 1}}\'::jsonb',
                '\'{"id": "abc"}\'::jsonb',
                "jsonb_build_object(repeat('k', 70000), 1)",
            ]
        )

    def params(self) -> str:
        keys = [
            "alpha", "beta", "gamma", "a", "temperature", "lr", "steps", "candidates",
            "rrf_k", "norm", "lambda", "decay", "weighting", "fb_docs", "qe_k", "qe_scale",
            "caption_space", "caption_spaces", "reference_caption", "reference_captions",
            "exclude_reference", "relevant", "nonrelevant", "projection", "min_norm",
            "min_norm_source", "query_expansion", "text_config", "exact_space", "weight",
            "caption_query", "caption_query",
        ]  # fmt: skip
        values = [
            "0", "-1", "1", "0.5", "1e9", "-1e9", "1e300", "2147483648", "null", "true",
            "\"img\"", "\"l2\"", "\"missing\"", "[]", "[1]", "[\"img\"]", "[[1,2]]", "{}",
            "\"none\"", "\"english\"", "[0, 1]", "\"decay\"", "\"x\"",
        ]  # fmt: skip
        n = self.rng.randint(0, 3)
        obj = ", ".join(f'"{self.rng.choice(keys)}": {self.rng.choice(values)}' for _ in range(n))
        return sql.Literal("{" + obj + "}").as_string(None) + "::jsonb"

    def good(self, name: str, typ: str) -> str | None:
        """A plausible value for a parameter by its name (None: no opinion)."""
        n = name.lower()
        if typ == "text":
            if n in ("collection", "p_collection", "collection_name"):
                return self.pick(["'fz'", "'fz'", "'missing'"])
            if n in ("space", "p_space", "exact_space"):
                return self.pick(["'img'", "'l2'", "'imgh'", "'mv'", "'missing'"])
            if n in ("method", "p_method"):
                return self.pick(
                    ["'weighted'", "'slerp'", "'image_only'", "'text_only'", "'score_sum'",
                     "'product'", "'weimocir'", "'pdv'", "'basic'", "'gqr'", "'GQR'", "'nope'"]
                )  # fmt: skip
            if n in ("fusion", "p_fusion"):
                return self.pick(["'rrf'", "'combsum'", "'combmnz'", "'avgrank'", "'x'"])
            if n in ("norm", "p_norm"):
                return self.pick(["'minmax'", "'zscore'", "'none'", "'x'"])
            if n in ("rerank", "p_rerank"):
                return self.pick(["NULL::text", "'exact'", "'mmr'", "'caption'", "'nope'"])
            if n in ("query_text", "p_query_text", "p_text"):
                return self.pick(["'red circle'", "'red OR \"blue square\" -star'", "''"])
            if n in ("column_name",):
                return self.pick(["'caption'", "'price'", "'nope'"])
            if n in ("distance", "p_distance"):
                return self.pick(["'cosine'", "'l2'", "'inner_product'", "'x'"])
            if n in ("storage", "p_storage"):
                return self.pick(["'vector'", "'halfvec'", "'x'"])
        if typ in ("integer", "bigint", "smallint"):
            if n in ("k", "p_k"):
                return self.pick(["5", "10", "1", "999", "1000", "1001", "0", "-1"])
            if n in ("candidates", "rerank_depth", "ef_search", "max_scan_tuples", "p_n"):
                return self.pick(["NULL::int", "20", "1000", "1001", "0"])
            if n in ("dimensions", "p_dimensions"):
                return self.pick([str(D), "3", "0", "20000"])
        if typ == "jsonb":
            if n in ("params", "p_params", "p", "rerank_params", "p_rerank_params"):
                return self.params()
            if n in ("filter", "p_filter"):
                return self.pick(
                    ["NULL::jsonb", "'{\"price\": {\"<\": 4}}'::jsonb",
                     "'{\"caption\": \"red circle\"}'::jsonb",
                     "'{\"price\": {\"in\": [1,2]}}'::jsonb"]
                )  # fmt: skip
            if n in ("reference_key", "key", "p_key", "p_ref_key", "p_exclude"):
                return self.pick(["'1'::jsonb", "'2'::jsonb", "'999'::jsonb", "'\"x\"'::jsonb"])
            if n in ("runs",):
                return self.pick(
                    ["'[[{\"key\": 1, \"score\": 0.5}, {\"key\": 2, \"score\": 0.1}], "
                     "[{\"key\": 2, \"score\": 3}]]'::jsonb",
                     "'[[{\"key\": 1, \"score\": \"NaN\"}]]'::jsonb", "'[{}]'::jsonb"]
                )  # fmt: skip
        if typ == "vector":
            return self.pick(self.good_vec)
        if typ == "vector[]":
            if n in ("spaces_vectors",):
                return None
            return self.pick(
                [f"ARRAY[{self.good_vec[0]}]", f"ARRAY[{self.good_vec[1]}, {self.good_vec[2]}]"]
            )
        if typ == "text[]" and n in ("spaces", "p_spaces"):
            return self.pick(["'{img}'::text[]", "'{img,l2}'::text[]", "'{}'::text[]"])
        if typ == "jsonb[]":
            return self.pick(["ARRAY['1', '2', '3']::jsonb[]", "ARRAY['4']::jsonb[]"])
        if typ == "double precision[]":
            return self.pick(["ARRAY[0.9, 0.5, 0.1]::float8[]", "ARRAY[1, 1]::float8[]"])
        if typ == "regclass":
            return self.pick(["'fz_t'::regclass", "'mmr._collection'::regclass"])
        if typ == "regconfig":
            return self.pick(["'english'::regconfig", "'simple'::regconfig"])
        if typ == "mmr._collection":
            return "(SELECT x FROM mmr._collection x WHERE x.name = 'fz')"
        if typ == "mmr._space":
            return self.pick(
                ["(SELECT x FROM mmr._space x ORDER BY x.id LIMIT 1)",
                 "(SELECT x FROM mmr._space x ORDER BY x.id DESC LIMIT 1)"]
            )  # fmt: skip
        return None

    def boundary(self, typ: str) -> str:
        """A random or boundary value of a type."""
        if typ in ("integer", "smallint"):
            return self.pick(
                ["NULL::int", "0", "-1", "1", "2", "1000", "1001", "2147483647", "-2147483648"]
            )
        if typ == "bigint":
            return self.pick(["NULL::bigint", "0", "-1", "9223372036854775807", "3"])
        if typ in ("double precision", "real", "numeric"):
            return self.pick(
                ["NULL::float8", "0", "-1", "0.5", "1", "'NaN'::float8", "'Infinity'::float8",
                 "'-Infinity'::float8", "1e308", "-1e308", "1e-308", "60"]
            )  # fmt: skip
        if typ == "boolean":
            return self.pick(["NULL::boolean", "true", "false"])
        if typ == "text" or typ == "name":
            return self.text_boundary()
        if typ == "jsonb":
            return self.pick([self.jsonb_boundary(), self.params()])
        if typ == "jsonb[]":
            return self.pick(
                ["NULL::jsonb[]", "'{}'::jsonb[]", "ARRAY[NULL]::jsonb[]",
                 "ARRAY['\"x\"']::jsonb[]",
                 "ARRAY(SELECT to_jsonb(g) FROM generate_series(1, 5000) g)",
                 "ARRAY['{\"a\": 1}']::jsonb[]"]
            )  # fmt: skip
        if typ == "vector":
            return self.pick(self.bad_vec + self.good_vec)
        if typ == "vector[]":
            return self.pick(
                ["NULL::vector[]", "'{}'::vector[]", f"ARRAY[{self.bad_vec[0]}]",
                 f"ARRAY[{self.bad_vec[1]}, {self.good_vec[0]}]", "ARRAY[NULL::vector]",
                 f"array_fill({self.good_vec[0]}, ARRAY[3000])",
                 f"ARRAY[{self.bad_vec[2]}, {self.bad_vec[3]}]"]
            )  # fmt: skip
        if typ == "double precision[]":
            return self.pick(
                ["NULL::float8[]", "'{}'::float8[]", "'{NaN}'::float8[]",
                 "'{Infinity,1}'::float8[]",
                 "'{-1,2}'::float8[]", "'{{1,0},{0,1}}'::float8[]", "ARRAY[NULL]::float8[]",
                 "array_fill(0.5::float8, ARRAY[40, 40])"]
            )  # fmt: skip
        if typ == "text[]":
            return self.pick(
                ["NULL::text[]", "'{}'::text[]", "'{img}'::text[]", "'{img,l2,imgh}'::text[]",
                 "'{missing}'::text[]", "ARRAY[NULL]::text[]", "'{\"\"}'::text[]",
                 "array_fill('img'::text, ARRAY[40])"]
            )  # fmt: skip
        if typ == "bigint[]":
            return self.pick(["NULL::bigint[]", "'{}'::bigint[]", "'{1,-1}'::bigint[]"])
        if typ == "regclass":
            return self.pick(["NULL::regclass", "'pg_class'::regclass", "'fz_t'::regclass"])
        if typ == "regconfig":
            return self.pick(["NULL::regconfig", "'english'::regconfig"])
        if typ == "regprocedure":
            return self.pick(
                ["NULL::regprocedure", "'pg_catalog.now()'::regprocedure",
                 "'mmr.rerank_exact(text,text,vector,jsonb[],float8[],jsonb)'::regprocedure"]
            )  # fmt: skip
        if typ == "interval":
            return self.pick(["NULL::interval", "'-1 day'::interval", "'10 years'::interval"])
        if typ == "bytea":
            return self.pick(["NULL::bytea", "''::bytea", "'\\x00ff'::bytea"])
        if typ in ("mmr._collection", "mmr._space", "mmr._search_plan"):
            return self.pick([f"NULL::{typ}", self.good(typ, typ) or f"NULL::{typ}"])
        return f"NULL::{typ}"

    def arg(self, name: str, typ: str) -> str:
        if self.rng.random() < 0.6:
            g = self.good(name, typ)
            if g is not None:
                return g
        return self.boundary(typ)


def _functions(conn: Conn) -> list[tuple[str, list[str], list[str], str, bool]]:
    """(name, arg names, arg types, return type, returns a set) of every function in mmr."""
    rows = conn.execute(
        "SELECT p.proname, coalesce(p.proargnames[1:p.pronargs], '{}'), "
        "ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes::oid[]) t), "
        "format_type(p.prorettype, NULL), p.proretset "
        "FROM pg_proc p WHERE p.pronamespace = 'mmr'::regnamespace AND p.prokind = 'f' "
        "ORDER BY p.proname, p.oid"
    ).fetchall()
    return [
        (
            r[0],
            list(r[1]) or [""] * len(r[2]),
            [t.removeprefix("public.") for t in r[2]],
            r[3],
            r[4],
        )
        for r in rows
    ]


def _bad_scores(rows: list[Any]) -> bool:
    for r in rows:
        for x in r:
            if isinstance(x, float) and not math.isfinite(x):
                return True
    return False


def test_fuzz_every_function(fz: Conn) -> None:
    conn = fz
    fns = _functions(conn)
    public = {
        r[0]
        for r in conn.execute(
            "SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'mmr'::regnamespace "
            "AND has_function_privilege('public', p.oid, 'EXECUTE')"
        ).fetchall()
    }
    assert {"search", "composed_search", "hybrid_search", "gqr_refine", "fuse"} <= public
    rng = random.Random(SEED)
    gen = Gen(rng)
    failures: list[str] = []
    calls = 0
    t_start = time.monotonic()
    slowest: tuple[float, str] = (0.0, "")
    for name, argnames, argtypes, rettype, retset in fns:
        if rettype in SKIP_RETURN_TYPES:
            continue
        for _ in range(CALLS):
            args = [gen.arg(n or "", t) for n, t in zip(argnames, argtypes, strict=True)]
            stmt = f"SELECT * FROM mmr.{sql.Identifier(name).as_string(None)}({', '.join(args)})"
            calls += 1
            t0 = time.monotonic()
            outcome = _run(conn, stmt, retset and not name.startswith("_"))
            took = time.monotonic() - t0
            slowest = max(slowest, (took, stmt[:200]))
            if outcome is not None:
                failures.append(f"{outcome}: {stmt[:400]}")
    elapsed = time.monotonic() - t_start
    print(f"fuzz: {calls} calls of {len(fns)} functions in {elapsed:.1f} s; slowest {slowest}")
    print("fuzz outcomes:", OUTCOMES.most_common(25))
    assert not failures, "\n".join(failures[:40]) + f"\n({len(failures)} failures)"


OUTCOMES: Counter[str] = Counter()


def _run(conn: Conn, stmt: str, scores: bool) -> str | None:
    """None when the call ended in a result or a clear error, else what went wrong; `scores`:
    the rows must not hold a non-finite number (a search function's scores)."""
    check: Callable[[list[Any]], bool] = _bad_scores if scores else (lambda _rows: False)
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(f"SET LOCAL statement_timeout = '{TIMEOUT}'")
            rows = conn.execute(stmt).fetchall()
            if check(rows):
                return "non-finite score or value returned"
            OUTCOMES["result"] += 1
    except psycopg.errors.QueryCanceled:
        return f"timeout ({TIMEOUT})"
    except psycopg.Error as e:
        if conn.broken or conn.closed:
            return f"connection lost: {e}"
        state = e.sqlstate or ""
        OUTCOMES[state] += 1
        if state.startswith("XX") or state == "22012" or not state:
            return f"{state} {str(e).splitlines()[0]}"
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None
