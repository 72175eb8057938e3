"""The HTTP benchmark's baseline: a bare Falcon endpoint that does one INSERT transaction into
the same PostgreSQL, served by the same gunicorn settings as PEX. Whatever PEX costs beyond
this is the price of negotiation, placement and event sourcing.

    BENCH_BASELINE_DSN=postgresql://… gunicorn -k gthread -w 2 --threads 4 'bench.baseline_app:create()'
"""

from __future__ import annotations

import json
import os
import threading

import falcon


class Insert:
    def __init__(self, dsn: str):
        self.dsn = dsn
        self._pool = None
        self._lock = threading.Lock()

    def pool(self):
        # Built lazily in the worker, after the fork, as PEX builds its application.
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    from psycopg_pool import ConnectionPool

                    self._pool = ConnectionPool(self.dsn, min_size=4, max_size=8, open=True)
        return self._pool

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        body = req.get_media()
        with self.pool().connection() as conn, conn.transaction():
            row = conn.execute(
                "INSERT INTO bench_requests (body) VALUES (%s) RETURNING id", (json.dumps(body),)
            ).fetchone()
        resp.status = falcon.HTTP_201
        resp.media = {"id": row[0], "reply": "ACCEPT"}


def create_table(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_requests (id bigserial PRIMARY KEY, body jsonb NOT NULL)")


def create() -> falcon.App:
    app = falcon.App()
    app.add_route("/insert", Insert(os.environ["BENCH_BASELINE_DSN"]))
    return app
