"""The command line under a careless user (issue 12): interruptions and kills stop every worker
and leave no half-written results; bad options and bad data fail before any work, in the
command line's own words; nothing wrong passes in silence.

Process tests run the real ``thaw`` in a subprocess and send it real signals; the rest call
``thaw.cli.main`` in this process, which is faster.
"""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from thaw import cli, errors
from thaw.data.synthetic import make_synthetic

THAW = [sys.executable, "-m", "thaw"]
# Models that run for minutes on tiny data: something to interrupt.
SLOW = ["--models", "mf,bpr", "--param", "mf.iterations=1000000", "--param", "bpr.epochs=1000000",
        "--param", "bpr.patience=1000000"]


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory):
    """80 users with raw ids 1001.. (so an internal index is never the raw id) and titled items."""
    data = make_synthetic(n_users=80, n_items=50, seed=2)
    frame = data.interactions.to_frame()
    frame["uid"] = [str(1001 + int(u[1:])) for u in data.user_ids[frame["user"]]]
    frame["iid"] = data.item_ids[frame["item"]]
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    frame[["uid", "iid", "rating", "ts"]].to_csv(path, index=False)
    return path


def base_args(ratings_csv, out, *extra, models="pop,random", ks="1"):
    return ["evaluate", "--dataset", str(ratings_csv), "--models", models, "--ks", ks,
            "--bootstrap", "20", "--no-progress", "--out", str(out), *extra]


@pytest.fixture
def thaw_main(monkeypatch, capsys):
    """Run ``thaw ARGS`` in this process: (exit status, stdout, stderr). The signal handlers,
    warning display and interface flag main() sets are put back afterwards."""

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["thaw", *map(str, args)])
        monkeypatch.setattr(errors, "INTERFACE", errors.INTERFACE)
        monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
        monkeypatch.setattr(cli, "_shown", set())
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        finally:
            for s, handler in handlers.items():
                signal.signal(s, handler)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


# --- processes and signals -------------------------------------------------------------------

def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc; zombies count as gone)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if state[state.rindex(")") + 2] != "Z":
            out.add(pid)
    return out


