"""The mini workflow through a live SLURM (``profiles/slurm``, as a user runs it).

CI brings up a one-node cluster with two fake GPUs (``.ci/slurm-cluster.sh``) and sets
``GRADCAMO_TEST_SLURM=1``; the session's run of the mini workflow (``conftest.mini_run``) then
goes through ``profiles/slurm`` plus ``.ci/slurm-overlay.yaml``. These tests check how it
ran, from SLURM's own accounting (``sacct``): every rule's jobs were SLURM jobs and COMPLETED,
the GPU rules were given a GPU in the GPU partition, the per-well rules ran as group jobs;
that the tables equal a local run's where the run is deterministic; and that a ``train`` job
cancelled mid-run with ``scancel`` is retried and resumes to the same final model.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import run_snakemake, slurm_cluster, slurm_profile, snakemake_command

pytestmark = [
    pytest.mark.workflow,
    pytest.mark.skipif(
        not slurm_cluster(),
        reason="no live SLURM: .ci/run brings one up (.ci/slurm-cluster.sh) and sets GRADCAMO_TEST_SLURM=1",
    ),
]

GPU_RULES = {"train", "train_segmentation", "segment", "profile", "randomisation_check", "planted_control"}
GROUPED_RULES = {"qc_well", "segment", "crops", "profile"}
JOB_LINE = re.compile(r"running on host \S+, SLURM job (\d+) \(partition (\S+)\)")


def _rule_of(log: Path, logs: Path) -> str:
    """``logs/qc_well/P1/B02.log`` -> ``qc_well``; ``logs/split.log`` -> ``split``."""
    return log.relative_to(logs).parts[0].removesuffix(".log")


def _jobs_by_rule(project: Path) -> dict[str, list[tuple[Path, list[str]]]]:
    """Per rule, each job's log and the SLURM job ids its first lines name."""
    logs = project / "logs"
    out: dict[str, list[tuple[Path, list[str]]]] = {}
    for log in sorted(logs.rglob("*.log")):
        ids = [m.group(1) for m in JOB_LINE.finditer(log.read_text())]
        out.setdefault(_rule_of(log, logs), []).append((log, ids))
    return out


