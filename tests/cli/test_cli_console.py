"""`scaimind console` against a real `scaimind serve`: the URL it prints opens the console."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from scaimind.cli.api import token_claims
from tests.cli.conftest import Server, scaimind
from tests.conftest import closed_port

UI = "/v1/modules/scaimind/ui/"


def _token_of(url: str, server: Server) -> str:
    """The token in a console URL of `server`, after checking the rest of the URL."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == server.url
    assert parts.path == UI
    assert parts.query == ""
    assert parts.fragment.startswith("token=")
    return unquote(parts.fragment.removeprefix("token="))


def test_mints_a_token_for_the_servers_data_dir(server: Server) -> None:
    printed = server.run(
        "console",
        "--tenant",
        "acme",
        "--user",
        "alice",
        "--data-dir",
        str(server.data_dir),
        token="",
    )
    assert printed.code == 0, printed.err
    url = printed.out.strip()
    assert len(printed.out.splitlines()) == 1
    token = _token_of(url, server)
    claims = token_claims(token)
    assert (claims["tenant_id"], claims["sub"], claims["role"]) == ("acme", "alice", "tenant_admin")
    # The page and the API accept what the URL carries (the fragment never reaches the server).
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    jobs = httpx.get(
        f"{server.url}/v1/modules/scaimind/jobs",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert jobs.status_code == 200, jobs.text


def test_takes_a_token_and_accepts_one_without_view(server: Server) -> None:
    printed = server.ok("console")  # SCAIMIND_TOKEN of the test server
    assert _token_of(printed.out.strip(), server) == server.token
    # A token that may only evaluate is still a valid sign-in (the pages say what it may do).
    evaluator = server.run(
        "console",
        "--tenant",
        "acme",
        "--user",
        "eve",
        "--role",
        "tenant_user",
        "--scope",
        "scaimind:evaluate",
        "--data-dir",
        str(server.data_dir),
        token="",
    )
    assert evaluator.code == 0, evaluator.err
    assert token_claims(_token_of(evaluator.out.strip(), server))["scope"] == "scaimind:evaluate"


def test_refusals(server: Server, tmp_path: Path) -> None:
    nothing = server.run("console", token="")
    assert nothing.code == 2
    assert "--tenant and --user" in nothing.err
    # Minted for another data dir: the server refuses it, and the message says why.
    foreign = server.run(
        "console", "--tenant", "acme", "--user", "alice", "--data-dir", str(tmp_path), token=""
    )
    assert foreign.code == 1, foreign.out
    assert foreign.out == ""
    assert "AUTH_TOKEN_INVALID" in foreign.err
    assert f"data dir {tmp_path.resolve()}" in foreign.err
    # No server there: nothing printed, exit 3.
    gone = scaimind("console", url=f"http://127.0.0.1:{closed_port()}", token=server.token)
    assert gone.code == 3, gone.err
    assert gone.out == ""
    assert "cannot reach" in gone.err
    bad_role = server.run(
        "console", "--tenant", "acme", "--user", "alice", "--role", "admin", token=""
    )
    assert bad_role.code == 2
    assert "--role 'admin' is not a role" in bad_role.err