def start_slow_run(ratings_csv, out, jobs):
    """A `thaw evaluate` fitting two slow models; returns once its workers are busy."""
    args = ["evaluate", "--dataset", str(ratings_csv), "--ks", "1", "--no-progress", "--out", str(out),
            "--jobs", str(jobs), *SLOW]
    process = subprocess.Popen([*THAW, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while time.monotonic() < deadline and process.poll() is None:
        workers = descendants(process.pid)
        # jobs workers plus multiprocessing's resource tracker, or the parent fitting itself
        if (jobs > 1 and len(workers) >= jobs + 1) or (jobs == 1 and _cpu_seconds(process.pid) > 4):
            break
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()
    time.sleep(1.0)  # well into fitting
    return process, descendants(process.pid)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(process, signum):
    sent = time.monotonic()
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    return process.returncode, time.monotonic() - sent, out, err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("jobs", [2, 1])
def test_ctrl_c_stops_every_worker_at_once_with_one_line_and_exit_130(ratings_csv, tmp_path, jobs):
    out = tmp_path / "results"
    process, workers = start_slow_run(ratings_csv, out, jobs)
    assert len(workers) >= (jobs + 1 if jobs > 1 else 0)
    code, seconds, _, err = stop(process, signal.SIGINT)
    assert code == 130, err
    assert seconds < 10, f"took {seconds:.1f} s to stop"
    lines = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert lines == ["interrupted"], err
    deadline = time.monotonic() + 5
    while alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(workers), "workers outlived the interrupted run"
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".results")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_workers_end_when_the_parent_is_killed(ratings_csv, tmp_path, signum):
    process, workers = start_slow_run(ratings_csv, tmp_path / "results", 2)
    code, _, _, err = stop(process, signum)
    assert code == (128 + signal.SIGTERM if signum == signal.SIGTERM else -signal.SIGKILL), err
    deadline = time.monotonic() + 5  # the kernel's parent-death signal, else the 0.5 s watchdog
    while alive(workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(workers), f"orphaned workers after {signal.Signals(signum).name}"
    if signum == signal.SIGTERM:
        assert "stopped by SIGTERM" in err and "Traceback" not in err


def test_results_folder_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """Interrupted while writing (after the CSVs, before the plot): the previous results stay
    exactly as they were and no partial folder is left beside them."""
    from thaw.data.splits import make_split
    from thaw.eval import report
    from thaw.eval.protocol import evaluate

    split = make_split(make_synthetic(n_users=60, n_items=40, seed=1), "new-user", seed=0)
    result = evaluate(["random", "pop"], split, ks=(1,), n_bootstrap=10, progress=False, min_users=1)
    out = tmp_path / "results"
    report.write_results([result], out, seed=0)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "plot_cold_to_warm", interrupted)
    with pytest.raises(KeyboardInterrupt):
        report.write_results([result], out, seed=1)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    # per_user.csv names users as the data set does
    per_user = pd.read_csv(out / "per_user.csv", dtype={"user": str})
    assert set(per_user["user"]) <= set(split.train.user_ids) and per_user["user"].str.startswith("u").all()


# --- the results folder -----------------------------------------------------------------------

def test_out_is_checked_before_any_work(thaw_main, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    missing_data = ["evaluate", "--dataset", str(tmp_path / "nowhere.csv")]  # would fail second
    for out, message in ((a_file, "is a file, not a folder"), (a_file / "sub", "is a file, not a folder"),
                         (Path("/proc/thaw-results"), "cannot write in /proc")):
        code, _, err = thaw_main(*missing_data, "--out", out)
        assert code == 2 and message in err and "nowhere.csv" not in err, err


def test_results_of_another_command_are_kept_unless_overwrite(thaw_main, ratings_csv, tmp_path):
    out = tmp_path / "results"
    code, _, err = thaw_main(*base_args(ratings_csv, out))
    assert code == 0, err
    settings = json.loads((out / "results.json").read_text())["settings"]
    assert settings["command"] == "evaluate" and settings["models"] == "pop,random" and "jobs" not in settings
    # A rerun (--jobs differs: not a setting) replaces it: what `make run` does every time.
    code, _, err = thaw_main(*base_args(ratings_csv, out, "--jobs", "1"))
    assert code == 0, err
    code, _, err = thaw_main(*base_args(ratings_csv, out, "--seed", "3"))
    assert code == 2 and "holds the results of another command" in err and "--overwrite" in err
    assert json.loads((out / "results.json").read_text())["settings"]["seed"] == 0
    code, _, err = thaw_main(*base_args(ratings_csv, out, "--seed", "3", "--overwrite"))
    assert code == 0, err
    assert json.loads((out / "results.json").read_text())["settings"]["seed"] == 3
    (out / "notes.txt").write_text("mine")
    code, _, err = thaw_main(*base_args(ratings_csv, out, "--seed", "3", "--overwrite"))
    assert code == 2 and "notes.txt" in err and (out / "notes.txt").exists()
    other = tmp_path / "papers"
    other.mkdir()
    (other / "draft.tex").write_text("x")
    code, _, err = thaw_main(*base_args(ratings_csv, other, "--overwrite"))
    assert code == 2 and "not thaw results" in err and (other / "draft.tex").exists()


def test_a_folder_from_before_settings_were_recorded_is_a_rerun_of_its_command(thaw_main, ratings_csv, tmp_path):
    out = tmp_path / "results"
    args = base_args(ratings_csv, out)
    assert thaw_main(*args)[0] == 0
    payload = json.loads((out / "results.json").read_text())
    del payload["settings"]
    payload["provenance"]["command"] = "thaw " + " ".join(args)
    (out / "results.json").write_text(json.dumps(payload))
    assert thaw_main(*args)[0] == 0


def test_per_user_names_users_by_their_raw_ids(thaw_main, ratings_csv, tmp_path):
    out = tmp_path / "results"
    assert thaw_main(*base_args(ratings_csv, out))[0] == 0
    raw = set(pd.read_csv(ratings_csv)["uid"])
    users = set(pd.read_csv(out / "per_user.csv")["user"])
    assert users <= raw and min(users) > 1000


# --- options, validated before any work --------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--bootstrap", "0"], "--bootstrap must be at least 1"),
    (["--bootstrap", "-5"], "--bootstrap must be at least 1"),
    (["--seed", "-1"], "--seed must be a non-negative integer"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--test-frac", "0"], "--test-frac 0 holds out no test users"),
    (["--test-frac", "1"], "--test-frac must be below 1"),
    (["--val-frac", "1"], "--val-frac must be at least 0 and below 1"),
    (["--test-frac", "0.6", "--val-frac", "0.5"], "leave no training users"),
    (["--candidates", "most"], "--candidates must be one of sampled, full"),
    (["--split-kind", "cold"], "--split-kind must be one of new-user"),
    (["--protocol", "psychic"], "--protocol must be one of next-item, rating"),
    (["--rating-scale", "5,1"], "--rating-scale takes LOW,HIGH with LOW below HIGH"),
    (["--columns", "usr=uid"], "--columns names user, item, rating and ts"),
    (["--ks", "1,-2"], "--ks must be non-negative"),
])
def test_every_option_is_checked_before_the_data_is_read(thaw_main, tmp_path, args, message):
    code, _, err = thaw_main("evaluate", "--dataset", tmp_path / "nowhere.csv", "--out", tmp_path / "o", *args)
    assert code == 2 and message in err and "nowhere.csv" not in err and "Traceback" not in err, err


def test_run_checks_its_options_first(thaw_main, tmp_path):
    code, _, err = thaw_main("run", "--seed", "-1", "--out", tmp_path / "o")
    assert code == 2 and "--seed" in err


def test_auto_jobs_is_within_bounds():
    assert 1 <= cli._auto_jobs() <= cli.MAX_JOBS


# --- data that would give wrong numbers in silence ----------------------------------------------

def test_duplicate_rows_are_counted_once_with_a_warning(thaw_main, ratings_csv, tmp_path):
    frame = pd.read_csv(ratings_csv)
    doubled = tmp_path / "doubled.csv"
    pd.concat([frame, frame]).to_csv(doubled, index=False)
    code, _, err = thaw_main(*base_args(doubled, tmp_path / "a"))
    assert code == 0, err
    assert f"{len(frame)} rows repeat an earlier row's user, item and timestamp" in err
    assert f"line {len(frame) + 2}" in err
    assert thaw_main(*base_args(ratings_csv, tmp_path / "b"))[0] == 0
    a, b = (pd.read_csv(tmp_path / d / "results.csv") for d in ("a", "b"))
    assert np.allclose(a["value"], b["value"])


def test_ratings_off_the_scale_are_an_error_naming_the_line(thaw_main, ratings_csv, tmp_path):
    frame = pd.read_csv(ratings_csv)
    frame.loc[10, "rating"], frame.loc[20, "rating"] = -3, 99
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    code, _, err = thaw_main(*base_args(bad, tmp_path / "o"))
    assert code == 2 and "line 12" in err and "column 'rating'" in err and "--rating-scale" in err, err
    code, _, err = thaw_main(*base_args(bad, tmp_path / "o", "--rating-scale", "1,5"))
    assert code == 2 and "line 12" in err and "outside the scale 1 to 5" in err
    code, _, err = thaw_main(*base_args(bad, tmp_path / "o", "--rating-scale", "-5,100"))
    assert code == 0, err


def test_the_rating_protocol_needs_a_rating_column(thaw_main, ratings_csv, tmp_path):
    implicit = tmp_path / "implicit.csv"
    pd.read_csv(ratings_csv).drop(columns="rating").to_csv(implicit, index=False)
    code, _, err = thaw_main(*base_args(implicit, tmp_path / "o", "--protocol", "rating"))
    assert code == 2 and "needs ratings" in err and "--columns rating=COLUMN" in err, err


def test_few_or_no_test_users_at_the_largest_k(thaw_main, ratings_csv, tmp_path):
    code, _, err = thaw_main(*base_args(ratings_csv, tmp_path / "o", ks="1,500"))
    assert code == 2 and "none of the split's 16 test users has more than 500 interactions" in err, err
    assert "lower the largest K below" in err
    code, _, err = thaw_main(*base_args(ratings_csv, tmp_path / "o"))
    assert code == 0 and "warning: only 16 of the split's 16 test users" in err and "below 30" in err


def test_a_split_with_no_test_users_says_so(thaw_main, ratings_csv, tmp_path):
    frame = pd.read_csv(ratings_csv).rename(columns={"uid": "user", "iid": "item"})
    frame["role"] = np.where(frame["user"] % 5 == 0, "val", "train")
    split = tmp_path / "split"
    split.mkdir()
    frame.to_csv(split / "interactions.csv", index=False)
    code, _, err = thaw_main("evaluate", "--split", split, "--models", "pop", "--ks", "1", "--out", tmp_path / "o")
    assert code == 2 and "the split has no test users" in err, err


def test_a_negative_the_user_interacted_with_is_an_error(thaw_main, ratings_csv, tmp_path):
    frame = pd.read_csv(ratings_csv).rename(columns={"uid": "user", "iid": "item"})
    frame["role"] = np.where(frame["user"] % 4 == 0, "test", "train")
    split = tmp_path / "split"
    split.mkdir()
    frame.to_csv(split / "interactions.csv", index=False)
    items = sorted(frame["item"].unique())
    rows = [(u, i) for u in sorted(frame.loc[frame.role == "test", "user"].unique())
            for i in items if i not in set(frame.loc[frame.user == u, "item"])]
    user, item = frame.loc[frame.role == "test", ["user", "item"]].iloc[0]
    pd.DataFrame(rows + [(user, item)], columns=["user", "item"]).to_csv(split / "negatives.csv", index=False)
    code, _, err = thaw_main("evaluate", "--split", split, "--models", "pop", "--ks", "1", "--out", tmp_path / "o")
    assert code == 2 and f"item '{item}' is no negative for user '{user}'" in err, err


def test_content_without_item_text_says_so_once(thaw_main, ratings_csv, tmp_path):
    code, _, err = thaw_main(*base_args(ratings_csv, tmp_path / "o", models="pop,content,random"))
    assert code == 0, err
    assert err.count("content: the items have no text") == 1


def test_columns_hint_speaks_the_interface_in_use(thaw_main, ratings_csv, tmp_path):
    from thaw.data.loaders import load_dataset
    from thaw.errors import DataError

    odd = tmp_path / "odd.csv"
    pd.read_csv(ratings_csv).rename(columns={"uid": "who"}).to_csv(odd, index=False)
    with pytest.raises(DataError, match=r"columns=\{'user': 'COLUMN'\}"):
        load_dataset(str(odd))
    code, _, err = thaw_main(*base_args(odd, tmp_path / "o"))
    assert code == 2 and "--columns user=COLUMN" in err and "columns={" not in err, err


# --- what it shows --------------------------------------------------------------------------

def test_tables_show_intervals_and_name_the_models_without_ratings(thaw_main, ratings_csv, tmp_path):
    code, out, err = thaw_main(*base_args(ratings_csv, tmp_path / "o", "--protocol", "rating",
                                         models="random,pop,bpr"))
    assert code == 0, err
    assert "(bpr does not predict ratings: no MAE or RMSE" in out
    mae = out[out.index("mae (lower is better)"):].splitlines()
    assert any(line.split()[0] == "pop" and "±" in line for line in mae[1:5])
    assert not any(line.split()[0] == "bpr" for line in mae[1:5] if line.strip())


def test_interval_cell():
    from thaw.eval.report import interval_cell

    assert interval_cell(0.7061, 0.66, 0.76) == "0.706 ±0.05"
    assert interval_cell(0.5, 0.499, 0.501) == "0.500 ±0.001"
    assert interval_cell(float("nan"), 0, 1) == "n/a"


def test_progress_names_what_runs_now_and_an_eta_from_earlier_times():
    from thaw.eval.progress import Progress

    now = [0.0]
    bar = Progress(["pop", "sasrec", "hml", "deepfm"], 2, {"pop": 1, "sasrec": 90, "hml": 60, "deepfm": 30},
                   "evaluate", enabled=False, clock=lambda: now[0])
    bar.started("pop")
    bar.started("sasrec")
    assert bar.running() == ["pop", "sasrec"]
    now[0] = 1.0
    bar.finished("pop")  # hml takes pop's worker
    now[0] = 31.0
    assert bar.running() == ["sasrec", "hml"]
    # sasrec has 59 s left, hml 30 s; deepfm starts when hml ends (at +30) and takes 30: ETA 60 s.
    assert bar.eta() == pytest.approx(60.0)
    assert bar.text() == "running sasrec 31s, hml 30s; ETA 1m00s"
    unknown = Progress(["pop", "new"], 1, {"pop": 1}, "evaluate", enabled=False)
    unknown.started("pop")
    assert unknown.eta() is None and unknown.text().startswith("running pop")


def test_eta_comes_from_the_previous_run_in_the_results_folder():
    previous = {"runs": [{"meta": {"split_kind": "new-user", "protocol": "rating"},
                          "timings": [{"model": "mf", "fit_seconds": 2.0, "score_seconds": 0.5}]}]}
    assert cli._previous_seconds(previous) == {("new-user", "rating"): {"mf": 2.5}}


# --- start-up -------------------------------------------------------------------------------

def test_help_and_models_import_no_heavy_module():
    code = ("import sys\nfrom thaw.cli import main\nfor args in (['--help'], ['models']):\n"
            "    sys.argv = ['thaw', *args]\n    try:\n        main()\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'pandas', 'numpy', 'sklearn', 'scipy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "bandit-sim" in done.stdout and "stack" in done.stdout.split()


def test_lazy_commands_list_their_own_help_line():
    import importlib

    for name, (target, short) in cli.LAZY_COMMANDS.items():
        module, _, function = target.partition(":")
        doc = getattr(importlib.import_module(module), function).__doc__
        assert doc.strip().splitlines()[0] == short, name


def test_a_lazy_command_runs(thaw_main, tmp_path):
    code, _, err = thaw_main("bandit-sim", "--horizon", "0", "--out", tmp_path / "b")
    assert code == 2 and "--horizon must be at least 1" in err


def test_leftovers_of_a_killed_write_are_cleared_by_the_next(tmp_path):
    from thaw.eval import report

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f".results.partial-{dead}").mkdir()
    (tmp_path / f".results.old-{os.getppid()}").mkdir()  # a live process's: not ours to touch
    (tmp_path / ".other.partial-1").mkdir()
    report._remove_leftovers(tmp_path / "results")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.partial-1", f".results.old-{os.getppid()}"]


# --- issue 25: what the second careless trial found -----------------------------------------------

def test_a_param_the_validation_grid_would_choose_is_honoured_and_recorded(thaw_main, ratings_csv, tmp_path):
    from thaw.data.splits import make_split
    from thaw.eval.protocol import SplitValidator

    split = make_split(make_synthetic(n_users=60, n_items=30, seed=1), "new-user", seed=0)
    params = cli._parse_params(["mf.reg=100", "mf.iterations=2"])
    model = cli._make_models(["mf"], 0, params)["mf"]
    model.fit(split.train, validate=SplitValidator(split, "next-item"))
    assert model.reg == 100 and model.fold_prior in model.fold_priors  # only what was given is fixed
    code, _, err = thaw_main(*base_args(ratings_csv, tmp_path / "o", "--param", "mf.reg=100,mf.iterations=2",
                                        models="pop,mf"))
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "results.json").read_text())["params"]["mf"] == {
        "reg": 100, "grid": [100], "iterations": 2}
    with pytest.raises(errors.ThawError, match="mf.reg and mf.grid both given"):
        cli._parse_params(["mf.reg=100", "mf.grid=0.1,0.3"])
    assert cli._parse_params(["mf.grid=0.5"])["mf"]["reg"] == 0.5  # a grid of one is that value
    with pytest.warns(UserWarning, match="bias.reg_item is not chosen on validation users either"):
        cli._parse_params(["bias.reg_user=5"])


