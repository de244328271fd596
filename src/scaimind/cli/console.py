"""`scaimind console`: the URL that opens the web console of a running server, signed in."""

from __future__ import annotations

from typing import Annotated

import typer

from scaimind.cli.base import CliError, ExitCode
from scaimind.cli.common import DEFAULT_URL, DataDirOption, TokenOption, UrlOption, connect
from scaimind.cli.local import RoleOption, ScopeOption, TtlOption, mint_local_token

_MINT = "Minting a token (without --token)"


def console(
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
    tenant: Annotated[
        str | None,
        typer.Option(help="tenant id of the token to mint", rich_help_panel=_MINT),
    ] = None,
    user: Annotated[
        str | None, typer.Option(help="user id of the token to mint", rich_help_panel=_MINT)
    ] = None,
    role: RoleOption = "tenant_admin",
    scope: ScopeOption = "",
    ttl: TtlOption = 3600,
    data_dir: DataDirOption = None,
) -> None:
    """Print the console URL of the server at --url, signed in with a token.

    The token is --token (SCAIMIND_TOKEN), or one minted like `scaimind token` does for
    --tenant and --user (signed with the secret of --data-dir: the server's). It travels in the
    URL's fragment, which browsers never send to a server. The server is asked first, so the
    URL printed works: a server that cannot be reached, or that refuses the token, is an error.
    """
    from scaimind.cli.api import ApiError
    from scaimind.gateway.web.console import console_url

    if not token:
        if not tenant or not user:
            raise CliError(
                "give --token (or SCAIMIND_TOKEN), or --tenant and --user to mint one",
                ExitCode.USAGE,
            )
        token = mint_local_token(tenant, user, role, scope, ttl, data_dir)
    with connect(url, token) as api:
        # The page itself (no token needed): the server runs and serves the console.
        api.request("GET", "/ui/")
        try:
            # The token: accepted (200), or accepted without the view permission (403).
            api.request("GET", "/jobs", params={"page_size": 1})
        except ApiError as exc:
            if exc.status != 403:
                raise
    print(console_url(api.url, token))
