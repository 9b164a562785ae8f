"""The duplicate groups of the served version: `GET /duplicates`, largest first, paged with the search cursor."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query

from app.routes.answers import took_ms
from app.routes.deps import Serving
from app.schemas import MAX_K, DuplicatesResponse, error_responses
from clipspace.index.cursors import MAX_CURSOR_CHARS, query_digest
from clipspace.index.records import ItemRecord

router = APIRouter(tags=["items"])

# A walk through the groups is bound to the version like a search's: the groups belong to it.
WALK = query_digest(["duplicates"])


@router.get("/duplicates", response_model=DuplicatesResponse, responses=error_responses(400, 410, 422, 503))
async def duplicates(serving: Serving,
                     k: Annotated[int, Query(ge=1, le=MAX_K, description="groups per page")] = 10,
                     cursor: Annotated[str | None, Query(min_length=1, max_length=MAX_CURSOR_CHARS,
                                                         description="the previous page's next_cursor")] = None,
                     ) -> dict:
    """Groups of duplicates (copies, resized, recompressed, cropped, recoloured, a moment later) found when the
    index was built; a version built before groups existed has none."""
    started = time.perf_counter()
    given = serving.index.page_start(cursor, WALK)
    version = serving.index.version
    groups = version.duplicates.largest_first
    page = groups[given:given + k]
    records = version.records([member for group in page for member in group])
    return {"index_version": version.name, "total_groups": len(groups),
            "groups": [{"id": group[0], "size": len(group),
                        "items": [_item(records[member]) for member in group if member in records]}
                       for group in page],
            "next_cursor": serving.index.next_cursor(WALK, given + k, len(groups)), "took_ms": took_ms(started)}


def _item(record: ItemRecord) -> dict:
    return {"id": record.id, "path": record.path, "url": f"/images/{record.id}", "thumb_url": f"/thumbs/{record.id}",
            "bytes": record.bytes, "width": record.width, "height": record.height,
            "taken_at": record.facts.taken_at}