@pytest.mark.parametrize("param, message", [
    ("mf.reg=nan", "--param mf.reg: nan is not a number"),
    ("mf.reg=-1", "--param mf.reg: -1 is negative"),
    ("mf.reg=inf", "--param mf.reg: inf is not a finite number"),
    ("mf.grid=0.1,nan", "--param mf.grid: nan is not a number"),
    ("mf.dim=0", "--param mf.dim: 0 must be at least 1"),
    ("mf.dim=-5", "--param mf.dim: -5 is negative"),
    ("mf.iterations=0", "--param mf.iterations: 0 must be at least 1"),
    ("melu.hidden=32,0", "--param melu.hidden: 0 must be at least 1"),
])
def test_a_param_no_model_can_use_is_an_error_before_any_work(thaw_main, tmp_path, param, message):
    code, _, err = thaw_main("evaluate", "--dataset", tmp_path / "nowhere.csv", "--out", tmp_path / "o",
                             "--models", "mf,melu", "--param", param)
    assert code == 2 and message in err and "nowhere.csv" not in err and "Traceback" not in err, err
    if param.startswith("mf."):
        code, _, err = thaw_main("fit", "--model", "mf", "--dataset", tmp_path / "nowhere.csv", "--out",
                                 tmp_path / "m", "--param", param)
        assert code == 2 and message in err and "nowhere.csv" not in err, err


