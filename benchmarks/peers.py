"""Public implementations on thaw's own split, scored by thaw's own metric code (issue 11).

    pip install -e '.[peers]'        # RecBole 1.2.1 and scikit-surprise (see pyproject.toml)
    .venv/bin/python benchmarks/peers.py [--seed 0] [--thaw-results results] [--out results/peers]
    .venv/bin/python benchmarks/peers.py --peers SASRec --epochs 5 --progress     # one peer, bounded

The split is the main job's (``make_split(data, "new-user", seed)``); the episodes, the 100
sampled negatives per user and the metrics (ties count against the model) are thaw's own
(thaw/eval/protocol.py, thaw/eval/metrics.py), so every number below comes from the same
episodes as thaw's tables and the per-user values can be paired with ``thaw run``'s.

- Sequence peers (RecBole GRU4Rec, SASRec, BERT4Rec) train once, on the warm (training) users
  only, and read a cold user's first K items at score time through the trained network's
  forward pass. K = 0 is not run for them: an empty sequence has nothing to encode.
- General peers (RecBole Pop, BPR, LightGCN; surprise BaselineOnly and SVD) cannot fold a new
  user in, so they are refit for every K on the training users plus every validation and test
  user's first K interactions (never anything after them). This favours them: a model fitted
  with the test users' supports has seen more than thaw's fit-once models. At K = 0 only Pop,
  BaselineOnly and SVD run (a user without interactions gets no embedding in BPR/LightGCN;
  surprise predicts global mean + item bias for an unknown user).
- Early stopping (RecBole models, at most ``--epochs``, patience ``--patience``) reads thaw's
  validation users only: thaw's ``SplitValidator`` for sequence peers; for the refit general
  peers, the validation users' episodes at the same K (their supports are in that refit).
  surprise's models have no early stopping and run with the library's defaults.
- Next-item protocol for RecBole, rating protocol (MAE, RMSE per user) for surprise; thaw's own
  random and pop beside them in both.

``--thaw-results DIR [DIR ...]`` (folders written by ``thaw run`` or ``thaw evaluate`` on the
same split) puts the best thaw model per K beside the best peer, with the ratio best-thaw /
best-peer (NDCG@10; MAE for ratings) and a paired Wilcoxon signed-rank test over the users both
were scored on, joined on the raw user id (a per_user.csv holding thaw's internal index instead
is recognised and mapped, see ``raw_user_ids``). ``--peer-results DIR [DIR ...]`` reads the peers'
rows from earlier ``--out`` folders instead of running them (peers run as parallel jobs, say).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import torch

from thaw.data.loaders import load_dataset
from thaw.data.schema import Dataset, Interactions
from thaw.data.splits import Split, chronological_order, make_split
from thaw.eval.episodes import episode_metrics, episodes
from thaw.eval.protocol import DegenerateResultWarning, EvalResult, SplitValidator, evaluate
from thaw.eval.report import format_tables
from thaw.eval.statistics import compare, paired_p, summarise
from thaw.models.base import Context, Episode, Recommender, model_outputs, train_epochs

SEQUENCE_PEERS = ("GRU4Rec", "SASRec", "BERT4Rec")
GENERAL_PEERS = ("Pop", "BPR", "LightGCN")
SURPRISE_PEERS = ("BaselineOnly", "SVD")
ALL_PEERS = GENERAL_PEERS + SEQUENCE_PEERS + SURPRISE_PEERS
NO_K0 = frozenset({"BPR", "LightGCN", *SEQUENCE_PEERS})
"""Peers that have nothing to score a user with no interaction by."""

# RecBole's defaults for each model (its properties/model/*.yaml) except what is set here: the
# sequence models as the issue measured them (batch 256, sequences of at most 20 items). Pop
# keeps RecBole's defaults too, although its counter is not a count: it adds one to an item at
# most once per training batch (an index assignment does not accumulate repeats), and the
# default sampler's label-0 rows are counted like interactions, so popular items tie (ties
# count against it). Measured on ML-100k, seed 0: NDCG@10 at K = 0 is 0.523 with the defaults,
# 0.265 without training negatives (fewer, larger batches), 0.604 for thaw's pop (true counts).
RECBOLE_SETTINGS: dict[str, dict] = {
    "Pop": {},
    "BPR": {},
    "LightGCN": {},
    "GRU4Rec": {"train_batch_size": 256, "MAX_ITEM_LIST_LENGTH": 20},
    "SASRec": {"train_batch_size": 256, "MAX_ITEM_LIST_LENGTH": 20},
    "BERT4Rec": {"train_batch_size": 256, "MAX_ITEM_LIST_LENGTH": 20},
}


def _recbole_compat() -> None:
    """RecBole 1.2.1 on numpy 2: ``Config.compatibility_settings`` re-creates numpy aliases
    from names numpy 2 removed (``np.float_``, ``np.complex_``, ``np.unicode_``) and would raise
    AttributeError. Giving numpy those names first (as the types they always meant) is enough;
    nothing else in the code paths used here needs a change. Its Trainer also opens a
    TensorBoard writer in ``./log_tensorboard`` that only its own ``fit`` writes to; the epochs
    here run through ``_train_epoch``, so no writer is opened. And importing its model package
    runs ``torch.autograd.set_detect_anomaly(True)`` (in its SINE model's module), which slows
    every backward pass several times over: it is switched off again. Its graph models (LightGCN)
    fill their adjacency matrix with scipy's ``dok_matrix._update``, which scipy 1.13 replaced
    by the public ``update`` (the same, with its keys checked)."""
    import scipy.sparse

    if not hasattr(scipy.sparse.dok_matrix, "_update"):
        scipy.sparse.dok_matrix._update = scipy.sparse.dok_matrix.update
    for name, alias in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if name not in np.__dict__:
            setattr(np, name, alias)
    import recbole.trainer.trainer as recbole_trainer

    recbole_trainer.get_tensorboard = lambda logger: None
    import recbole.model.sequential_recommender  # noqa: F401  (the import that turns anomaly mode on)

    torch.autograd.set_detect_anomaly(False)


class _RecBoleData:
    """thaw interactions written as RecBole atomic files and loaded back as a RecBole dataset.

    Every item of the catalogue is in RecBole's vocabulary (an ``.item`` file lists them all),
    so every candidate gets a score. Each user's rows are numbered in thaw's chronological
    order (``chronological_order`` with the run's seed, as thaw's own sequence models order
    their training data) and that number is RecBole's timestamp, so RecBole's sequences are
    exactly the ones thaw's models train on."""

    def __init__(self, model: str, data: Dataset, inter: Interactions, folder: Path, *, seed: int,
                 epochs: int, device: str) -> None:
        from recbole.config import Config
        from recbole.data import create_dataset, create_samplers, get_dataloader
        from recbole.utils import init_seed

        order = chronological_order(inter, seed)
        inter = inter.take(order)
        starts = np.r_[0, np.flatnonzero(np.diff(inter.user)) + 1]
        position = np.arange(len(inter)) - np.repeat(starts, np.diff(np.r_[starts, len(inter)]))
        name = "thaw_peers"
        (folder / name).mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"user_id:token": inter.user, "item_id:token": inter.item,
                      "rating:float": inter.rating, "timestamp:float": position}).to_csv(
            folder / name / f"{name}.inter", sep="\t", index=False)
        pd.DataFrame({"item_id:token": np.arange(data.n_items)}).to_csv(
            folder / name / f"{name}.item", sep="\t", index=False)
        settings = {
            "data_path": str(folder), "checkpoint_dir": str(folder / "saved"), "seed": seed,
            "reproducibility": True, "state": "ERROR", "show_progress": False, "epochs": epochs,
            "use_gpu": device != "cpu", "gpu_id": "0" if device != "cpu" else "",
            "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"], "item": ["item_id"]},
            # Everything is training data: validation is thaw's, done outside RecBole.
            "eval_args": {"split": {"RS": [1.0, 0.0, 0.0]}, "group_by": "user", "order": "TO",
                          "mode": "full"},
            **RECBOLE_SETTINGS[model],
        }
        if model in SEQUENCE_PEERS:
            settings["train_neg_sample_args"] = None  # cross-entropy over the whole catalogue
        # RecBole's Config also reads `--key=value` options from sys.argv: this script's own
        # options must not reach it.
        with mock.patch.object(sys, "argv", sys.argv[:1]):
            self.config = Config(model=model, dataset=name, config_dict=settings)
        init_seed(seed, True)
        self.dataset = create_dataset(self.config)
        built = self.dataset.build()
        train_sampler, _, _ = create_samplers(self.config, self.dataset, built)
        self.train = get_dataloader(self.config, "train")(self.config, built[0], train_sampler, shuffle=True)
        self.items = self._ids(self.dataset.iid_field, np.arange(data.n_items))
        self.users = dict(zip(np.unique(inter.user).tolist(),
                              self._ids(self.dataset.uid_field, np.unique(inter.user)).tolist(), strict=True))

    def _ids(self, field: str, thaw_ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.dataset.token2id(field, [str(i) for i in thaw_ids]), dtype=np.int64)


