"""Beyond the issue: a directory the policy checked, then bound into a job by its path.

Job X of acme keeps swapping a folder of its own checkpoint dir between a real directory and a
link to globex's root. Job Y of acme resumes from that folder. The path passes the policy while
it is a directory; if the sandbox then binds it by path, the bind follows the link and Y reads
globex's files. A check and a bind by the same open directory (or a re-check of what was bound)
leaves nothing to race: every Y sees only the directory, or is refused. (See TRIES for the
odds: this test can miss the hole, never report a fixed one.)
"""

from __future__ import annotations

import json

from tests.security.conftest import (
    SECRET_OF,
    Api,
    job_body,
    probe_script,
    write_script,
)

FLIPPER = r"""
import json, os, time
from pathlib import Path

env = os.environ
ckpt = Path(env['SCAIMIND_CHECKPOINT_DIR'])
flip, stash = ckpt / 'flip', ckpt / 'stash'
stash.mkdir(parents=True, exist_ok=True)
(stash / 'state.json').write_text(json.dumps({'step': 1}))
os.rename(stash, flip)
with open(env['SCAIMIND_METRICS_FILE'], 'a') as m:
    m.write(json.dumps({'step': 1, 'loss': 1.0}) + '\n')
print('flipping', flush=True)
end = time.monotonic() + 90
while time.monotonic() < end:
    os.rename(flip, stash)
    os.symlink(env['PROBE_TARGET'], flip)
    time.sleep(0.002)  # a link two thirds of the time: a job that passed the checks is bound
    os.remove(flip)
    os.rename(stash, flip)
    time.sleep(0.001)
"""

READER = """
resume = env.get('SCAIMIND_RESUME_CHECKPOINT', '')
attempt('listing', lambda: sorted(os.listdir(resume)))
def contents():
    return [Path(resume, n).read_text()[:200] for n in sorted(os.listdir(resume))
            if Path(resume, n).is_file()]
attempt('contents', contents)
"""

# Tries until this many resuming jobs ran (a try passes both checks about 1 time in 9; with
# the hole, a job that ran has read globex's files 2 times in 3: 5 clean runs miss it 1 in 250).
TRIES, ENOUGH = 120, 5


async def test_a_folder_swapped_between_check_and_bind_shows_nothing_of_another_tenant(
    api: Api,
) -> None:
    flipper = write_script(api.layout.tenant("acme") / "flipper.py", FLIPPER)
    reader = write_script(api.layout.tenant("acme") / "race_reader.py", probe_script(READER))
    target = {"PROBE_TARGET": str(api.layout.tenant("globex"))}
    x = await api.submit_ok(
        job_body("flipper", [str(api.layout.corpus)], script=flipper, env=target)
    )
    try:
        await api.wait_status(x, "TRAINING")
        folder = api.host_dir_of(x, "checkpoints") / "flip"

        ran, seen = 0, []
        for _ in range(TRIES):
            if ran >= ENOUGH:
                break
            body = job_body(
                "racer", [str(api.layout.corpus)], script=reader, resume_from_checkpoint=str(folder)
            )
            r = await api.submit(body)
            if r.status_code != 201:
                continue  # checked while it was a link: refused
            job = await api.wait_done(r.json()["data"]["job_id"])
            if job["status"] != "COMPLETED":
                continue  # refused when the job started
            ran += 1
            seen.append(json.dumps(await api.result(job["job_id"])))
        # Refusing every try (a folder of a running job's checkpoints) is safe too.
        leaked = [s for s in seen if SECRET_OF["globex"] in s or "private.jsonl" in s]
        assert leaked == [], f"{len(leaked)} of {ran} jobs saw globex's root: {leaked[0][:300]}"
    finally:
        await api.request("POST", f"/jobs/{x}/cancel", json_body={})