def test_infinity_is_a_param_value_where_the_model_itself_uses_it():
    assert cli._parse_params(["hml-soft.temperature=inf"])["hml-soft"]["temperature_grid"] == (float("inf"),)


def test_the_python_api_names_a_bad_index_context_or_unfitted_model():
    from thaw.data.schema import Interactions
    from thaw.models.base import Context
    from thaw.registry import make_model

    data = make_synthetic(n_users=30, n_items=20, seed=0)
    with pytest.raises(errors.ThawError, match="item index -1 is negative"):
        Interactions.of([3, -1])
    with pytest.raises(errors.ThawError, match="Context.history must be Interactions"):
        Context(user=None, history=None)
    with pytest.raises(errors.ThawError, match="Context.user is a training user's internal index"):
        Context(user=-1)
    with pytest.raises(errors.ThawError, match="model 'mf' is not fitted: call fit"):
        make_model("mf").score(Context(None), np.arange(5))
    model = make_model("mf", iterations=2).fit(data)
    assert model.fitted_on == (data.n_users, data.n_items)
    for items, history, bad in (([0, -1], [], "-1"), ([0, 9999], [], "9999"), ([0, 1], [20], "20")):
        with pytest.raises(errors.ThawError, match=f"index {bad} is not an item of its data set"):
            model.score(Context(None, Interactions.of(history)), np.asarray(items))
    with pytest.raises(errors.ThawError, match="user index 30 is not a user"):
        model.predict(Context(30), np.arange(3))
    with pytest.raises(errors.ThawError, match="scores a Context"):
        model.score_many([None], [np.arange(3)])
    assert model.score(Context(None, Interactions.of([19])), np.arange(20)).shape == (20,)