class RecBolePeer(Recommender):
    """One RecBole model trained through RecBole's own data loader and Trainer epoch, with
    thaw's epoch loop around it (validation after each epoch, the best epoch's weights kept).

    A sequence model is scored from the context's support; a general model from the user's
    own embedding (``ctx.user`` must then be a user it was fitted with)."""

    def __init__(self, model: str, *, seed: int = 0, epochs: int = 50, patience: int = 5,
                 device: str = "cpu", progress: bool = False) -> None:
        self.model, self.name = model, f"recbole-{model.lower()}"
        self.seed, self.epochs, self.patience, self.device = seed, epochs, patience, device
        self.progress = progress
        self.history: list[dict[str, float]] = []

    def fit(self, data: Dataset, validate=None) -> RecBolePeer:
        from recbole.utils import get_model, get_trainer

        with tempfile.TemporaryDirectory(prefix="thaw-peers-") as folder:
            self.data = _RecBoleData(self.model, data, data.interactions, Path(folder), seed=self.seed,
                                     epochs=self.epochs, device=self.device)
            config = self.data.config
            self.net = get_model(self.model)(config, self.data.train.dataset).to(config["device"])
            trainer = get_trainer(config["MODEL_TYPE"], self.model)(config, self.net)
            epoch = iter(range(self.epochs))

            def train_epoch() -> float:
                loss = trainer._train_epoch(self.data.train, next(epoch))
                return float(sum(loss) if isinstance(loss, tuple) else loss)

            epochs = trainer.epochs  # RecBole's Pop counts in one epoch (TraditionalTrainer)
            self.history = train_epochs(self, validate if epochs > 1 else None, epochs=epochs,
                                        patience=self.patience, train_epoch=train_epoch, net=self.net,
                                        progress=self.progress)
        self.net.eval()
        return self

    @property
    def best_epoch(self) -> int:
        scored = [h for h in self.history if "validation" in h]
        return int(max(scored, key=lambda h: h["validation"])["epoch"]) if scored else len(self.history)

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.score_many([ctx], [items])[0]

    def score_many(self, contexts: Sequence[Context], items: Sequence[np.ndarray], batch: int = 512
                   ) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for start in range(0, len(contexts), batch):
            ctxs = contexts[start:start + batch]
            with torch.no_grad():
                full = self._all_items(ctxs).to(torch.float64).cpu().numpy()
            out += [row[self.data.items[np.asarray(i, dtype=np.int64)]]
                    for row, i in zip(full, items[start:start + batch], strict=True)]
        return out

    def _all_items(self, ctxs: Sequence[Context]) -> torch.Tensor:
        """Scores of every RecBole item id (column 0 is RecBole's padding) for each context."""
        from recbole.data.interaction import Interaction

        net, device = self.net, self.data.config["device"]
        if self.model not in SEQUENCE_PEERS:
            users = torch.tensor([self.data.users.get(c.user, 0) if c.user is not None else 0
                                  for c in ctxs], device=device)
            return net.full_sort_predict(Interaction({net.USER_ID: users})).view(len(ctxs), -1)
        # BERT4Rec reads one more position (its [mask]) after the support.
        room = net.max_seq_length - 1 if self.model == "BERT4Rec" else net.max_seq_length
        seqs = torch.zeros(len(ctxs), net.max_seq_length, dtype=torch.long)
        lengths = torch.zeros(len(ctxs), dtype=torch.long)
        for row, c in enumerate(ctxs):
            recent = self.data.items[c.history.item[-room:]]
            if len(recent) == 0:
                raise ValueError(f"{self.name} has no sequence to encode at K = 0")
            seqs[row, :len(recent)] = torch.as_tensor(recent)
            lengths[row] = len(recent)
        seqs, lengths = seqs.to(device), lengths.to(device)
        if self.model != "BERT4Rec":
            return net.full_sort_predict(Interaction({net.ITEM_SEQ: seqs, net.ITEM_SEQ_LEN: lengths}))
        # BERT4Rec's full_sort_predict appends [mask] and then drops the sequence's first
        # column, which for a sequence shorter than its maximum drops the oldest real item
        # (K = 1 would see nothing). Its training masks the last item in place, unshifted;
        # the same input here: the support, then [mask] right after it.
        seqs[torch.arange(len(ctxs)), lengths] = net.mask_token
        hidden = net.gather_indexes(net.forward(seqs), lengths)
        return hidden @ net.item_embedding.weight[:net.n_items].T + net.output_bias


