"""summarize_seeds.py: each group's median and range over its runs, the difference of medians from the first group,
and one-line refusals of files that are not metrics."""
import json

import pytest
from conftest import assert_clean_error, run_script

FIELDS = ("mAP50", "precision", "recall", "f1", "pd", "fa")


def metrics(folder, name, mAP50, **others):
    path = folder / name / "metrics.json"
    path.parent.mkdir(parents=True)
    record = {key: others.get(key, 50.0) for key in FIELDS}
    record.update(mAP50=mAP50, frames=200, targets=200)
    path.write_text(json.dumps(record))
    return path


def test_median_range_and_difference(tmp_path):
    scratch = [metrics(tmp_path, f"s{seed}", value) for seed, value in ((1, 10.0), (2, 30.0), (3, 14.0))]
    tuned = [metrics(tmp_path, f"f{seed}", value, fa=0.25) for seed, value in ((1, 61.5), (2, 40.0), (3, 55.0))]
    out = tmp_path / "table" / "summary.md"
    result = run_script("summarize_seeds.py", "--group", "scratch", *scratch, "--group", "fine-tuned", *tuned,
                        "--out", out)
    assert result.returncode == 0, result.stderr
    rows = {line.split(" | ")[0].strip("| "): line for line in result.stdout.splitlines() if line.startswith("| ")}
    assert "14.00 [10.00, 30.00]" in rows["scratch"] and rows["scratch"].endswith("+0.00 |")
    assert "55.00 [40.00, 61.50]" in rows["fine-tuned"] and rows["fine-tuned"].endswith("+41.00 |")
    assert "0.250 [0.250, 0.250]" in rows["fine-tuned"] and "| 3 |" in rows["fine-tuned"]
    assert out.read_text() == result.stdout


@pytest.mark.parametrize("content, fragment", [
    ("[1, 2]", "not a metrics file"),
    ('{"mAP50": "high"}', "field 'mAP50' is 'high', not a number"),
    ('{"mAP50": 1', "not valid JSON"),
])
def test_refusals(tmp_path, content, fragment):
    path = tmp_path / "metrics.json"
    path.write_text(content)
    assert_clean_error(run_script("summarize_seeds.py", "--group", "a", path), str(path), fragment)


def test_a_group_needs_runs_and_a_name_of_its_own(tmp_path):
    path = metrics(tmp_path, "a", 10.0)
    assert_clean_error(run_script("summarize_seeds.py", "--group", "a"), "no metrics files")
    assert_clean_error(run_script("summarize_seeds.py", "--group", "a", path, "--group", "a", path), "given twice")
    assert_clean_error(run_script("summarize_seeds.py", "--group", "a", path, "--out", path), "is the input")
    assert json.loads(path.read_text())["mAP50"] == 10.0