@pytest.fixture(scope="module")
def segment_pop_dir(tmp_path_factory):
    """A segment-pop model saved with its data set, as `thaw fit` saves it (fitted in a blink)."""
    from thaw.persist import save
    from thaw.registry import make_model

    data = make_synthetic(n_users=60, n_items=30, seed=1)
    model = make_model("segment-pop", smoothing=1.0).fit(data)
    model.dataset = data
    return save(model, tmp_path_factory.mktemp("model") / "segment-pop")


def test_a_profile_value_no_user_has_is_named_and_its_case_is_mended(thaw_main, segment_pop_dir):
    answers = {}
    for profile, message in (("gender=Q", "--profile gender=Q: no user of the data set has that gender (its "
                                          "values: F, M)"),
                             ("age=-5", "--profile age=-5 is outside the data set's age values"),
                             ("age=nan", "--profile age=nan is outside the data set's age values"),
                             ("gender=f", None), ("gender=F", None)):
        full = profile + (",age=30" if profile.startswith("gender") else ",gender=F")  # segment: both
        code, out, err = thaw_main("recommend", segment_pop_dir, "--profile", full, "-n", "5")
        assert code == 0 and (message in err if message else "warning" not in err), (profile, err)
        answers[profile] = out
    assert answers["gender=f"] == answers["gender=F"] != answers["gender=Q"]


