"""The five console pages in Chromium against a real `scaimind serve`: what a person sees, does."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page, expect

from tests.console.conftest import ConsoleFactory, ConsoleServer

ACTIONS = re.compile(
    r"^(Pause|Resume…|Retry…|Cancel…|Drain .*|Enable .*|Submit job|Validate data|Run evaluation)$"
)


def wait_more(page: Page, expression: str, than: int) -> int:
    """Wait until the JavaScript number `expression` exceeds `than`; returns its value."""
    page.wait_for_function(f"() => ({expression}) > {than}")
    return int(page.evaluate(f"() => {expression}"))


def step_in(selector: str) -> str:
    """JavaScript: the N of the first "step N" in the text of `selector` (0 when absent)."""
    return (
        f"Number((document.querySelector({selector!r})?.textContent.match(/step (\\d+)/)"
        " || [0, 0])[1])"
    )


def chart_points(selector: str) -> str:
    """JavaScript: how many points the chart `selector` draws."""
    return f"Number(document.querySelector({selector!r})?.dataset.points || 0)"


CHART_POINTS = chart_points("[data-metric=loss].chart")
LOG_LINES = "document.querySelectorAll('#log-lines li').length"
# The focused element's text (buttons) or name (form controls).
FOCUSED = "() => document.activeElement?.textContent?.trim() || document.activeElement?.name || ''"


def test_sign_in_by_fragment_then_submit_follow_pause_resume_and_cancel(
    console: ConsoleFactory, server: ConsoleServer
) -> None:
    tab = console()
    page = tab.page
    token = server.token()
    tab.sign_in(token, "jobs/new")
    # The token left the address bar (and so history and bookmarks) for this tab's storage.
    assert "token" not in page.url
    assert page.evaluate("() => sessionStorage.getItem('scaimind.token')") == token
    expect(page.locator("#who")).to_contain_text("alice")

    # Job Creator: a malformed file is reported row by row before anything is submitted.
    page.get_by_label("Name", exact=True).fill("console-e2e")
    page.get_by_label("Source 1 path").fill(str(server.malformed))
    page.get_by_role("button", name="Validate data").click()
    problems = page.get_by_role("table", name="Problems by row")
    expect(problems).to_contain_text("invalid JSON")
    expect(problems.get_by_role("row").nth(1)).to_contain_text("2")
    expect(page.get_by_text("Some data is not valid")).to_be_visible()
    tab.shot("creator-invalid")
    page.get_by_label("Source 1 path").fill(str(server.corpus))
    page.get_by_role("button", name="Validate data").click()
    expect(page.get_by_text("All 1 source(s) are valid.")).to_be_visible()
    expect(page.get_by_text("3,000 rows")).to_be_visible()

    page.get_by_label("Max steps").fill("20000")
    page.get_by_label("Batch size").fill("64")
    page.get_by_label("Max sequence length").fill("256")
    page.get_by_label("Checkpoint every (steps)").fill("20")
    page.get_by_label("Labels (key=value per line)").fill("suite=console")
    request = page.locator("#request-json")
    expect(request).to_contain_text('"name": "console-e2e"')
    expect(request).to_contain_text('"max_steps": "20000"')
    expect(request).to_contain_text('"checkpoint_interval_steps": 20')
    tab.shot("creator")

    # A double click is one submission: one Idempotency-Key, one job.
    page.get_by_role("button", name="Submit job").dblclick()
    link = page.locator("#new-job-link")
    expect(link).to_have_text(re.compile(r"^job_"))
    job_id = link.inner_text()
    listed = server.call("GET", "jobs", params={"label": "suite=console", "page_size": 100})
    assert [j["job_id"] for j in listed.json()["data"]["jobs"]] == [job_id]

    # Dashboard: the row appears and its progress moves.
    page.get_by_role("link", name="Training Dashboard").click()
    row = page.locator(f"tr[data-job-id='{job_id}']")
    expect(row).to_be_visible()
    progress = f"tr[data-job-id='{job_id}'] .progress-cell .muted"
    expect(page.locator(progress)).to_contain_text(re.compile(r"step [1-9]\d* / 20000"))
    wait_more(page, step_in(progress), int(page.evaluate(f"() => {step_in(progress)}")))
    expect(page.get_by_role("button", name=re.compile("Running"))).to_contain_text(
        re.compile("[1-9]")
    )
    tab.shot("dashboard")

    # Monitor: the loss chart gains points and log lines arrive while the job trains.
    row.get_by_role("link", name="console-e2e").click()
    expect(page.get_by_role("heading", name="Training Monitor: console-e2e")).to_be_visible()
    points = wait_more(page, CHART_POINTS, 0)
    wait_more(page, CHART_POINTS, points)
    lines = wait_more(page, LOG_LINES, 0)
    wait_more(page, LOG_LINES, lines)
    expect(page.locator("#log-lines")).to_contain_text("checkpoint")
    for metric in ("learning_rate", "grad_norm", "tokens_per_second"):
        wait_more(page, chart_points(f"[data-metric={metric}].chart"), 0)
    tab.shot("monitor")

    # Search filters the lines; the level filter reconnects at the chosen minimum.
    page.get_by_label("Search").fill("checkpoint")
    expect(page.get_by_text(re.compile(r"\d+ of \d+ lines match"))).to_be_visible()
    page.get_by_label("Search").fill("")

    # Pause and resume from the buttons, each with the API's answer shown.
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".status-line .badge")).to_have_text("PAUSED")
    expect(page.get_by_role("status").filter(has_text="Pause:")).to_be_visible()
    paused_at = server.job(job_id)["progress"]["current_step"]
    page.get_by_role("button", name="Resume…").click()
    checkpoint = page.get_by_label("Resume from")
    expect(checkpoint.locator("option")).not_to_have_count(1)
    page.get_by_role("button", name="Resume", exact=True).click()
    expect(page.locator(".status-line .badge")).to_have_text("TRAINING")
    wait_more(page, step_in(".summary"), paused_at)
    wait_more(page, CHART_POINTS, int(page.evaluate(f"() => {CHART_POINTS}")))

    # Cancel, with a reason; the streams end with the job.
    page.get_by_role("button", name="Cancel…").click()
    page.get_by_label("Reason (optional)").fill("enough for the test")
    page.get_by_role("button", name="Confirm cancel").click()
    expect(page.locator(".status-line .badge")).to_have_text("CANCELLED")
    expect(
        page.locator("section")
        .filter(has=page.get_by_role("heading", name="Logs"))
        .locator(".stream-state")
    ).to_contain_text("ended")
    tab.shot("monitor-cancelled")


def test_operator_drains_and_enables_the_node(
    console: ConsoleFactory, server: ConsoleServer
) -> None:
    tab = console()
    page = tab.page
    tab.sign_in(server.token(), "cluster")
    node = page.locator("tr[data-node-id='node-local']")
    expect(node.locator(".badge")).to_have_text("ONLINE")
    expect(page.get_by_text(re.compile(r"free of \d+"))).to_be_visible()
    tab.shot("cluster")

    page.get_by_role("button", name="Drain node-local…").click()
    page.get_by_label("Reason").fill("disk swap")
    page.get_by_role("button", name="Drain", exact=True).click()
    expect(node.locator(".badge")).to_have_text(re.compile("DRAINING|DRAINED"))
    expect(node).to_contain_text("disk swap")
    assert server.call("GET", "cluster/nodes/node-local").json()["data"]["status"] in (
        "DRAINING",
        "DRAINED",
    )
    tab.shot("cluster-drained")

    page.get_by_role("button", name="Enable node-local").click()
    expect(node.locator(".badge")).to_have_text("ONLINE")
    expect(
        page.get_by_role("status").filter(has_text="Enable node-local: node is ONLINE")
    ).to_be_visible()
    assert server.call("GET", "cluster/nodes/node-local").json()["data"]["status"] == "ONLINE"


def test_evaluation_runs_and_shows_its_score(
    console: ConsoleFactory, server: ConsoleServer
) -> None:
    job_id = server.submit("to-evaluate", max_steps=30)
    server.wait_job(job_id, "COMPLETED")
    tab = console()
    page = tab.page
    tab.sign_in(server.token(), "evaluations")
    page.get_by_label("Job", exact=True).select_option(job_id)
    # Left empty: the job's final model is scored, and the list says which model that was.
    expect(page.get_by_label("Model URI")).to_have_value("")
    page.get_by_label("Token accuracy", exact=True).check()
    page.get_by_label("Token accuracy samples").fill("5")
    page.get_by_role("button", name="Run evaluation").click()
    expect(page.get_by_role("status").filter(has_text="Evaluation eval_")).to_be_visible()
    eval_id = re.search(
        r"eval_\w+", page.get_by_role("status").filter(has_text="Evaluation eval_").inner_text()
    )
    assert eval_id
    row = page.locator(f"tr[data-evaluation-id='{eval_id.group(0)}']")
    expect(row.locator(".badge")).to_have_text("COMPLETED")
    expect(row).to_contain_text(f"scaidrive://tenant-a/jobs/{job_id}/model")
    score = row.locator("td.score[data-benchmark=perplexity]")
    expect(score).to_have_text(re.compile(r"^\d[\d,.]*(e[+-]?\d+)?$"))
    accuracy = row.locator("td.score[data-benchmark=token_accuracy]")
    expect(accuracy).to_have_text(re.compile(r"^0(\.\d+)?$|^1$"))
    api = server.call("GET", f"evaluations/{eval_id.group(0)}").json()["data"]
    shown = float(score.inner_text().replace(",", ""))
    actual = next(b["score"] for b in api["benchmarks"] if b["name"] == "perplexity")
    assert abs(shown - actual) <= 1e-3 * actual
    wait_more(page, chart_points("[data-benchmark=perplexity].chart"), 0)
    tab.shot("evaluations")


def test_a_viewer_sees_no_actions(console: ConsoleFactory, server: ConsoleServer) -> None:
    job_id = server.submit("viewed", max_steps=20)
    tab = console()
    page = tab.page
    tab.sign_in(server.token(role="tenant_viewer", user="vera"))
    expect(page.locator(f"tr[data-job-id='{job_id}']")).to_be_visible()
    expect(page.get_by_role("link", name="New job")).to_have_count(0)
    tab.shot("viewer-dashboard")

    tab.open(f"monitor?job={job_id}")
    expect(page.get_by_role("heading", name="Training Monitor: viewed")).to_be_visible()
    wait_more(page, CHART_POINTS, 0)
    expect(page.get_by_role("button", name=ACTIONS)).to_have_count(0)
    expect(page.get_by_role("heading", name="Actions")).to_be_hidden()

    tab.open("cluster")
    expect(
        page.get_by_text("Read-only: draining and enabling nodes needs scaimind:cluster_admin.")
    ).to_be_visible()
    expect(page.locator("tr[data-node-id='node-local']")).to_be_visible()
    expect(page.get_by_role("button", name=ACTIONS)).to_have_count(0)

    tab.open("evaluations")
    expect(page.get_by_role("heading", name="Evaluations", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name=ACTIONS)).to_have_count(0)

    tab.open("jobs/new")
    expect(page.get_by_text("This page needs the permission scaimind:manage")).to_be_visible()
    expect(page.get_by_role("button", name=ACTIONS)).to_have_count(0)
    tab.shot("viewer-creator")


def test_a_forbidden_action_shows_the_api_403_message(
    console: ConsoleFactory, server: ConsoleServer
) -> None:
    # An API key's permissions are not readable in the browser, so its actions are offered and
    # the server decides.
    key = server.api_key(role="tenant_viewer")
    refused = server.call("POST", "cluster/nodes/node-local/drain", token=key, json={})
    assert refused.status_code == 403
    message: str = refused.json()["error"]["message"]
    tab = console()
    page = tab.page
    tab.sign_in(key, "cluster")
    expect(page.locator("#who")).to_contain_text("API key")
    page.get_by_role("button", name="Drain node-local…").click()
    page.get_by_role("button", name="Drain", exact=True).click()
    alert = page.get_by_role("alert").filter(has_text="Drain node-local failed")
    expect(alert).to_contain_text(message)
    expect(alert).to_contain_text("AUTHZ_PERMISSION_DENIED")
    assert server.call("GET", "cluster/nodes/node-local").json()["data"]["status"] == "ONLINE"
    tab.shot("forbidden")


def test_sign_in_with_a_pasted_token_and_a_refused_one(
    console: ConsoleFactory, server: ConsoleServer
) -> None:
    tab = console()
    page = tab.page
    tab.open("")
    token_box = page.get_by_label("Bearer token (JWT or sgk_ API key)")
    expect(token_box).to_be_focused()
    token_box.fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    # The API's 401 message, and the sign-in form again.
    expect(page.get_by_role("alert")).to_contain_text("AUTH_TOKEN_INVALID")
    tab.shot("signin-refused")
    page.get_by_label("Bearer token (JWT or sgk_ API key)").fill(server.token())
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Training Dashboard")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('scaimind.token')") is None


def _unlabelled(page: Page) -> Any:
    return page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button, a[href]')]
          .filter((el) => el.offsetParent !== null)
          .filter((el) => {
            const named = (el.labels && el.labels.length) || el.getAttribute('aria-label')
              || el.getAttribute('aria-labelledby') || (el.textContent || '').trim();
            return !named;
          })
          .map((el) => el.outerHTML.slice(0, 120))"""
    )


