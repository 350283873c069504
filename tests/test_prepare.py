"""`run.py prepare`: a download that cannot start, or a manual download that is missing,
ends in seconds with one line saying what to do, exit code 2 (no retries, no traceback)."""
import time

from helpers import run_cli

# Downloads go through this proxy, where nothing listens: "no network" on any machine.
NO_NETWORK = {"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "",
              "no_proxy": ""}


def test_unreachable_download_is_one_line_within_30_seconds(tmp_path):
    start = time.monotonic()
    out = run_cli("prepare", "mnist", "--data_dir", str(tmp_path), env=NO_NETWORK, timeout=120)
    elapsed = time.monotonic() - start
    assert out.returncode == 2, out.stderr[-2000:]
    assert elapsed < 30, elapsed
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    line = lines[0]
    assert line.startswith("strata: error: cannot download mnist: 127.0.0.1:9 is unreachable"), line
    assert "--manual_dir" in line and "train-images-idx3-ubyte.gz" in line
    assert not (tmp_path / "mnist").exists() or not any((tmp_path / "mnist").rglob("*.array_record*"))


def test_missing_manual_download_says_what_to_put_where(tmp_path):
    empty = tmp_path / "manual"
    empty.mkdir()
    out = run_cli("prepare", "imagenet2012", "--data_dir", str(tmp_path), "--manual_dir", str(empty),
                  env=NO_NETWORK, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"imagenet2012 needs a manual download, and {empty} is missing or empty" in lines[0]
    assert "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar" in lines[0]
    assert "--manual_dir DIR" in lines[0]


def test_unreachable_host_probe():
    from data.sources import unreachable_host
    host, reason = unreachable_host(["http://127.0.0.1:9/x.tar", "http://127.0.0.1:9/y.tar"], timeout=2)
    assert host == "127.0.0.1:9" and "Connection" in reason
    assert unreachable_host([]) is None
