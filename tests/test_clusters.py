"""Cluster generators (sweep --launcher tpu-vm / gke), quoting of every generated command
line (a value holding `$(...)`, backticks, quotes or spaces reaches run.py literally), and
one-line refusals of bad launcher / workdir input. No training: seconds."""
import json
import os
import shlex
import subprocess
import uuid

import yaml

from helpers import REPO, run_cli

CONFIG = "tests/sweep_config.py:two"


def _nasty(tmp_path) -> tuple[str, str]:
    """(a string that creates `marker` if a shell ever runs it, marker path)."""
    marker = str(tmp_path / f"PWNED_{uuid.uuid4().hex}")
    return f"a$(touch {marker})b `touch {marker}` 'q' \"d\" ; touch {marker}", marker


def _argv_through_bash(line: str, tmp_path, stub: str = "python") -> list[list[str]]:
    """Runs shell `line` with `stub` replaced by a function that records its argv;
    returns each call's argv."""
    out = tmp_path / f"argv_{uuid.uuid4().hex}"
    script = (f"{stub}() {{ printf '%s\\0' \"$@\" >> {shlex.quote(str(out))}; "
              f"printf '\\1' >> {shlex.quote(str(out))}; }}\n{line}\n")
    subprocess.run(["bash", "-c", script], check=True, cwd=REPO, env={**os.environ, "HOME": str(tmp_path)})
    calls = out.read_bytes().decode().split("\1")[:-1]
    return [c.split("\0")[:-1] for c in calls]


def test_tpu_vm_commands_same_on_every_worker_and_literal(tmp_path):
    prompt, marker = _nasty(tmp_path)
    cloud = f"gs://bucket/p x$(touch {marker})"
    (tmp_path / "strata").mkdir()
    r = run_cli("sweep", "--config", CONFIG, "--workdir", str(tmp_path / "d"), "--launcher", "tpu-vm",
                "--cloud_workdir", cloud, "--tpu_name", "pod-1", "--tpu_zone", "us-central2-b",
                "--tpu_project", "proj", f"--config.sample.prompt={prompt}")
    assert r.returncode == 0, r.stderr
    assert f"bash {tmp_path / 'd' / 'tpu_commands.sh'}" in r.stdout
    lines = [l for l in (tmp_path / "d" / "tpu_commands.sh").read_text().splitlines() if l.startswith("gcloud")]
    assert len(lines) == 2
    for line, lr in zip(lines, ["0.05", "0.2"]):
        (gcloud,) = _argv_through_bash(line, tmp_path, stub="gcloud")
        assert gcloud[:9] == ["compute", "tpus", "tpu-vm", "ssh", "pod-1", "--zone", "us-central2-b",
                              "--project", "proj"]
        assert "--worker=all" in gcloud  # one command, run by every worker of the slice
        remote = gcloud[gcloud.index("--command") + 1]
        (argv,) = _argv_through_bash(remote, tmp_path)  # as each worker's shell runs it
        assert argv == ["run.py", "train", "--config", CONFIG, "--workdir",
                        f"{cloud}/learning_rate={lr},seed=0", f"--config.sample.prompt={prompt}",
                        f"--config.optimizer.learning_rate={lr}", "--config.seed=0"]
    assert not os.path.exists(marker)


def test_gke_jobset_manifest(tmp_path):
    prompt, marker = _nasty(tmp_path)
    r = run_cli("sweep", "--config", CONFIG, "--workdir", str(tmp_path / "d"), "--launcher", "gke",
                "--cloud_workdir", "gs://bucket/sw", "--gke_image", "us-docker.pkg.dev/p/strata:1",
                "--gke_tpu_type", "tpu-v5-lite-podslice", "--gke_tpu_topology", "2x4",
                f"--config.sample.prompt={prompt}")
    assert r.returncode == 0, r.stderr
    assert f"kubectl apply -f {tmp_path / 'd' / 'gke'}/" in r.stdout
    files = sorted((tmp_path / "d" / "gke").glob("*.yaml"))
    assert len(files) == 2
    for f in files:
        m = yaml.safe_load(f.read_text())
        assert m["apiVersion"] == "jobset.x-k8s.io/v1alpha2" and m["kind"] == "JobSet"
        (job,) = m["spec"]["replicatedJobs"]
        spec = job["template"]["spec"]
        assert spec["parallelism"] == spec["completions"] == 2  # 8 chips, 4 per host
        pod = spec["template"]["spec"]
        assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
                                       "cloud.google.com/gke-tpu-topology": "2x4"}
        (c,) = pod["containers"]  # one template: every worker pod runs the same command
        assert c["image"] == "us-docker.pkg.dev/p/strata:1"
        assert c["resources"]["limits"]["google.com/tpu"] == 4
        assert c["command"][:6] == ["python", "run.py", "train", "--config", CONFIG, "--workdir"]
        assert c["command"][6] == "gs://bucket/sw/" + m["metadata"]["annotations"]["strata/trial"]
        assert f"--config.sample.prompt={prompt}" in c["command"]
    assert not os.path.exists(marker)


def test_print_commands_are_literal(tmp_path):
    prompt, marker = _nasty(tmp_path)
    workdir = str(tmp_path / f"w x$(touch {marker})")
    r = run_cli("sweep", "--config", CONFIG, "--workdir", workdir, "--print_commands",
                f"--config.sample.prompt={prompt}")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        (argv,) = _argv_through_bash(line, tmp_path)
        assert argv[1:5] == ["train", "--config", CONFIG, "--workdir"]
        assert argv[5].startswith(workdir + "/") and f"--config.sample.prompt={prompt}" in argv
    assert not os.path.exists(marker)


def _one_line_exit_2(r, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("strata: error:"), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_launcher_and_cloud_flags(tmp_path):
    d = tmp_path / "d"
    r = run_cli("sweep", "--config", CONFIG, "--workdir", str(d), "--launcher", "nosuch")
    _one_line_exit_2(r, "local", "slurm", "tpu-vm", "gke")
    r = run_cli("sweep", "--config", CONFIG, "--workdir", str(d), "--launcher", "tpu-vm",
                "--cloud_workdir", "gs://b/p", "--tpu_zone", "z")
    _one_line_exit_2(r, "--tpu_name")
    r = run_cli("sweep", "--config", CONFIG, "--workdir", str(d), "--launcher", "gke",
                "--cloud_workdir", "relative/path", "--gke_image", "i", "--gke_tpu_type", "t",
                "--gke_tpu_topology", "2x4")
    _one_line_exit_2(r, "gs://")
    r = run_cli("sweep", "--config", CONFIG, "--workdir", str(d), "--launcher", "gke",
                "--cloud_workdir", "gs://b", "--gke_image", "i", "--gke_tpu_type", "t",
                "--gke_tpu_topology", "big")
    _one_line_exit_2(r, "--gke_tpu_topology")
    r = run_cli("sweep", "--config", CONFIG, "--workdir", "gs://b/sw", "--launcher", "tpu-vm",
                "--cloud_workdir", "gs://b/p", "--tpu_name", "n", "--tpu_zone", "z")
    _one_line_exit_2(r, "local folder", "--cloud_workdir")  # before any request to the bucket
    assert not d.exists()


def test_unknown_workdir_scheme(tmp_path):
    before = set(os.listdir(REPO))
    for verb in ("train", "sweep"):
        r = run_cli(verb, "--config", CONFIG, "--workdir", "s4://x/y")
        _one_line_exit_2(r, "s4://", "gs://")
    assert set(os.listdir(REPO)) == before  # nothing written (no local "s4:" folder)