def test_every_page_fits_a_narrow_window_and_labels_its_controls(
    console: ConsoleFactory, server: ConsoleServer
) -> None:
    job_id = server.submit("narrow", max_steps=20)
    tab = console(width=390, height=844)
    page = tab.page
    tab.sign_in(server.token())
    for route, ready in (
        ("", f"tr[data-job-id='{job_id}']"),
        (f"monitor?job={job_id}", ".chart"),
        ("jobs/new", "#request-json"),
        ("cluster", "tr[data-node-id='node-local']"),
        ("evaluations", "h2#eval-list-h"),
    ):
        tab.open(route)
        expect(page.locator(ready).first).to_be_visible()
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (route, overflow)
        assert _unlabelled(page) == [], route
        tab.shot(f"narrow-{route.split('?')[0].replace('/', '-') or 'dashboard'}")

    # The Job Creator can be filled and submitted from the keyboard alone.
    tab.open("jobs/new")
    expect(page.locator("#request-json")).to_be_visible()
    page.locator("body").focus()
    reached = []
    for _ in range(80):
        page.keyboard.press("Tab")
        reached.append(page.evaluate(FOCUSED))
        if reached[-1] == "Submit job":
            break
    assert reached[-1] == "Submit job", reached
    assert {"name", "source_path", "max_steps"} <= set(reached)
