"""SLURM on the one-node test cluster (tests/cluster/slurm_up.sh; the `slurm` fixture fails
these tests in CI and skips them elsewhere when it is not running)."""
import subprocess


def test_cluster_runs_two_tasks(slurm):
    out = subprocess.run(["srun", "-n", "2", "--time=1", "bash", "-c", "echo $SLURM_PROCID/$SLURM_NTASKS"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.split()) == ["0/2", "1/2"]
