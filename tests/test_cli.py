"""The command line end to end on a small synthetic data set, and its handling of user error."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from thaw.data.synthetic import make_synthetic


def thaw(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "thaw", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def ratings_csv(tmp_path_factory):
    data = make_synthetic(n_users=80, n_items=50, seed=2)
    frame = data.interactions.to_frame()
    frame["uid"] = data.user_ids[frame["user"]]
    frame["iid"] = data.item_ids[frame["item"]]
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    frame[["uid", "iid", "rating", "ts"]].rename(columns={"rating": "stars"}).to_csv(path, index=False)
    return path


def test_evaluate_writes_tidy_results_and_report(ratings_csv, tmp_path):
    out = tmp_path / "out"
    done = thaw("evaluate", "--dataset", str(ratings_csv), "--columns",
                "user=uid,item=iid,rating=stars,ts=ts", "--models", "random,pop,content,mf",
                "--ks", "1,3", "--out", str(out), "--no-progress", "--bootstrap", "100")
    assert done.returncode == 0, done.stderr
    results = pd.read_csv(out / "results.csv")
    assert {"model", "K", "metric", "value"} <= set(results.columns)
    assert set(results["metric"]) == {"hit@1", "hit@10", "ndcg@10", "mrr", "auc"}
    assert set(results["model"]) == {"random", "pop", "content", "mf"}
    assert set(results["K"]) == {1, 3}
    for name in ("per_user.csv", "comparisons.csv", "cold_to_warm.png", "report.html"):
        assert (out / name).stat().st_size > 0
    meta = json.loads((out / "results.json").read_text())
    assert meta["provenance"]["seed"] == 0 and "evaluate" in meta["provenance"]["command"]
    assert "hit@10" in done.stdout and "random" in done.stdout
    comp = pd.read_csv(out / "comparisons.csv")
    assert (comp.groupby(["K", "metric"]).size() == 6).all()  # every pair of the four models
    assert {"p_value", "p_holm", "test", "users", "better"} <= set(comp.columns)


def test_evaluate_compares_only_the_pairs_named(ratings_csv, tmp_path):
    out = tmp_path / "out"
    done = thaw("evaluate", "--dataset", str(ratings_csv), "--columns",
                "user=uid,item=iid,rating=stars,ts=ts", "--models", "random,pop,content",
                "--ks", "1", "--out", str(out), "--no-progress", "--bootstrap", "20",
                "--compare", "pop:random,content:pop")
    assert done.returncode == 0, done.stderr
    comp = pd.read_csv(out / "comparisons.csv")
    assert set(zip(comp["model_a"], comp["model_b"], strict=False)) == {("pop", "random"), ("content", "pop")}


def test_rating_protocol_and_external_split(ratings_csv, tmp_path):
    frame = pd.read_csv(ratings_csv)
    users = sorted(frame["uid"].unique())
    role = {u: ("test" if i % 5 == 0 else "val" if i % 5 == 1 else "train") for i, u in enumerate(users)}
    split = tmp_path / "split"
    split.mkdir()
    frame.assign(role=frame["uid"].map(role)).rename(
        columns={"uid": "user", "iid": "item", "stars": "rating"}).to_csv(
        split / "interactions.csv", index=False)
    out = tmp_path / "out"
    done = thaw("evaluate", "--split", str(split), "--models", "random,pop", "--protocol",
                "rating", "--ks", "1,3", "--out", str(out), "--no-progress", "--bootstrap", "50")
    assert done.returncode == 0, done.stderr
    results = pd.read_csv(out / "results.csv")
    assert {"mae", "rmse", "ndcg@10"} <= set(results["metric"])
    test_users = sum(1 for u in users if role[u] == "test")
    assert results["users"].max() == test_users
    # A bare split folder has no side features: the run says so and how to give them.
    assert "no user features" in done.stderr and "--dataset NAME with --split" in done.stderr


def test_evaluate_without_validation_users_says_model_selection_was_skipped(ratings_csv, tmp_path):
    done = thaw("evaluate", "--dataset", str(ratings_csv), "--columns",
                "user=uid,item=iid,rating=stars,ts=ts", "--models", "pop,mf", "--val-frac", "0",
                "--ks", "1", "--out", str(tmp_path / "out"), "--no-progress", "--bootstrap", "20")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("model selection skipped") == 1


# What the main job's new-item and both-cold runs held when a name list in thaw/cli.py chose them.
ITEM_COLD_BEFORE_FLAGS = ("random", "pop", "segment-pop", "bias", "content", "content-minilm", "mf", "bpr",
                          "melu", "fomaml", "widedeep", "deepfm", "coldwarm", "stack-table")


def test_the_main_job_runs_new_items_with_the_models_it_always_has(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from thaw import cli

    runs = []
    monkeypatch.setattr(cli, "_load", lambda *args: make_synthetic(n_users=60, n_items=40, seed=1))
    monkeypatch.setattr(cli, "_launch", lambda *args: None)
    monkeypatch.setattr(cli, "_run", lambda protocols, these, *args, **kwargs: runs.extend(these))
    done = CliRunner().invoke(cli.app, ["run", "--out", str(tmp_path / "out"), "--no-progress"])
    assert done.exit_code == 0, done.output
    assert [split.kind for split, _ in runs] == ["new-user", "new-item", "both"]
    assert runs[0][1] == cli._model_list("all")
    assert tuple(runs[1][1]) == tuple(runs[2][1]) == ITEM_COLD_BEFORE_FLAGS


def test_models_and_datasets_commands():
    done = thaw("models")
    assert done.returncode == 0
    names = done.stdout.split()
    assert {"random", "pop", "segment-pop", "content", "mf", "bpr"} <= set(names)
    done = thaw("models", "--abilities")
    assert done.returncode == 0, done.stderr
    said = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert list(said) == names  # the same models, in the same order
    assert "scores new items" in said["content"] and said["metatl"] == "metatl"
    assert "needs a source domain" in said["emcdr"] and "needs a source domain" not in said["tgt"]
    assert "predicts ratings when fitted for them" in said["melu"] and "ratings" not in said["sasrec"]
    assert "only where named" in said["sasrec-x3"] and "only where named" not in said["sasrec"]
    done = thaw("datasets")
    assert done.returncode == 0 and "ml-100k" in done.stdout and "ml-1m" in done.stdout
    assert "ml-1m:drama-comedy" in done.stdout and "Drama -> Comedy" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["evaluate", "--dataset", "/no/such/file.csv"], "no/such/file.csv"),
    (["evaluate", "--models", "random,unicorn"], "unknown model(s) unicorn"),
    (["evaluate", "--ks", "1,x"], "--ks must be"),
    (["evaluate", "--protocol", "psychic", "--models", "random"], "--protocol must be one of next-item, rating"),
    (["evaluate", "--split", "/no/such/folder"], "interactions.csv"),
    (["evaluate", "--compare", "mf"], "--compare takes model pairs a:b"),
    (["evaluate", "--models", "random,pop", "--compare", "pop:mf"], "--compare names mf"),
    (["evaluate", "--models", "pop,tgt,emcdr"], "error: emcdr transfer from a second domain"),
])
def test_user_errors_are_one_line_without_traceback(args, message, tmp_path):
    done = thaw(*args, cwd=tmp_path)  # the default --out, results/, is made there
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_help_on_every_command():
    for command in ([], ["evaluate"], ["run"], ["datasets"], ["models"]):
        done = thaw(*command, "--help")
        assert done.returncode == 0 and "Usage" in done.stdout


def test_fit_recommend_and_explain_a_stack(ratings_csv, tmp_path):
    model_dir = tmp_path / "stack"
    done = thaw("fit", "--dataset", str(ratings_csv), "--columns", "user=uid,item=iid,rating=stars,ts=ts",
                "--model", "stack", "--members", "pop,content,mf", "--out", str(model_dir))
    assert done.returncode == 0, done.stderr
    assert "band" in done.stdout and (model_dir / "model.json").is_file()
    # Every user's interactions go with the model (validation users' too, for `thaw retrain`).
    from thaw.persist import load

    assert len(load(model_dir).dataset.interactions) == len(pd.read_csv(ratings_csv))
    explained = thaw("stack", "explain", str(model_dir))
    assert explained.returncode == 0, explained.stderr
    assert explained.stdout.strip() in done.stdout
    frame = pd.read_csv(ratings_csv)
    history = ",".join(str(i) for i in frame["iid"].iloc[:3])
    shown = thaw("recommend", str(model_dir), "--history", history, "-n", "5")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.strip().splitlines()
    assert len(lines) == 5 and lines[0].lstrip().startswith("1.")
    named = [line.split()[1] for line in lines]
    assert not set(named) & set(history.split(","))  # never the user's own items
    assert set(named) <= set(frame["iid"].astype(str))  # ids as the data names them
    for bad, message in ((["--history", "nope"], "unknown item"), (["--profile", "shoe=9"], "--profile"),
                         (["-n", "0"], "-n")):
        failed = thaw("recommend", str(model_dir), *bad)
        assert failed.returncode == 2 and message in failed.stderr and "Traceback" not in failed.stderr
    missing = thaw("recommend", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    not_a_stack = tmp_path / "pop"
    assert thaw("fit", "--dataset", str(ratings_csv), "--columns", "user=uid,item=iid,rating=stars,ts=ts",
                "--model", "pop", "--out", str(not_a_stack)).returncode == 0
    refused = thaw("stack", "explain", str(not_a_stack))
    assert refused.returncode == 2 and "not a stack" in refused.stderr
