"""Content kNN: the TF-IDF default, the MiniLM encoder and its cache, the K = 0 profile fallback."""

import math
import re
import sys
from collections import Counter

import numpy as np
import pandas as pd
import pytest

import thaw.models.content as content
from conftest import history, tiny_dataset
from thaw.data.features import item_documents
from thaw.errors import ThawError
from thaw.models.base import Context
from thaw.models.content import ContentKNN, EmbeddingCache, item_texts
from thaw.registry import make_model, model_names

SPACE_AND_COOKING = pd.DataFrame({
    "title": ["Orbit", "Red Planet Run", "Sunday Roast", "Knife Skills", "Quiet Harbour",
              "The Accountant's Ledger"],
    "description": [
        "Astronauts aboard a failing space station fight to return to Earth.",
        "A crew of astronauts lands a rocket on Mars and explores the planet.",
        "A chef teaches a family how to cook a roast dinner with vegetables.",
        "A cooking show about chopping, baking bread and making pasta in the kitchen.",
        "A fisherman falls in love in a small seaside village.",
        "A tax auditor uncovers fraud in a company's spreadsheets.",
    ]}, index=["space1", "space2", "cook1", "cook2", "romance", "office"])


def _text_data():
    rows = [("u1", "space1", 5.0, 1), ("u1", "cook1", 3.0, 2), ("u2", "cook2", 4.0, 1)]
    return tiny_dataset(rows, items=SPACE_AND_COOKING)


def _counting_encoder(monkeypatch):
    calls: list[int] = []
    real = content.encode_texts

    def counted(texts):
        calls.append(len(texts))
        return real(texts)

    monkeypatch.setattr(content, "encode_texts", counted)
    return calls


def test_minilm_puts_the_other_space_film_nearest_a_space_film(tmp_path):
    data = _text_data()
    # no popularity prior: this is about the similarity (the prior has its own tests below)
    model = make_model("content-minilm", cache_dir=tmp_path, popularity_weight=0.0).fit(data)
    assert model.name == "content-minilm" and model.encoder == "minilm"
    assert np.allclose(np.linalg.norm(model.vectors, axis=1), 1.0)  # cosine = dot product
    idx = {raw: i for i, raw in enumerate(data.item_ids)}
    everything = np.arange(data.n_items)
    for query, partner in (("space1", "space2"), ("space2", "space1"), ("cook1", "cook2")):
        sims = model.similarity(everything, np.array([idx[query]]))[:, 0]
        sims[idx[query]] = -np.inf
        assert data.item_ids[int(np.argmax(sims))] == partner
    # scoring goes through the same path as TF-IDF: the support's space film pulls the other up
    scores = model.score(Context(None, history=history([idx["space1"]], [5.0])), everything)
    others = [idx[r] for r in ("cook1", "cook2", "romance", "office")]
    assert scores[idx["space2"]] > scores[others].max()


def test_embeddings_are_cached_per_text_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("THAW_CACHE_DIR", str(tmp_path))
    calls = _counting_encoder(monkeypatch)
    data = _text_data()
    first = ContentKNN(encoder="minilm").fit(data)
    assert calls == [6]
    shards = list((tmp_path / content.MINILM_NAME).glob("*.safetensors"))
    assert len(shards) == 1
    second = ContentKNN(encoder="minilm").fit(data)
    assert calls == [6]  # read from disk, nothing encoded
    assert np.array_equal(first.vectors, second.vectors)
    # a new item costs one encode, not a new pass over the catalogue
    items = pd.concat([SPACE_AND_COOKING, pd.DataFrame(
        {"title": ["Moon Base"], "description": ["Miners on the Moon."]}, index=["new"])])
    grown = tiny_dataset([("u1", "space1", 5.0, 1), ("u2", "cook2", 4.0, 1)], items=items)
    third = ContentKNN(encoder="minilm").fit(grown)
    assert calls == [6, 1]
    for raw in SPACE_AND_COOKING.index:
        before, after = (int(np.flatnonzero(d.item_ids == raw)[0]) for d in (data, grown))
        assert np.allclose(third.vectors[after], first.vectors[before])


