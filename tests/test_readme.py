"""The README's curl examples work as written against a freshly started service."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_blocks(*headings: str) -> str:
    text = (ROOT / "README.md").read_text()
    out = []
    for heading in headings:
        section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
        out.extend(re.findall(r"```bash\n(.*?)```", section, flags=re.S))
    return "\n".join(out)


def test_readme_curl_examples(demo_env: Path, live_server: str, tmp_path: Path) -> None:
    script = readme_blocks("Predict", "Images", "Train, compare, deploy, roll back")
    script = script.replace(".venv/bin/mlfn", f"{sys.executable} -m infra.local.cli")
    script = script.replace("http://127.0.0.1:3000", live_server)
    # Any HTTP error fails the script: the examples must work exactly as written.
    prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(["bash", "-c", prelude + script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert '"prediction":"setosa"' in text
    assert '"rows_total":18' in text and '"dataset_version":3' in text
    found = re.search(r"experiments (\d+) and (\d+)\n", text)
    assert found, text[-2000:]
    forest, logreg = found.groups()
    assert '"model":"digits"' in text and '"files":["' in text
    assert '"status":"succeeded"' in text
    assert f'{{"model":"churn","deployed":{forest},"previous":{logreg}}}' in text
    assert text.rstrip().endswith("204")


def test_readme_rollout_examples(demo_env: Path, live_server: str, tmp_path: Path) -> None:
    script = readme_blocks("Canary, shadow, feedback").replace("http://127.0.0.1:3000", live_server)
    prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
    out = subprocess.run(["bash", "-c", prelude + script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert '"canary":{"experiment_id":' in text and '"share":20.0,"guard":true' in text
    assert '{"model":"iris","outcomes":10,"matched":10,"unmatched":[]}' in text
    assert '"role":"canary"' in text and '"role":"champion"' in text and '"shadow_agrees":' in text
    assert '"reason":"promoted"' in text


def test_readme_drift_example(demo_env: Path, live_server: str, tmp_path: Path) -> None:
    script = readme_blocks("Drift").replace("http://127.0.0.1:3000", live_server)
    prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
    out = subprocess.run(["bash", "-c", prelude + script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    first = out.stdout.splitlines()[0]
    assert '"rows":200' in first and '"drifted":["petal_length"' in first, first
    assert '"features":[{"name":"petal_length","kind":"numeric"' in first


def test_readme_upload_example(demo_env: Path, live_server: str, tmp_path: Path) -> None:
    script = readme_blocks("Uploads of any size").replace("http://127.0.0.1:3000", live_server)
    prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
    out = subprocess.run(["bash", "-c", prelude + script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert '"status":"received"' in out.stdout
    last = out.stdout.strip().splitlines()[-1]
    assert '"status":"succeeded"' in last and '"rows_added":50000' in last, last
    assert '"dataset_version":1' in last


def test_readme_batch_job_example(demo_env: Path, live_server: str, tmp_path: Path) -> None:
    script = readme_blocks("Batch scoring jobs").replace("http://127.0.0.1:3000", live_server)
    prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
    out = subprocess.run(["bash", "-c", prelude + script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert '"status":"succeeded"' in lines[0] and '"rows":20000' in lines[0], lines[0]
    assert lines[1] == "row,prediction,probability_setosa,probability_versicolor,probability_virginica"
    assert lines[2].startswith("0,")
