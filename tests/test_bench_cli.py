"""benchmarks/run.py's command line: a partial run cannot replace the full results table."""
from benchmarks.run import OUT, parse


def test_only_a_full_run_writes_the_results_table_by_default():
    assert parse([]).out == OUT
    assert parse(["--only", "lm"]).out == ""
    assert parse(["--only", "lm", "--out", "lm.md"]).out == "lm.md"