def test_a_broken_cache_file_is_skipped_not_fatal(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(content, "encode_texts",
                        lambda texts: calls.append(len(texts)) or np.eye(len(texts), 4))
    cache = EmbeddingCache("fake-model", tmp_path)
    cache.folder.mkdir(parents=True)
    (cache.folder / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="skipping unreadable"):
        vectors = content.embed_items(["a", "b", "", "a"], cache)
    assert calls == [2]  # "a" once, "" never
    assert np.array_equal(vectors[0], vectors[3]) and not vectors[2].any()
    assert np.allclose(np.linalg.norm(vectors[[0, 1]], axis=1), 1.0)


def test_content_minilm_without_the_packages_says_what_to_install(monkeypatch):
    assert "content-minilm" in model_names()
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now fails
    with pytest.raises(ThawError, match=re.escape("pip install 'thaw[text]'")):
        make_model("content-minilm")
    with pytest.raises(ThawError, match=re.escape("pip install 'thaw[text]'")):
        ContentKNN(encoder="minilm")
    content._sentence_model.cache_clear()  # and the loader itself, should they vanish later
    with pytest.raises(ThawError, match=re.escape("pip install 'thaw[text]'")):
        content._sentence_model()
    content._sentence_model.cache_clear()
    ContentKNN()  # TF-IDF needs nothing extra
    with pytest.raises(ThawError, match="unknown content encoder"):
        ContentKNN(encoder="word2vec")


def test_item_texts_read_a_text_column_or_build_a_sentence():
    data = _text_data()
    orbit = int(np.flatnonzero(data.item_ids == "space1")[0])
    assert item_texts(data)[orbit] == ("Orbit. Astronauts aboard a failing space station fight "
                                       "to return to Earth.")
    items = pd.DataFrame({"title": ["Toy Story", "Untitled"], "year": [1995.0, np.nan],
                          "genres": [("Animation", "Comedy"), ()]}, index=["a", "b"])
    data = tiny_dataset([("u", "a", 4.0, 1), ("u", "b", 3.0, 2)], items=items)
    texts = dict(zip(data.item_ids, item_texts(data), strict=True))
    assert texts == {"a": "Toy Story (1995). Genres: Animation, Comedy.", "b": "Untitled."}


# --- the TF-IDF default, against a TF-IDF written out here --------------------------------

def _independent_tfidf(docs):
    """Sublinear TF (1 + ln tf), smoothed IDF (ln((1 + n) / (1 + df)) + 1), unit rows."""
    tokens = [re.findall(r"\b\w[\w']*\b", d.lower()) for d in docs]
    vocab = sorted({t for ts in tokens for t in ts})
    df = Counter(t for ts in tokens for t in set(ts))
    idf = {t: math.log((1 + len(docs)) / (1 + df[t])) + 1 for t in vocab}
    rows = []
    for ts in tokens:
        tf = Counter(ts)
        v = np.array([(1 + math.log(tf[t])) * idf[t] if tf[t] else 0.0 for t in vocab])
        rows.append(v / np.linalg.norm(v))
    return np.array(rows)


def test_tfidf_is_still_the_default_and_scores_similarity_plus_the_popularity_prior():
    items = pd.DataFrame({"title": ["Space War", "Space War II", "Love Story", "Space Love"],
                          "year": [1977.0, 1980.0, 1970.0, 1983.0],
                          "genres": [("Sci-Fi",), ("Sci-Fi", "War"), ("Romance",), ("Romance",)]},
                         index=["s1", "s2", "l", "new"])
    rows = [("u1", "s1", 5.0, 1), ("u1", "l", 1.0, 2), ("u2", "s2", 4.0, 1), ("u2", "l", 2.0, 3),
            ("u3", "l", 3.0, 1)]
    data = tiny_dataset(rows, items=items)
    model = make_model("content").fit(data)
    assert model.encoder == "tfidf"
    vectors = _independent_tfidf(item_documents(data))
    idx = {raw: i for i, raw in enumerate(data.item_ids)}
    support, ratings = np.array([idx["s1"], idx["l"]]), np.array([5.0, 2.0])
    ctx = Context(None, history=history(support, ratings), profile={"gender": "F"})
    cand = np.arange(4)
    cosine = vectors[cand] @ vectors[support].T
    counts = np.bincount(data.interactions.item, minlength=4)
    prior = 3.0 * np.log1p(counts) / np.log1p(counts.max())  # the default popularity weight
    assert np.allclose(model.score(ctx, cand), cosine.sum(1) + prior + counts / counts.max() * 1e-9)
    mean = data.interactions.rating.mean()
    sums = np.bincount(data.interactions.item, weights=data.interactions.rating, minlength=4)
    item_means = (sums + 5.0 * mean) / (counts + 5.0)
    sims = np.clip(cosine, 0, None)
    expected = (sims @ ratings + item_means[cand]) / (sims.sum(1) + 1.0)
    assert np.allclose(model.predict(ctx, cand), expected)
    # one number worked out on paper: "Space War" vs "Space War II" share space, war, sci_fi
    value = model.similarity(np.array([idx["s1"]]), np.array([idx["s2"]]))[0, 0]
    assert value == pytest.approx(vectors[idx["s1"]] @ vectors[idx["s2"]])
    assert value == pytest.approx(0.3974, abs=1e-4)  # by hand: 6.061 / (3.466 * 4.400)


# --- K = 0: content by profile -------------------------------------------------------------

@pytest.fixture(scope="module")
def planted():
    """Women (30, engineers) watch A and B; men (55, doctors) watch C and D, and rate B low.
    Globally B, C and D are more popular than A."""
    rows, users = [], {}
    for u in range(12):
        users[f"w{u}"] = ("F", 30, "engineer", "10")
        rows += [(f"w{u}", "A", 5.0, 1), (f"w{u}", "B", 5.0, 2)]
    for u in range(15):
        users[f"m{u}"] = ("M", 55, "doctor", "90")
        rows += [(f"m{u}", "C", 5.0, 1), (f"m{u}", "D", 5.0, 2), (f"m{u}", "B", 1.0, 3)]
    frame = pd.DataFrame.from_dict(users, orient="index",
                                   columns=["gender", "age", "occupation", "zip_prefix"])
    data = tiny_dataset(rows, users=frame)
    return data, {raw: i for i, raw in enumerate(data.item_ids)}


def test_profile_fallback_ranks_what_similar_warm_users_took_first(planted):
    data, idx = planted
    model = make_model("content").fit(data)
    cand = np.array([idx[x] for x in "ABCD"])
    woman = Context(None, profile={"gender": "F", "age": 31, "occupation": "engineer",
                                   "zip_code": "10027"})
    scores = dict(zip("ABCD", model.score(woman, cand), strict=True))
    assert min(scores["A"], scores["B"]) > max(scores["C"], scores["D"])
    man = dict(zip("ABCD", model.score(Context(None, profile={"gender": "M", "age": 60}), cand),
                   strict=True))
    assert min(man["C"], man["D"]) > man["A"]
    # no profile (or one nobody shares): today's popularity order, where C beats A
    for ctx in (Context(None), Context(None, profile={"occupation": "astronaut"})):
        plain = dict(zip("ABCD", model.score(ctx, cand), strict=True))
        assert plain["C"] > plain["A"]
        assert np.allclose(model.score(ctx, cand), model.popularity_weight
                           * model.log_popularity[cand] + model.popularity[cand])
    # switched off: the popularity order again
    off = make_model("content", neighbours=0).fit(data)
    assert np.allclose(off.score(woman, cand), off.popularity_weight * off.log_popularity[cand]
                       + off.popularity[cand])


def test_profile_fallback_predicts_the_neighbours_ratings_shrunk_to_the_item_mean(planted):
    data, idx = planted
    model = make_model("content", profile_prior=20.0).fit(data)
    b = np.array([idx["B"]])
    woman = model.predict(Context(None, profile={"gender": "F", "age": 30}), b)[0]
    man = model.predict(Context(None, profile={"gender": "M", "age": 55}), b)[0]
    item_mean = model.item_means[b][0]
    # the 12 women match both fields (similarity 1) and all rated B 5
    assert woman == pytest.approx((12 * 5.0 + 20.0 * item_mean) / (12 + 20.0))
    assert man == pytest.approx((15 * 1.0 + 20.0 * item_mean) / (15 + 20.0))
    assert woman > item_mean > man
    assert model.predict(Context(None), b)[0] == pytest.approx(item_mean)


def test_profile_fallback_leaves_k_of_one_and_more_alone(planted):
    data, idx = planted
    model = make_model("content").fit(data)
    cand = np.array([idx[x] for x in "ABCD"])
    support = history([idx["A"]], [4.0])
    with_profile = Context(None, history=support, profile={"gender": "M", "age": 55})
    without = Context(None, history=support)
    assert np.array_equal(model.score(with_profile, cand), model.score(without, cand))
    assert np.array_equal(model.predict(with_profile, cand), model.predict(without, cand))


def test_profile_fallback_orders_new_items_by_what_the_neighbours_watched():
    items = pd.DataFrame({"title": ["Space War", "Cake Bake", "Space War II", "Cake Bake II"],
                          "genres": [("Sci-Fi",), ("Cooking",), ("Sci-Fi",), ("Cooking",)]},
                         index=["s", "c", "s_new", "c_new"])
    rows = [(f"w{u}", "s", 5.0, 1) for u in range(5)] + [(f"m{u}", "c", 5.0, 1) for u in range(9)]
    users = pd.DataFrame({"gender": ["F"] * 5 + ["M"] * 9},
                         index=[f"w{u}" for u in range(5)] + [f"m{u}" for u in range(9)])
    data = tiny_dataset(rows, users=users, items=items)
    model = make_model("content").fit(data)
    new = np.array([int(np.flatnonzero(data.item_ids == x)[0]) for x in ("s_new", "c_new")])
    woman = model.score(Context(None, profile={"gender": "F"}), new)
    man = model.score(Context(None, profile={"gender": "M"}), new)
    assert woman[0] > woman[1] and man[1] > man[0]


def test_a_known_user_is_scored_from_their_training_interactions_too(tmp_path):
    # u1 trained on a space film only; in a new-item setting (user known, no support yet) the
    # other space film must outrank the cooking one, and ratings lean on u1's own ratings.
    rows = [("u1", "space1", 5.0, 1), ("u2", "cook1", 2.0, 1), ("u2", "romance", 2.0, 2)]
    data = tiny_dataset(rows, items=SPACE_AND_COOKING)
    model = ContentKNN(encoder="minilm", cache_dir=tmp_path, neighbours=0).fit(data)
    idx = {raw: i for i, raw in enumerate(data.item_ids)}
    u1 = int(np.flatnonzero(data.user_ids == "u1")[0])
    items = np.array([idx["space2"], idx["cook2"]])
    known = model.score(Context(user=u1), items)
    assert known[0] > known[1]
    stranger = model.score(Context(user=None), items)
    assert not stranger[0] > stranger[1] + 1e-6  # without the history nothing favours space
    assert model.predict(Context(user=u1), items)[0] > model.predict(Context(user=None), items)[0]


# --- the popularity prior ------------------------------------------------------------------

def _prior_data():
    """"Space War" was watched by everyone, "Space War II" (the closest film to "Space Love")
    by one user; "Love Story" is rated by two."""
    items = pd.DataFrame({"title": ["Space War", "Space War II", "Love Story", "Space Love"],
                          "genres": [("Sci-Fi",), ("Romance", "Sci-Fi"), ("Romance",), ("Romance", "Sci-Fi")]},
                         index=["popular", "similar", "l", "s"])
    rows = [(f"u{u}", "popular", 4.0, 1) for u in range(20)] + [("u0", "similar", 4.0, 2),
                                                                 ("u1", "l", 3.0, 2), ("u2", "l", 3.0, 3)]
    data = tiny_dataset(rows, items=items)
    return data, {raw: i for i, raw in enumerate(data.item_ids)}


def test_the_popularity_prior_tempers_similarity_and_zero_weight_is_pure_similarity():
    data, idx = _prior_data()
    ctx = Context(None, history=history([idx["s"]], [5.0]))
    cand = np.array([idx["popular"], idx["similar"]])
    pure = make_model("content", popularity_weight=0.0).fit(data)
    assert pure.score(ctx, cand)[1] > pure.score(ctx, cand)[0]  # similarity alone: the obscure one
    tempered = make_model("content", popularity_weight=3.0).fit(data)
    assert tempered.score(ctx, cand)[0] > tempered.score(ctx, cand)[1]
    sims = tempered.similarity(cand, np.array([idx["s"]])).sum(1)
    assert np.allclose(tempered.score(ctx, cand) - pure.score(ctx, cand),
                       3.0 * np.log1p([20, 1]) / np.log1p(20))
    assert np.allclose(pure.score(ctx, cand), sims + pure.popularity[cand])
    assert np.array_equal(tempered.predict(ctx, cand), pure.predict(ctx, cand))  # ratings untouched


def test_the_popularity_weight_is_chosen_on_validation_for_ranking_only():
    data, _ = _prior_data()
    seen = []

    def validate(model):
        seen.append(model.popularity_weight)
        return -abs(model.popularity_weight - 1.0)

    model = make_model("content", popularity_grid=(0.0, 1.0, 5.0)).fit(data, validate=validate)
    assert seen == [0.0, 1.0, 5.0] and model.popularity_weight == 1.0
    seen.clear()
    rating = make_model("content", popularity_grid=(0.0, 1.0, 5.0))
    rating.set_task("rating")
    rating.fit(data, validate=validate)
    assert seen == [] and rating.popularity_weight == 3.0  # the prior does not touch ratings


def test_a_known_user_gets_no_popularity_prior_so_new_items_compete_on_content():
    data, idx = _prior_data()
    model = make_model("content", popularity_weight=10.0).fit(data)
    u0 = int(np.flatnonzero(data.user_ids == "u0")[0])
    cand = np.arange(data.n_items)
    own = np.array([idx["popular"], idx["similar"]])
    expected = model.similarity(cand, own).sum(1) + model.popularity[cand]
    assert np.allclose(model.score(Context(user=u0), cand), expected)


# --- items added after the fit ----------------------------------------------------------------

def _space_catalogue():
    items = pd.DataFrame({"title": ["Space War", "Space War II", "Love Story"],
                          "year": [1977.0, 1980.0, 1970.0],
                          "genres": [("Sci-Fi",), ("Sci-Fi", "War"), ("Romance",)]},
                         index=["s1", "s2", "l"])
    rows = [("u1", "s1", 5.0, 1), ("u1", "l", 1.0, 2), ("u2", "s2", 4.0, 1), ("u2", "l", 2.0, 3),
            ("u3", "l", 3.0, 1)]
    return tiny_dataset(rows, items=items)


def test_extend_items_embeds_new_items_with_the_fits_vocabulary_and_scores_them():
    from sklearn.feature_extraction.text import TfidfVectorizer

    data = _space_catalogue()
    model = make_model("content", popularity_weight=0.0).fit(data)
    new = pd.DataFrame({"title": ["Space Love", "Quiet Harbour"], "year": [1983.0, np.nan],
                        "genres": [("Romance",), ()]})
    assert list(model.extend_items(new)) == [3, 4] and model.n_items == 5
    # the fit's own vectorizer gives the new items the same vectors (unknown words dropped)
    fitted = TfidfVectorizer(token_pattern=content.TOKEN_PATTERN, sublinear_tf=True).fit(item_documents(data))
    expected = fitted.transform(item_documents(content._described(new))).toarray()
    assert np.allclose(model.vectors[3:].toarray(), expected) and model.vectors[4].nnz == 0
    support = np.array([0])  # Space War: the new Space Love shares "space" with it
    scores = model.score(Context(None, history=history(support, np.array([5.0]))), np.arange(5))
    assert scores.shape == (5,) and scores[3] > scores[2] and scores[3] == pytest.approx(
        expected[0] @ model.vectors[0].toarray().ravel() + model.popularity[3], abs=1e-12)
    # what an item without training interactions is: the global mean as its rating prior
    ctx = Context(None, history=history(np.array([0]), np.array([5.0])))
    sim = scores[3]
    assert model.predict(ctx, np.array([3, 4])) == pytest.approx(
        [(sim * 5.0 + model.global_mean) / (sim + 1.0), model.global_mean])
    # a new item described again gets its new vector; the fit's items keep theirs
    model.extend_items(pd.DataFrame({"title": ["Space War III"], "year": [1990.0], "genres": [("War",)]}), [4])
    assert model.n_items == 5 and model.similarity(np.array([4]), np.array([1]))[0, 0] > 0.3
    with pytest.raises(ThawError, match="fit's"):
        model.extend_items(new.iloc[:1], [2])
    with pytest.raises(ThawError, match="without gaps"):
        model.extend_items(new.iloc[:1], [7])


def test_a_new_item_has_the_median_items_popularity_not_none():
    """Its count is unknown (it was not there to be chosen): a new item described as the
    fitted item of median count is scored as that item, with the prior at any weight."""
    data = _space_catalogue()  # counts l 3, s1 1, s2 1 (items in id order): s1 is a median item
    model = make_model("content", popularity_weight=3.0).fit(data)
    model.extend_items(data.item_features.iloc[[1]].reset_index(drop=True))
    for ctx in (Context(None, history=history(np.array([2]), np.array([5.0]))), Context(None)):
        scores = model.score(ctx, np.arange(4))
        assert scores[3] == pytest.approx(scores[1], abs=1e-12)


def test_extend_items_after_a_save_and_for_a_model_saved_without_its_vocabulary(tmp_path):
    from thaw.persist import load, save

    data = _space_catalogue()
    model = make_model("content").fit(data)
    new = pd.DataFrame({"title": ["Space Love"], "year": [1983.0], "genres": [("Romance",)],
                        "text": ["war in space"]})
    loaded = load(save(model, tmp_path / "m"))
    loaded.extend_items(new)
    model.extend_items(new)
    assert abs(loaded.vectors - model.vectors).max() < 1e-12
    # free text counts: "war" is in the vocabulary, so the new item is nearer Space War II
    assert model.similarity(np.array([3]), np.array([1]))[0, 0] > 0.2
    fresh = make_model("content").fit(data)  # as if saved before the vocabulary was kept
    fresh.terms = fresh.idf = None
    with pytest.raises(ThawError, match="data set it was fitted on"):
        fresh.extend_items(new)
    fresh.extend_items(new, data=data)
    assert abs(fresh.vectors - model.vectors).max() < 1e-12


def test_extend_items_reaches_the_profile_fallback():
    rows = [(f"w{u}", "A", 5.0, 1) for u in range(4)] + [(f"m{u}", "B", 5.0, 1) for u in range(4)]
    users = pd.DataFrame({"gender": ["F"] * 4 + ["M"] * 4},
                         index=[f"{g}{u}" for g in "wm" for u in range(4)])
    items = pd.DataFrame({"title": ["Alpha", "Beta"], "genres": [("Drama",), ("Comedy",)]}, index=["A", "B"])
    model = make_model("content").fit(tiny_dataset(rows, users=users, items=items))
    model.extend_items(pd.DataFrame({"title": ["Alpha Two"], "genres": [("Drama",)]}))
    scores = model.score(Context(None, profile={"gender": "F"}), np.arange(3))
    assert scores.shape == (3,) and scores[0] > scores[1] and np.isfinite(scores).all()
    # the neighbours could not have chosen it: between what they chose and what they did not
    assert scores[0] > scores[2] > scores[1]
