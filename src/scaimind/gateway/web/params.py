"""Query parameters several routes share (paging)."""

from typing import Annotated

from fastapi import Query

from scaimind.contract import limits

PageToken = Annotated[
    str,
    Query(max_length=limits.PAGE_TOKEN_CHARS, description="next_page_token of the previous page."),
]


def page_size(items: str) -> object:
    """The page-size query parameter of a list of `items` (1–100, default 20)."""
    return Query(ge=1, le=100, description=f"{items.capitalize()} per page.")