def _sacct(ids, fields: tuple[str, ...], *, allocations_only: bool = True) -> list[list[str]]:
    """sacct's rows (one list of ``fields`` each) for SLURM jobs ``ids``: the allocations only
    (``-X``), or with their job steps too."""
    proc = subprocess.run(
        ["sacct", *(["-X"] if allocations_only else []), "-n", "-P"]
        + ["-j", ",".join(sorted(set(ids))), "-o", ",".join(fields)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.split("|") for line in proc.stdout.splitlines() if line.strip()]


def _accounting(ids) -> pd.DataFrame:
    """State, partition and allocated resources of SLURM jobs ``ids``, indexed by job id."""
    rows = _sacct(ids, ("JobIDRaw", "State", "Partition", "AllocTRES"))
    return pd.DataFrame(rows, columns=["job", "state", "partition", "tres"]).set_index("job")


def _rules_in_dag(project: Path) -> set[str]:
    proc = run_snakemake(project, "-n", "--forceall", "--quiet", "rules", "--cores", "1")
    table = proc.stdout.split("Job stats:")[-1]
    rules = {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+$", table, re.M)}
    return rules - {"total", "all"}


def test_every_rule_ran_as_slurm_jobs_that_completed(mini_run):
    jobs = _jobs_by_rule(mini_run)
    assert set(jobs) == _rules_in_dag(mini_run), "every rule's log, and only the DAG's rules"
    ids = []
    for rule, logs in jobs.items():
        for log, found in logs:
            assert found, f"{log} names no SLURM job: the {rule} job ran outside SLURM"
            ids += found
    accounting = _accounting(ids)
    assert set(accounting.index) == set(ids), "sacct knows every job"
    assert (accounting.state == "COMPLETED").all(), accounting[accounting.state != "COMPLETED"]


def test_gpu_rules_were_given_a_gpu_in_the_gpu_partition(mini_run):
    jobs = _jobs_by_rule(mini_run)
    for rule, logs in jobs.items():
        accounting = _accounting([i for _, found in logs for i in found])
        gpus = accounting.tres.str.contains("gres/gpu=1")
        if rule in GPU_RULES:
            assert gpus.all() and (accounting.partition == "gpu").all(), (rule, accounting)
        else:
            assert not gpus.any() and (accounting.partition == "cpu").all(), (rule, accounting)


def test_per_well_rules_ran_as_group_jobs_that_ask_for_one_well(mini_run):
    """16 wells of each per-well rule in two SLURM jobs (.ci/slurm-overlay.yaml's groups of 8).
    A group job runs its wells one after another (the jobstep plugin waits for each srun
    step), so it must ask for one well's CPUs and GPUs, not ``cores`` worth of wells side by
    side: profiles/slurm's ``group_slot``. Its job steps, one per well, never overlap."""
    jobs = _jobs_by_rule(mini_run)
    for rule in GROUPED_RULES:
        logs = jobs[rule]
        assert len(logs) == 16
        submissions = sorted({found[-1] for _, found in logs})
        assert len(submissions) == 2, f"{rule}: {len(submissions)} SLURM jobs for 16 wells"
        accounting = _accounting(submissions)
        assert accounting.tres.str.contains(r"\bcpu=1,").all(), (rule, accounting)
        steps = _steps(submissions)
        for job, group in steps.groupby("job"):
            group = group.sort_values("start")
            assert len(group) == 8, (rule, group)
            assert (group.start.to_numpy()[1:] >= group.end.to_numpy()[:-1]).all(), (rule, group)


def _steps(ids) -> pd.DataFrame:
    """The numbered job steps (one srun per well) of SLURM jobs ``ids``, with start and end."""
    rows = []
    for step, start, end in _sacct(ids, ("JobID", "Start", "End"), allocations_only=False):
        job, _, number = step.partition(".")
        if number.isdigit():
            rows.append((job, int(number), pd.Timestamp(start), pd.Timestamp(end)))
    return pd.DataFrame(rows, columns=["job", "step", "start", "end"])


def _copy(project: Path, to: Path) -> Path:
    shutil.copytree(project, to, symlinks=True)
    shutil.rmtree(to / "logs")
    return to


def test_deterministic_tables_equal_a_local_run(mini_run, tmp_path):
    """QC, crops, split, profiles and the single-cell table computed again locally, from the
    SLURM run's labels and model, equal the SLURM run's (arrays to the bit, Parquet tables
    as frames). Two copies of the finished project: in one the upstream stages run again
    (their outputs are newer than the model, so nothing downstream may run there); in the
    other only profile (2 of the wells) and aggregate, on the run's own crops and model."""
    wells = sorted(
        p.relative_to(mini_run / "results/crops").parts for p in (mini_run / "results/crops").glob("*/*/")
    )
    plates = sorted({p for p, _ in wells})
    upstream = _copy(mini_run, tmp_path / "upstream")
    run_snakemake(
        upstream,
        "--cores",
        "2",
        "--force",
        *[f"results/qc/{p}/{w}.parquet" for p, w in wells],
        *[f"results/crops/{p}/normalization.json" for p in plates],
        *[f"results/crops/{p}/{w}/store.json" for p, w in wells],
        "results/split/wells.tsv",
    )
    downstream = _copy(mini_run, tmp_path / "downstream")
    some = wells[::8]  # 2 of the 16 wells: profiling is the slow part, and every well is alike
    run_snakemake(
        downstream,
        "--cores",
        "2",
        "--force",
        *[f"results/profiles/{p}/{w}.parquet" for p, w in some],
        "results/aggregate/cells.parquet",
    )
    assert not (downstream / "logs/train.log").exists(), "train ran again"
    for p, w in wells:
        for name in ("images.npy", "masks.npy"):
            a, b = (np.load(root / f"results/crops/{p}/{w}/{name}") for root in (mini_run, upstream))
            np.testing.assert_array_equal(a, b)
    tables = {
        upstream: [f"results/qc/{p}/{w}.parquet" for p, w in wells]
        + [f"results/crops/{p}/{w}/cells.parquet" for p, w in wells],
        downstream: [f"results/profiles/{p}/{w}.parquet" for p, w in wells]
        + ["results/aggregate/cells.parquet"],
    }
    for local, names in tables.items():
        for name in names:
            pd.testing.assert_frame_equal(
                pd.read_parquet(mini_run / name), pd.read_parquet(local / name), obj=name
            )
    for name in ["results/split/wells.tsv"] + [f"results/crops/{p}/normalization.json" for p in plates]:
        assert (mini_run / name).read_text() == (upstream / name).read_text(), name


def _train_epochs(project: Path, epochs: int) -> None:
    config_path = project / "config" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["train"]["epochs"] = epochs
    config["train"]["patience"] = epochs
    config.setdefault("resources", {}).setdefault("train", {})["threads"] = 1  # see the docstring
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.rmtree(project / "results" / "train", ignore_errors=True)


def test_cancelled_train_job_is_retried_and_resumes_to_the_same_model(mini_run, tmp_path):
    """scancel a SLURM train job after its first epoch: Snakemake retries it (the profile's
    retries), the retry resumes from results/train/resume/ and ends with the weights an
    uninterrupted local training of the same settings ends with.

    One thread on both sides, as in test_training's kill-and-resume test: with 2 threads a CPU
    training was not bit-reproducible across processes once in CI (the resumed epoch 2 had
    train loss 1.4844 against 1.4837 uninterrupted), which would test the CPU's reductions,
    not the resume."""
    epochs = 2
    slurm, local = _copy(mini_run, tmp_path / "slurm"), _copy(mini_run, tmp_path / "local")
    for project in (slurm, local):
        _train_epochs(project, epochs)
    profile = slurm_profile(tmp_path / "profile")  # its train job takes resources.train.threads: 1
    # The uninterrupted reference trains beside the SLURM job (one thread each on 2 cores).
    reference_log = tmp_path / "reference.out"
    with reference_log.open("w") as out:
        reference = subprocess.Popen(
            snakemake_command(local, "--cores", "1", "results/train/model.pt"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _cancel_and_retry(slurm, profile)
        assert reference.wait(timeout=1200) == 0, reference_log.read_text()[-5000:]
    finally:
        if reference.poll() is None:
            reference.kill()
    a, b = (
        torch.load(p / "results/train/model.pt", map_location="cpu", weights_only=False)
        for p in (slurm, local)
    )
    state_a, state_b = a["state_dict"], b["state_dict"]
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=0, atol=0, msg=key)


def _cancel_and_retry(slurm: Path, profile: Path) -> None:
    """Run train through SLURM in ``slurm``, scancel its job after epoch 1, and check that
    the retry resumed from the checkpoint and completed."""
    runner = subprocess.Popen(
        snakemake_command(slurm, "--profile", str(profile), "results/train/model.pt"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = slurm / "logs" / "train.log"
    resume = slurm / "results" / "train" / "resume" / "last.pt"
    deadline = time.monotonic() + 900
    cancelled = None
    while time.monotonic() < deadline and runner.poll() is None:
        text = log.read_text() if log.exists() else ""
        found = JOB_LINE.findall(text)
        if found and resume.exists() and re.search(r"epoch 1/\d+", text):
            cancelled = found[-1][0]
            subprocess.run(["scancel", cancelled], check=True)
            break
        time.sleep(0.5)
    assert cancelled, "the train job never reached its first checkpoint"
    output, _ = runner.communicate(timeout=1200)
    assert runner.returncode == 0, output[-5000:]
    text = log.read_text()  # the retry's log (Snakemake clears a failed job's log)
    retried = JOB_LINE.findall(text)[-1][0]
    assert retried != cancelled
    assert re.search(r"resuming from .*last\.pt after epoch 1 of 2", text), text[-3000:]
    states = _accounting([cancelled, retried]).state
    assert states[cancelled].startswith("CANCELLED") and states[retried] == "COMPLETED", states