def test_history_items_with_commas_can_be_given(thaw_main, tmp_path):
    import dataclasses

    from thaw.persist import save
    from thaw.registry import make_model

    data = make_synthetic(n_users=60, n_items=30, seed=1)
    ids = data.item_ids.astype(object)
    ids[:2] = ["Godfather, The (1972)", "Alien (1979)"]
    data = dataclasses.replace(data, item_ids=ids)
    model = make_model("pop").fit(data)
    model.dataset = data
    path = save(model, tmp_path / "pop")
    top_all = thaw_main("recommend", path, "-n", "30")[1]
    assert "Godfather, The (1972)" in top_all
    code, out, err = thaw_main("recommend", path, "--history", "Godfather, The (1972)", "--history", "i3,i4",
                               "--ratings", "5,4,3", "-n", "30")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 27 and "Godfather" not in out and " i3 " not in out
    code, _, err = thaw_main("recommend", path, "--history", "Godfather", "-n", "3")
    assert code == 2 and "unknown item(s) Godfather" in err


def test_one_item_is_an_error_and_negative_ratings_are_named(thaw_main, ratings_csv, tmp_path):
    one = tmp_path / "one.csv"
    pd.DataFrame({"user": [f"u{k}" for k in range(40)], "item": "only", "rating": 4, "ts": 0}).to_csv(one, index=False)
    for command in (base_args(one, tmp_path / "o", ks="0"), ["fit", "--model", "pop", "--dataset", one, "--out",
                                                            tmp_path / "m"]):
        code, _, err = thaw_main(*command)
        assert code == 2 and "has 1 item(s)" in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "m").exists()
    frame = pd.read_csv(ratings_csv)
    frame["rating"] -= 3  # -2 to 2, a scale the loader infers
    shifted = tmp_path / "shifted.csv"
    frame.to_csv(shifted, index=False)
    code, _, err = thaw_main(*base_args(shifted, tmp_path / "r", "--protocol", "rating"))
    assert code == 0 and "has ratings below 0 (down to -2)" in err and "NDCG is not on the usual 0-1 scale" in err
    code, _, err = thaw_main(*base_args(shifted, tmp_path / "n"))
    assert code == 0 and "ratings below 0" not in err  # next-item ranking does not read ratings