class SurprisePeer(Recommender):
    """scikit-surprise's BaselineOnly or SVD with its default settings; predicts ratings of a
    user it was fitted with (``ctx.user``), or global mean + item bias for one it was not."""

    predicts_ratings = True

    def __init__(self, model: str, *, seed: int = 0) -> None:
        self.model, self.name, self.seed = model, f"surprise-{model.lower()}", seed

    def fit(self, data: Dataset, validate=None) -> SurprisePeer:
        import surprise

        inter = data.interactions
        frame = pd.DataFrame({"user": inter.user.astype(str), "item": inter.item.astype(str),
                              "rating": inter.rating.astype(np.float64)})
        trainset = surprise.Dataset.load_from_df(frame, surprise.Reader(rating_scale=data.rating_scale)
                                                 ).build_full_trainset()
        if self.model == "SVD":
            self.algo = surprise.SVD(random_state=self.seed)
        else:
            self.algo = surprise.BaselineOnly(verbose=False)
        self.algo.fit(trainset)
        return self

    def predict(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        user = str(ctx.user) if ctx.user is not None else "unknown user"
        return np.array([self.algo.predict(user, str(i)).est for i in items], dtype=np.float64)

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.predict(ctx, items)


class EpisodeValidator:
    """thaw's validation metric (SplitValidator's: mean NDCG@10) on given validation episodes:
    the refit general peers are validated on the validation users' episodes at their own K."""

    empty = False

    def __init__(self, eps: list[Episode]) -> None:
        self.episodes = eps

    def __call__(self, model: Recommender) -> float:
        rows, _ = episode_metrics(model.name, self.episodes, model_outputs(model, self.episodes, "next-item"),
                                  "next-item", False)
        return float(np.nanmean([r["ndcg@10"] for r in rows]))


def known_users(eps: list[Episode]) -> list[Episode]:
    """The episodes with their user's id in the context: a refit general peer has that user."""
    return [replace(e, context=replace(e.context, user=e.user)) for e in eps]


def with_supports(split: Split, k: int) -> Dataset:
    """Training data plus every validation and test user's first K interactions (the refit of
    a general peer at K); nothing after a support is included."""
    inter = split.train.interactions
    for seqs in (split.val, split.test):
        for seq in seqs.values():
            inter = inter.concat(seq.take(slice(0, k)))
    return split.train.with_interactions(inter, name=f"{split.train.name}:train+supports@{k}")


def score_rows(model: Recommender, eps: list[Episode], protocol: str, k: int) -> list[tuple]:
    """Per-user metric rows (model, K, user, metric, value) from thaw's episode_metrics."""
    rates = protocol == "rating" and model.predicts_ratings
    rows, flags = episode_metrics(model.name, eps, model_outputs(model, eps, protocol), protocol, rates)
    if flags["constant"] or flags["nan"]:
        print(f"  note: {model.name} at K={k}: {flags['constant']} constant and {flags['nan']} NaN "
              f"score vectors of {len(eps)} (they count against it)")
    return [(model.name, k, e.user, m, v) for e, row in zip(eps, rows, strict=True) for m, v in row.items()]


def run_peers(split: Split, peers: Sequence[str], ks: Sequence[int], args: argparse.Namespace
              ) -> dict[str, list[tuple]]:
    """Every peer's per-user rows by protocol; a line per fit (best epoch, seconds) is printed."""
    rows: dict[str, list[tuple]] = {"next-item": [], "rating": []}
    test = {p: {k: episodes(split, "test", k, p, max_k=max(ks)) for k in ks} for p in ("next-item", "rating")}
    for name in peers:
        protocol = "rating" if name in SURPRISE_PEERS else "next-item"
        run_ks = [k for k in ks if k > 0] if name in NO_K0 else list(ks)
        if name in SEQUENCE_PEERS:
            start = time.perf_counter()
            peer = RecBolePeer(name, seed=args.seed, epochs=args.epochs, patience=args.patience,
                               device=args.device, progress=args.progress)
            peer.fit(split.train, SplitValidator(split, "next-item", [k for k in ks if k > 0]))
            for k in run_ks:
                rows[protocol] += score_rows(peer, test[protocol][k], protocol, k)
            print(f"{peer.name}: trained once on warm users, best epoch {peer.best_epoch} of "
                  f"{len(peer.history)}, {time.perf_counter() - start:.0f} s", flush=True)
            continue
        for k in run_ks:
            start = time.perf_counter()
            if name in SURPRISE_PEERS:
                peer = SurprisePeer(name, seed=args.seed).fit(with_supports(split, k))
                note = "library defaults"
            else:
                peer = RecBolePeer(name, seed=args.seed, epochs=args.epochs, patience=args.patience,
                                   device=args.device, progress=args.progress)
                val = known_users(episodes(split, "val", k, "next-item", max_k=max(ks)))
                peer.fit(with_supports(split, k), EpisodeValidator(val))
                note = f"best epoch {peer.best_epoch} of {len(peer.history)}"
            rows[protocol] += score_rows(peer, known_users(test[protocol][k]), protocol, k)
            fitted = "refit with the supports" if k else "fitted on the training users"
            print(f"{peer.name} K={k}: {fitted}, {note}, {time.perf_counter() - start:.0f} s", flush=True)
    return rows


def as_result(split: Split, protocol: str, ks: Sequence[int], per_user: pd.DataFrame, seed: int,
              n_bootstrap: int) -> EvalResult:
    """Peer and thaw-baseline rows as one EvalResult (thaw's tables, comparisons and files)."""
    users = per_user.loc[per_user["K"] == min(ks), "user"].nunique()
    meta = {"protocol": protocol, "split_kind": split.kind, "ks": list(ks), "candidates": "sampled",
            "seed": seed, "split": split.describe(), "test_users": int(users), "n_negatives": 100}
    return EvalResult(summarise(per_user, n_bootstrap=n_bootstrap, seed=seed), per_user, compare(per_user),
                      pd.DataFrame(columns=["model", "fit_seconds", "score_seconds"]), [], meta)


def raw_user_ids(values: pd.Series, data: Dataset, split: Split) -> tuple[pd.Series, str]:
    """A per_user.csv user column as the data set's raw user ids, and how it was read.

    thaw's per_user.csv has held the internal 0-based index and is moving to the raw id; on
    MovieLens both are numbers. The column is read as raw ids when every user in it is the raw
    id of one of this split's test users, as internal indices (mapped through
    ``Dataset.user_ids``) when every user is one's index; when both or neither hold, it is an
    error, never a guess (the two agree on no MovieLens user: raw = index + 1)."""
    text = values.astype(str)
    found = set(text)
    as_raw = found <= {str(data.user_ids[u]) for u in split.test}
    as_index = found <= {str(u) for u in split.test}
    if as_raw and not as_index:
        return text, "raw ids"
    if as_index and not as_raw:
        return pd.Series(data.user_ids[values.astype(np.int64).to_numpy()].astype(str), index=values.index), \
            "internal indices, mapped to raw ids through the data set's user index"
    raise SystemExit("the users of a per_user.csv are " + ("both" if as_raw else "neither") + " the raw ids "
                     "and the internal indices of this split's test users: is it the same split (data set, seed)?")


def check_split(folder: Path, split: Split) -> None:
    """Stop when a results folder was written on another split than this one."""
    meta = json.loads((folder / "results.json").read_text()) if (folder / "results.json").exists() else {}
    splits = {r["meta"].get("split") for r in meta.get("runs", []) if r["meta"].get("split_kind") == split.kind}
    if splits and split.describe() not in splits:
        raise SystemExit(f"{folder} was run on another split ({'; '.join(sorted(map(str, splits)))}), "
                         f"not on {split.describe()}")


def saved_rows(folders: Sequence[Path], data: Dataset, split: Split) -> dict[str, list[tuple]]:
    """Peer rows from earlier runs' ``--out`` folders (thaw's random and pop are recomputed);
    a peer found in several folders is taken from the last of them."""
    rows: dict[str, list[tuple]] = {"next-item": [], "rating": []}
    index = pd.Index(data.user_ids.astype(str))
    for folder in folders:
        check_split(folder, split)
        frame = pd.read_csv(folder / "per_user.csv")
        frame = frame[(frame["split"] == split.kind) & frame["model"].str.match("recbole-|surprise-")]
        raw, how = raw_user_ids(frame["user"], data, split)
        print(f"{folder}/per_user.csv: users read as {how}")
        frame = frame.assign(user=index.get_indexer(raw))
        for protocol, part in frame.groupby("protocol"):
            found = set(part["model"])
            rows[protocol] = [r for r in rows[protocol] if r[0] not in found]
            rows[protocol] += list(part[["model", "K", "user", "metric", "value"]].itertuples(index=False, name=None))
    return rows


def versus_thaw(folders: Sequence[Path], data: Dataset, split: Split, per_user: dict[str, pd.DataFrame]) -> str:
    """Best thaw model per K beside the best peer: the ratio and a paired test on the same users
    (joined on the raw user id). Several folders (a next-item and a rating run, say) are read
    as one."""
    for folder in folders:
        check_split(folder, split)
    per_user_file = pd.concat([pd.read_csv(f / "per_user.csv") for f in folders], ignore_index=True
                              ).drop_duplicates(["split", "protocol", "model", "K", "user", "metric"])
    results = pd.concat([pd.read_csv(f / "results.csv") for f in folders], ignore_index=True
                        ).drop_duplicates(["split", "protocol", "model", "K", "metric"])
    where = ", ".join(map(str, folders))
    lines = []
    for protocol, metric in (("next-item", "ndcg@10"), ("rating", "mae")):
        theirs = per_user_file[(per_user_file["split"] == split.kind) & (per_user_file["protocol"] == protocol)
                               & (per_user_file["metric"] == metric)].copy()
        table = results[(results["split"] == split.kind) & (results["protocol"] == protocol)
                        & (results["metric"] == metric)]
        if protocol not in per_user or theirs.empty:
            continue
        theirs["raw"], how = raw_user_ids(theirs["user"], data, split)
        mine = per_user[protocol]
        mine = mine[(mine["metric"] == metric) & mine["model"].str.match("recbole-|surprise-")]
        mine = mine.assign(raw=data.user_ids[mine["user"].to_numpy()].astype(str))
        lower = metric == "mae"
        lines += [f"\n{protocol}: the best thaw model in {where} against the best peer, {metric} "
                  f"({'lower' if lower else 'higher'} is better); paired Wilcoxon signed-rank over the users "
                  f"both were scored on (its per_user.csv users read as {how})",
                  "| K | best thaw | value | best peer | value | thaw / peer | users | p |",
                  "|---|---|---|---|---|---|---|---|"]
        for k in sorted(set(mine["K"]) & set(table["K"])):
            peer_means = mine[mine["K"] == k].groupby("model")["value"].mean()
            thaw_means = table[table["K"] == k].set_index("model")["value"]
            best_peer = peer_means.idxmin() if lower else peer_means.idxmax()
            best_thaw = thaw_means.idxmin() if lower else thaw_means.idxmax()
            a = theirs[(theirs["K"] == k) & (theirs["model"] == best_thaw)].set_index("raw")["value"]
            b = mine[(mine["K"] == k) & (mine["model"] == best_peer)].set_index("raw")["value"]
            both = a.index.intersection(b.index)
            diff = (a[both] - b[both]).dropna().to_numpy()
            p = paired_p(diff) if len(diff) >= 2 else float("nan")
            lines.append(f"| {k} | {best_thaw} | {thaw_means[best_thaw]:.4f} | {best_peer} | "
                         f"{peer_means[best_peer]:.4f} | {thaw_means[best_thaw] / peer_means[best_peer]:.3f} | "
                         f"{len(diff)} | {p:.2g} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ks", default="0,1,3,5,10")
    parser.add_argument("--peers", default=",".join(ALL_PEERS), help=f"comma-separated, of {', '.join(ALL_PEERS)}")
    parser.add_argument("--epochs", type=int, default=50, help="most RecBole epochs (early-stopped before)")
    parser.add_argument("--patience", type=int, default=5, help="epochs without a better validation NDCG@10")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda where there is one")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--progress", action="store_true", help="a bar per RecBole fit: epoch, loss, validation")
    parser.add_argument("--thaw-results", type=Path, nargs="+",
                        help="folders written by `thaw run` / `thaw evaluate` on the same split")
    parser.add_argument("--out", type=Path, help="write the peers' results.csv, per_user.csv, ... here")
    parser.add_argument("--peer-results", type=Path, nargs="+",
                        help="read the peers' rows from earlier runs' --out folders instead of running them")
    args = parser.parse_args(argv)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(ALL_PEERS))
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(ALL_PEERS)}")
    ks = tuple(sorted({int(k) for k in args.ks.split(",")}))
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if not args.peer_results and any(p not in SURPRISE_PEERS for p in peers):
        _recbole_compat()
    start = time.perf_counter()
    data = load_dataset(args.dataset)
    split = make_split(data, "new-user", seed=args.seed)
    print(split.describe())
    print("General peers (Pop, BPR, LightGCN, BaselineOnly, SVD) are refit for every K with the validation "
          "and test users' first K interactions in their training data: this favours them over thaw's "
          "fit-once models. Sequence peers train once on warm users. K = 0 is run only for Pop, "
          "BaselineOnly and SVD (the others have nothing to score an empty history with).\n", flush=True)
    rows = saved_rows(args.peer_results, data, split) if args.peer_results else run_peers(split, peers, ks, args)
    results, per_user = [], {}
    for protocol in ("next-item", "rating"):
        if not rows[protocol]:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateResultWarning)
            base = evaluate(["random", "pop"], split, protocol=protocol, ks=ks, progress=False, seed=args.seed,
                            n_bootstrap=args.bootstrap)
        # Rows here hold thaw's internal user index, whichever id thaw's own results carry.
        raw, _ = raw_user_ids(base.per_user["user"], data, split)
        thaw_rows = base.per_user.assign(user=pd.Index(data.user_ids.astype(str)).get_indexer(raw))
        frame = pd.concat([thaw_rows, pd.DataFrame(rows[protocol], columns=base.per_user.columns)],
                          ignore_index=True)
        per_user[protocol] = frame
        results.append(as_result(split, protocol, ks, frame, args.seed, args.bootstrap))
        print("\n" + format_tables(results[-1]).replace(" ==", " ==\n(random and pop are thaw's own)", 1))
    if args.thaw_results is not None:
        print(versus_thaw(args.thaw_results, data, split, per_user))
    if args.out is not None:
        from thaw.eval.report import write_results

        paths = write_results(results, args.out, seed=args.seed, title="peers on thaw's split",
                              command=["benchmarks/peers.py", *(sys.argv[1:] if argv is None else argv)])
        print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
