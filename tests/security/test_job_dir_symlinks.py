"""Beyond the issue: a job owns its directory, symlinks included, and the coordinator (outside
any sandbox, as the service's user) reads, writes, sizes and prunes files there by path.

A job replaces the files the coordinator uses (its metrics file, the spec and metrics files of
its next attempt, its checkpoint directory) with symlinks to host paths. The coordinator must
not follow them: no host file is read into the job's logs, overwritten, truncated or deleted.
A sandbox does not help here (the links are followed outside it), so these hold with and
without bubblewrap.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

from tests.conftest import wait_for
from tests.security.conftest import (
    Api,
    assert_no_leak,
    ensure_dir,
    job_body,
    write_script,
)

PLANTER = r"""
import os, re, time
from pathlib import Path

env = os.environ
if Path('planted').exists():
    print('second run', flush=True)
    raise SystemExit(0)
Path('planted').write_text('1')
metrics = Path(env['SCAIMIND_METRICS_FILE']).resolve()


def link(name, target):
    try:
        os.remove(name)
    except FileNotFoundError:
        pass
    os.symlink(target, name)


# Every file the coordinator made here becomes a link to a host file, and so do the names of
# the next attempts: the metrics file it tails now leads to the file to leak.
for f in sorted(Path('.').iterdir()):
    if not f.is_file() or f.name == 'planted':
        continue
    if f.resolve() == metrics:
        link(f.name, env['PROBE_LEAK'])
    victim = env['PROBE_SPEC'] if 'spec' in f.name else env['PROBE_METRICS']
    for attempt in ('2', '3'):
        later = re.sub(r'1', attempt, f.name)
        if later != f.name:
            link(later, victim)
print('planted', flush=True)
time.sleep(120)
"""

PRUNER = r"""
import json, os, shutil
from pathlib import Path

env = os.environ
ckpt = Path(env['SCAIMIND_CHECKPOINT_DIR'])
shutil.rmtree(ckpt, ignore_errors=True)
os.symlink(env['PROBE_TREE'], ckpt)
with open(env['SCAIMIND_METRICS_FILE'], 'a') as m:
    for step in (1, 2, 3):
        m.write(json.dumps({'step': step, 'loss': 1.0 / step}) + '\n')
        event = {'type': 'checkpoint', 'step': step, 'path': str(ckpt / f'step-{step:06d}'),
                 'size_bytes': 1}
        m.write(json.dumps(event) + '\n')
print('reported three checkpoints', flush=True)
"""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_symlinks_in_the_job_dir_redirect_no_read_or_write(api: Api) -> None:
    """The metrics file swapped for a link: its target's lines came back as 'malformed metrics
    line' log entries. The next attempt's spec and metrics files planted as links: the resume
    wrote the spec into, and truncated, whatever they pointed at."""
    tag = secrets.token_hex(4)
    outside = api.layout.outside
    leak = outside / f"leak-{tag}.txt"
    leak.write_text(f"victim-secret-{tag}\n" * 3)
    spec_victim = outside / f"spec-victim-{tag}.txt"
    spec_victim.write_text("precious spec victim\n")
    metrics_victim = outside / f"metrics-victim-{tag}.txt"
    metrics_victim.write_text("precious metrics victim\n")
    before = {p: digest(p) for p in (leak, spec_victim, metrics_victim)}

    script = write_script(api.layout.tenant("acme") / f"planter-{tag}.py", PLANTER)
    env = {
        "PROBE_LEAK": str(leak),
        "PROBE_SPEC": str(spec_victim),
        "PROBE_METRICS": str(metrics_victim),
    }
    job_id = await api.submit_ok(
        job_body("planter", [str(api.layout.corpus)], script=script, env=env)
    )

    async def planted() -> bool:
        return "planted" in await api.log_text(job_id)

    await wait_for(planted, within=60, interval=0.2)
    # Pausing stops the process; the coordinator then reads the metrics file a last time.
    r = await api.request("POST", f"/jobs/{job_id}/pause", json_body={})
    assert r.status_code == 200, r.text
    await api.wait_status(job_id, "PAUSED")
    r = await api.request("POST", f"/jobs/{job_id}/resume", json_body={})
    assert r.status_code == 200, r.text
    job = await api.wait_done(job_id)

    needles = {"the linked file's content": f"victim-secret-{tag}"}
    assert_no_leak(await api.everything("acme"), needles, f"acme's logs ({job['status']})")
    changed = {
        p.name: p.read_text()[:80] if p.exists() else "(gone)"
        for p, d in before.items()
        if not p.exists() or digest(p) != d
    }
    assert changed == {}, f"the coordinator wrote through the job's links: {changed}"


async def test_a_checkpoint_dir_swapped_for_a_link_prunes_nothing_outside(api: Api) -> None:
    """With keep_last_checkpoints, older checkpoints are deleted: with the checkpoint dir a link
    to a host tree, the coordinator deleted that tree's directories."""
    tag = secrets.token_hex(4)
    tree = ensure_dir(api.layout.outside / f"tree-{tag}")
    for step in (1, 2, 3):
        ensure_dir(tree / f"step-{step:06d}").joinpath("precious.txt").write_text("keep me")
    script = write_script(api.layout.tenant("acme") / f"pruner-{tag}.py", PRUNER)
    body = job_body(
        "pruner",
        [str(api.layout.corpus)],
        script=script,
        env={"PROBE_TREE": str(tree)},
        keep_last_checkpoints=1,
    )
    job = await api.wait_done(await api.submit_ok(body))
    left = sorted(str(p.relative_to(tree)) for p in tree.rglob("precious.txt"))
    assert len(left) == 3, f"the coordinator pruned a host tree ({job['status']}): {left} remain"
    shown = json.dumps(job["checkpoints"])
    assert str(tree) not in shown, f"checkpoints outside the job were recorded: {shown}"