def test_fit_out_is_checked_as_evaluate_out_is_and_its_files_share_one_mode(thaw_main, ratings_csv, tmp_path):
    import stat

    from thaw.persist import save
    from thaw.registry import make_model

    fit = ["fit", "--model", "pop", "--dataset", ratings_csv]
    csvs = tmp_path / "csvs"
    csvs.mkdir()
    (csvs / "data.csv").write_text("x")
    code, _, err = thaw_main(*fit, "--out", csvs)
    assert code == 2 and "is a folder of other files, not a thaw model" in err, err
    assert [p.name for p in csvs.iterdir()] == ["data.csv"]
    out = tmp_path / "model"
    assert thaw_main(*fit, "--out", out)[0] == 0
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert len(set(modes.values())) == 1, modes  # safetensors wrote 0600, model.json 0644
    assert thaw_main(*fit, "--out", out)[0] == 0  # a rerun replaces it
    code, _, err = thaw_main(*fit, "--seed", "1", "--out", out)
    assert code == 2 and "holds a model fitted by another command (thaw fit --model pop" in err and "--overwrite" in err
    assert thaw_main(*fit, "--seed", "1", "--out", out, "--overwrite")[0] == 0
    (out / "notes.txt").write_text("mine")
    code, _, err = thaw_main(*fit, "--seed", "1", "--out", out, "--overwrite")
    assert code == 2 and "notes.txt" in err
    by_hand = save(make_model("pop").fit(make_synthetic(n_users=20, n_items=10, seed=0)), tmp_path / "by-hand")
    code, _, err = thaw_main(*fit, "--out", by_hand)
    assert code == 2 and "(a command it did not record)" in err


def test_a_model_folder_changed_after_its_save_is_refused_at_load(tmp_path):
    import shutil

    from safetensors.numpy import load_file, save_file

    import thaw
    from thaw.registry import make_model

    model = make_model("mf", iterations=2, dim=4).fit(make_synthetic(n_users=30, n_items=20, seed=0))
    saved = thaw.save(model, tmp_path / "saved")
    tensors = load_file(str(saved / "tensors.safetensors"))
    state = json.loads((saved / "model.json").read_text())

    def changed(name, new_tensors=None, new_state=None):
        folder = tmp_path / name
        shutil.copytree(saved, folder)
        if new_tensors is not None:
            save_file(new_tensors, str(folder / "tensors.safetensors"))
        if new_state is not None:
            (folder / "model.json").write_text(json.dumps(new_state))
        return folder

    cases = [
        (changed("swapped", {**tensors, "item_factors": np.zeros((5, 4))}),
         r"'item_factors' is <f8 of shape \[5, 4\], saved as <f8 of shape \[20, 4\]"),
        (changed("deleted", {k: v for k, v in tensors.items() if k != "gram"}), "'gram' is missing"),
        (changed("edited", {**tensors, "item_factors": tensors["item_factors"] * 2}), "checksum"),
        (changed("no-reg", new_state={**state, "state": {k: v for k, v in state["state"].items() if k != "reg"}}),
         "checksum"),
    ]
    for folder, message in cases:
        with pytest.raises(errors.ThawError, match=message):
            thaw.load(folder)
    np.testing.assert_array_equal(thaw.load(changed("as-saved")).item_factors, model.item_factors)
