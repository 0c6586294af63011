"""A Python source as a client would write one: an API's pages of people, a page at a time."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

from etl_assets.engine.sources import SourceContext


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:  # an HTTP error raises HTTPError
        return json.load(response)


def fetch_people(context: SourceContext) -> Iterator[dict]:
    """Every page of ``/people`` for the partition's day; each page retried by the context."""
    base, page = context.options["base_url"], 1
    while True:
        url = f"{base}/people?day={context.window_start:%Y-%m-%d}&page={page}"
        body = context.page(page, lambda url=url: _get(url))
        yield from body["items"]
        if not body["next"]:
            return
        page += 1
