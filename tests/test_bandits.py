"""Bandit policies, offline estimators and the regret simulator, on small worlds with known truth."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thaw.bandits import (
    UCB1,
    BanditLog,
    DecisionLog,
    EpsilonGreedy,
    ExploringRecommender,
    ItemMeanReward,
    JoinedFeatures,
    LinearTS,
    LinUCB,
    NonUniformLoggingWarning,
    Policy,
    RandomPolicy,
    TableEncoder,
    ThompsonBeta,
    ThompsonGaussian,
    VectorFeatures,
    ips,
    off_policy_estimates,
    read_log_csv,
    replay,
    snips,
)
from thaw.bandits.simulate import (
    BanditWorld,
    bernoulli_world,
    best_fixed_item_regret,
    linear_world,
    make_policy,
    mean_band,
    parse_policies,
    run_policy,
    simulate,
)
from thaw.errors import DataError, ThawError
from thaw.models.base import Context, Recommender

MEANS = [0.1, 0.3, 0.5, 0.7, 0.9]
CTX = Context(user=None)


def _regret_at(policy_factory, ts=(1_000, 10_000), seeds=(0, 1)) -> dict[int, float]:
    world = bernoulli_world(MEANS)
    curves = [run_policy(world, policy_factory(s), max(ts), s).regret for s in seeds]
    return {t: float(np.mean([c[t - 1] for c in curves])) for t in ts}


# --- regret shape on stationary bandits -----------------------------------------------------

@pytest.mark.parametrize("factory", [lambda s: UCB1(seed=s), lambda s: ThompsonBeta(seed=s, propensity_draws=0)],
                         ids=["ucb1", "thompson"])
def test_ucb1_and_thompson_regret_grows_sublinearly(factory):
    r = _regret_at(factory)
    assert r[1_000] > 0
    # Linear growth would multiply regret by 10; logarithmic growth by about ln(1e4)/ln(1e3) = 1.33
    # once past the first rounds. "Far less than 10x": at most 4x.
    assert r[10_000] < 4.0 * r[1_000], r


def test_fixed_epsilon_greedy_regret_grows_linearly():
    world = bernoulli_world(MEANS)
    curves = np.stack([run_policy(world, EpsilonGreedy(epsilon=0.1, seed=s), 10_000, s).regret for s in (0, 1)])
    r1k, r5k, r10k = curves[:, 999].mean(), curves[:, 4_999].mean(), curves[:, 9_999].mean()
    assert r10k > 7.0 * r1k
    # Forced exploration costs epsilon * (mean gap to the best arm) per round, forever.
    floor = 0.1 * np.mean(np.max(MEANS) - np.asarray(MEANS))
    assert (r10k - r5k) / 5_000 > 0.8 * floor
    # ... and the late slope is as steep as the early one (no flattening).
    assert (r10k - r5k) / 5_000 > 0.8 * (r5k - r1k) / 4_000


def test_decaying_epsilon_explores_less_than_fixed():
    decay = _regret_at(lambda s: EpsilonGreedy(epsilon=1.0, decay=1.0, seed=s), seeds=(0,))
    fixed = _regret_at(lambda s: EpsilonGreedy(epsilon=0.1, seed=s), seeds=(0,))
    assert decay[10_000] < 0.6 * fixed[10_000]
    assert decay[10_000] < 5.0 * decay[1_000]


# --- linear bandits ---------------------------------------------------------------------------

def _linear_problem(seed: int = 0, arms: int = 3, d: int = 4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(arms, d)), rng.normal(size=(50, d))


@pytest.mark.parametrize("cls", [LinUCB, LinearTS])
def test_linear_bandit_recovers_true_parameter(cls):
    thetas, X = _linear_problem()
    world = linear_world(thetas, X, noise_sd=0.1)
    policy = cls(world.user_features, seed=0)
    result = run_policy(world, policy, 2_000, seed=0)
    for arm in range(len(thetas)):
        assert np.linalg.norm(policy.theta_of(arm) - thetas[arm]) < 0.05
    # Sublinear in practice: the second half costs far less than the first.
    assert result.regret[-1] - result.regret[999] < 0.5 * result.regret[999]


def test_shared_linucb_recovers_bilinear_parameter():
    rng = np.random.default_rng(3)
    d_user, d_item, n_items = 3, 4, 12
    W = rng.normal(size=(d_user, d_item))
    items = rng.normal(size=(n_items, d_item))
    users = rng.normal(size=(40, d_user))
    features = JoinedFeatures(VectorFeatures(d_user), items, how="outer")
    policy = LinUCB(features, shared=True, alpha=0.5, seed=0)
    env = np.random.default_rng(4)
    for _ in range(1_500):
        x = users[env.integers(len(users))]
        ctx = Context(user=None, profile={"x": x})
        item = int(policy.select(ctx, np.arange(n_items), 1)[0])
        policy.update(ctx, item, float(x @ W @ items[item]) + 0.1 * env.standard_normal())
    # Only directions the policy's picks explore are identified; check the predictions instead.
    test_users = rng.normal(size=(20, d_user))
    pred = np.stack([features(Context(None, profile={"x": u}), np.arange(n_items)) @ policy.theta_of()
                     for u in test_users])
    truth = test_users @ W @ items.T
    assert np.corrcoef(pred.ravel(), truth.ravel())[0, 1] > 0.95


@pytest.mark.parametrize("cls", [LinUCB, LinearTS])
@pytest.mark.parametrize("shared", [False, True])
def test_linear_policies_well_defined_with_few_observations(cls, shared):
    features = VectorFeatures(3)
    if shared:
        features = JoinedFeatures(features, np.eye(4), how="outer")
    policy = cls(features, shared=shared, seed=0)
    ctx = Context(user=None, profile={"x": np.array([1.0, 0.0, 2.0])})
    mean, var = policy.mean_and_var(ctx, np.arange(4))
    assert np.all(mean == 0) and np.all(np.isfinite(var)) and np.all(var > 0)
    assert len(policy.select(ctx, np.arange(4), 2)) == 2
    for _ in range(200):  # the same context again and again: A stays positive definite
        policy.update(ctx, 1, 1.0)
    policy.update(Context(None, profile={"x": np.array([1e6, -1e6, 1e-9])}), 2, 0.0)
    mean, var = policy.mean_and_var(ctx, np.arange(4))
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(var)) and np.all(var >= 0)
    probs = policy.action_probabilities(ctx, np.arange(4))
    assert np.isclose(probs.sum(), 1.0)
    with pytest.raises(ThawError):
        policy.update(Context(None, profile={"x": np.array([np.nan, 0.0, 0.0])}), 1, 1.0)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.lists(st.floats(-50, 50), min_size=3, max_size=3), st.integers(0, 4),
                          st.floats(-5, 5)), min_size=0, max_size=30))
def test_linucb_inverse_stays_consistent(events):
    policy = LinUCB(VectorFeatures(3), lam=0.5, refresh_every=7)
    for x, item, r in events:
        policy.update(Context(None, profile={"x": np.asarray(x)}), item, r)
    for slot in range(policy.n_slots):
        A, A_inv = policy.A[slot], policy.A_inv[slot]
        assert np.allclose(A @ A_inv, np.eye(3), atol=1e-6 * max(1.0, np.abs(A).max()))
        assert np.all(np.linalg.eigvalsh(A_inv) > 0)
    scores = policy.scores(Context(None, profile={"x": np.ones(3)}), np.arange(5))
    assert np.all(np.isfinite(scores))


# --- slates and propensities ------------------------------------------------------------------

def _trained(policy: Policy, means=MEANS, rounds=300, seed=9) -> Policy:
    env = np.random.default_rng(seed)
    for _ in range(rounds):
        item = int(env.integers(len(means)))
        policy.update(CTX, item, float(env.random() < means[item]))
    return policy


@pytest.mark.parametrize("make", [lambda: RandomPolicy(seed=1), lambda: EpsilonGreedy(0.3, seed=1),
                                  lambda: UCB1(seed=1), lambda: ThompsonBeta(seed=1, propensity_draws=100)],
                         ids=["random", "egreedy", "ucb1", "thompson"])
def test_first_slot_propensity_matches_choice_frequency(make):
    policy = _trained(make())
    cands = np.arange(len(MEANS))
    n = 2_000
    firsts, props = np.empty(n, dtype=int), np.empty(n)
    for i in range(n):
        d = policy.decide(CTX, cands, 3)
        assert len(set(d.items.tolist())) == 3 and set(d.items.tolist()) <= set(cands.tolist())
        assert np.all((d.propensities > 0) & (d.propensities <= 1))
        firsts[i], props[i] = d.items[0], d.propensities[0]
    freq = np.bincount(firsts, minlength=len(cands)) / n
    for item in np.unique(firsts):
        logged = props[firsts == item].mean()
        assert abs(logged - freq[item]) < 0.05, (item, logged, freq[item])
    assert np.allclose(policy.action_probabilities(CTX, cands), freq, atol=0.05)


def test_epsilon_greedy_explores_per_slot_not_per_slate():
    policy = _trained(EpsilonGreedy(0.3, seed=2), rounds=2_000)
    cands = np.arange(len(MEANS))
    best_two = list(np.argsort(-policy.means(cands))[:2])
    patterns = set()
    for _ in range(2_000):
        items = policy.select(CTX, cands, 2).tolist()
        patterns.add((items[0] == best_two[0], items[1] in best_two))
    # Some slates keep the greedy first slot and explore the second, and vice versa.
    assert (True, False) in patterns and (False, True) in patterns


def test_every_decision_logs_propensity_and_reward():
    policy = ThompsonBeta(seed=0)
    policy.log = DecisionLog()
    ctx = Context(user=7)
    for _ in range(20):
        items = policy.select(ctx, np.arange(10), 2)
        policy.update(ctx, int(items[0]), 1.0)
    frame = policy.log.to_frame()
    assert len(frame) == 40
    assert frame["propensity"].between(0, 1, inclusive="right").all()
    assert frame.loc[frame["slot"] == 0, "reward"].notna().all()
    assert (frame["user"] == 7).all()


# --- save / load ------------------------------------------------------------------------------

def _policies_for_state():
    thetas, X = _linear_problem(1)
    vf = VectorFeatures(X.shape[1])
    joined = JoinedFeatures(vf, np.random.default_rng(0).normal(size=(3, 2)), how="outer")
    return {
        "random": lambda: RandomPolicy(seed=3),
        "egreedy": lambda: EpsilonGreedy(0.2, seed=3),
        "egreedy-decay": lambda: EpsilonGreedy(1.0, decay=0.5, seed=3),
        "ucb1": lambda: UCB1(seed=3),
        "thompson": lambda: ThompsonBeta(seed=3),
        "thompson-gaussian": lambda: ThompsonGaussian(prior_mean=0.0, seed=3),
        "linucb": lambda: LinUCB(vf, seed=3),
        "lints": lambda: LinearTS(vf, seed=3),
        "linucb-shared": lambda: LinUCB(joined, shared=True, seed=3),
        "lints-shared": lambda: LinearTS(joined, shared=True, seed=3),
    }, thetas, X


def _play(policy: Policy, env: np.random.Generator, thetas, X, rounds: int) -> list:
    trace = []
    for _ in range(rounds):
        ctx = Context(user=None, profile={"x": X[env.integers(len(X))]})
        d = policy.decide(ctx, np.arange(len(thetas)), 2)
        r = float(ctx.profile["x"] @ thetas[d.items[0]] + 0.1 * env.standard_normal())
        policy.update(ctx, int(d.items[0]), r)
        trace.append((d.items.tolist(), d.propensities.tolist()))
    return trace


@pytest.mark.parametrize("name", list(_policies_for_state()[0]))
def test_save_and_load_mid_run_changes_nothing(name, tmp_path):
    factories, thetas, X = _policies_for_state()
    policy = factories[name]()
    env = np.random.default_rng(11)
    _play(policy, env, thetas, X, 150)
    policy.save(tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["state.json", "state.safetensors"]
    json.loads((tmp_path / "p" / "state.json").read_text())
    loaded = Policy.load(tmp_path / "p")
    assert type(loaded) is type(policy)
    env_state = env.bit_generator.state
    original = _play(policy, env, thetas, X, 150)
    env.bit_generator.state = env_state
    resumed = _play(loaded, env, thetas, X, 150)
    assert original == resumed
    for key, value in policy.arrays().items():
        np.testing.assert_array_equal(value, loaded.arrays()[key])


def test_load_rejects_a_folder_that_is_not_a_state(tmp_path):
    with pytest.raises(ThawError):
        Policy.load(tmp_path)


# --- cold arms ----------------------------------------------------------------------------------

def test_new_arm_warm_starts_from_content_neighbours():
    content = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0]])
    policy = EpsilonGreedy(0.1, seed=0)
    for _ in range(100):
        policy.update(CTX, 0, 1.0)
        policy.update(CTX, 1, 0.0)
    nbrs, weights = policy.warm_start(2, content, k=2)
    assert nbrs[0] == 0 and np.isclose(weights.sum(), 1.0)
    assert policy.means(np.array([2]))[0] > 0.85
    assert 0 < policy.counts[2] <= policy.warm_max
    assert len(policy.warm_start(3, content)[0]) == 0  # nothing similar: stays cold
    assert policy.counts[3] == 0
    assert len(policy.warm_start(0, content)[0]) == 0  # an arm with its own data is left alone


def test_linucb_new_arm_starts_at_similar_arm_parameter():
    thetas, X = _linear_problem(2, arms=2)
    world = linear_world(thetas, X)
    policy = LinUCB(world.user_features, seed=0)
    run_policy(world, policy, 1_000, seed=0)
    content = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.05]])
    policy.warm_start(2, content, k=1)
    assert np.allclose(policy.theta_of(2), policy.theta_of(0), atol=0.1)
    slot = policy.slot_of[2]
    assert policy.counts[slot] <= policy.warm_max
    x = X[0]
    _, var = policy.mean_and_var(Context(None, profile={"x": x}), np.array([0, 2]))
    assert var[1] > var[0]  # the borrowed arm is less certain than its source


# --- the exploring wrapper -----------------------------------------------------------------------

class _ByIdModel(Recommender):
    name = "by-id"

    def score(self, ctx, items):
        return -np.asarray(items, dtype=float)


def test_exploring_recommender_explores_first_slots_only():
    wrapper = ExploringRecommender(_ByIdModel(), RandomPolicy(seed=0), n_explore=2, pool=5)
    cands = np.arange(20)[::-1]
    for _ in range(50):
        slate = wrapper.recommend(CTX, cands, 8)
        assert set(slate.items[:2]) <= set(range(5))
        rest = [i for i in range(20) if i not in slate.items[:2]][:6]
        assert slate.items[2:].tolist() == rest
        assert np.allclose(slate.propensities[:2], [1 / 5, 1 / 4]) and np.all(slate.propensities[2:] == 1)
        assert slate.explored.tolist() == [True, True] + [False] * 6
    scores = wrapper.score(CTX, np.arange(6))
    assert len(set(scores)) == 6
    wrapper.update(CTX, 3, 1.0)


def test_exploring_recommender_learns_what_the_model_misses():
    # The model ranks by id; the item users like is 4th. Thompson in the first slot finds it.
    wrapper = ExploringRecommender(_ByIdModel(), ThompsonBeta(seed=0), n_explore=1, pool=6)
    env = np.random.default_rng(0)
    shown_first = []
    for _ in range(400):
        slate = wrapper.recommend(CTX, np.arange(30), 5)
        first = int(slate.items[0])
        wrapper.update(CTX, first, float(env.random() < (0.8 if first == 3 else 0.1)))
        shown_first.append(first)
    assert np.mean(np.asarray(shown_first[-100:]) == 3) > 0.7


# --- offline evaluation --------------------------------------------------------------------------

class _Always(Policy):
    """A fixed known policy: always the same arm."""

    def __init__(self, arm: int) -> None:
        super().__init__(0)
        self.arm = arm

    def _decide(self, ctx, cands, n):
        first = int(np.flatnonzero(cands == self.arm)[0])
        rest = [i for i in range(len(cands)) if i != first][: n - 1]
        return [first, *rest], [1.0] * n

    def _update(self, ctx, item, reward):
        pass

    def action_probabilities(self, ctx, candidates):
        return (np.asarray(candidates) == self.arm).astype(float)


def _log(n: int, probs: np.ndarray, seed: int = 0) -> BanditLog:
    env = np.random.default_rng(seed)
    items = env.choice(len(probs), size=n, p=probs)
    rewards = (env.random(n) < np.asarray(MEANS)[items]).astype(float)
    return BanditLog(items, rewards, propensities=probs[items], candidates=np.arange(len(probs)))


@pytest.mark.parametrize("arm", [1, 3])
def test_replay_on_uniform_log_is_unbiased_for_a_known_policy(arm):
    log = _log(12_000, np.full(5, 0.2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonUniformLoggingWarning)
        result = replay(_Always(arm), log)
    assert result.uniform
    assert 2_100 < result.matched < 2_700
    assert abs(result.value - MEANS[arm]) < 3 * result.estimate.se
    assert result.estimate.low < MEANS[arm] < result.estimate.high


def test_replay_of_a_learning_policy_matches_its_online_reward():
    log = _log(10_000, np.full(5, 0.2), seed=1)
    result = replay(UCB1(seed=0), log)
    m = result.matched
    online = [run_policy(bernoulli_world(MEANS), UCB1(seed=s), m, seed=s) for s in range(3)]
    online_mean = np.mean([r.reward / m for r in online])
    assert abs(result.value - online_mean) < 3 * result.estimate.se + 0.01


def test_replay_warns_when_logging_is_not_uniform():
    skewed = _log(5_000, np.array([0.6, 0.1, 0.1, 0.1, 0.1]))
    with pytest.warns(NonUniformLoggingWarning, match="not"):
        result = replay(_Always(0), skewed)
    assert not result.uniform
    no_props = BanditLog(skewed.items, skewed.rewards)  # no propensities: chi-square on counts
    with pytest.warns(NonUniformLoggingWarning):
        replay(_Always(0), no_props)


@pytest.mark.parametrize("target_arm", [0, 4])
def test_ips_snips_dr_unbiased_on_non_uniform_logs(target_arm):
    probs = np.array([0.5, 0.2, 0.1, 0.1, 0.1])
    log = _log(12_000, probs, seed=2)
    est = off_policy_estimates(_Always(target_arm), log, reward_model=ItemMeanReward().fit(log))
    truth = MEANS[target_arm]
    for name in ("ips", "snips", "dr"):
        e = est[name]
        assert abs(e.value - truth) < 3.5 * e.se + 1e-9, (name, e)
    # The naive mean of the log is biased towards the logger's favourite arm.
    assert abs(log.rewards.mean() - truth) > 0.1


def test_estimators_with_a_stochastic_target():
    probs = np.array([0.4, 0.3, 0.1, 0.1, 0.1])
    log = _log(20_000, probs, seed=5)
    target = np.array([0.0, 0.0, 0.2, 0.3, 0.5])
    truth = float(target @ MEANS)
    e_ips = ips(log.rewards, log.propensities, target[log.items])
    e_sn = snips(log.rewards, log.propensities, target[log.items])
    assert abs(e_ips.value - truth) < 3.5 * e_ips.se
    assert abs(e_sn.value - truth) < 3.5 * e_sn.se
    clipped = ips(log.rewards, log.propensities, target[log.items], clip=2.0)
    assert clipped.value < e_ips.value  # clipping trades bias for variance


def test_read_log_csv_and_errors(tmp_path):
    good = tmp_path / "log.csv"
    good.write_text("user,item,reward,propensity,candidates,x_a\n"
                    "u1,m10,1,0.5,m10 m20,0.1\n"
                    "u2,m20,0,0.5,m10|m20,0.2\n")
    log, raw = read_log_csv(good)
    assert len(log) == 2 and list(raw) == ["m10", "m20"]
    assert log.items.tolist() == [0, 1] and log.context(1).profile["x"].tolist() == [0.2]
    missing = tmp_path / "missing.csv"
    missing.write_text("user,item\nu1,m1\n")
    with pytest.raises(DataError, match=r"missing\.csv.*column 'reward'"):
        read_log_csv(missing)
    bad = tmp_path / "bad.csv"
    bad.write_text("item,reward\nm1,1\nm2,oops\n")
    with pytest.raises(DataError, match=r"bad\.csv, line 3, column 'reward'"):
        read_log_csv(bad)
    badp = tmp_path / "badp.csv"
    badp.write_text("item,reward,propensity\nm1,1,1.5\n")
    with pytest.raises(DataError, match="line 2, column 'propensity'"):
        read_log_csv(badp)
    badc = tmp_path / "badc.csv"
    badc.write_text("item,reward,candidates\nm1,1,m2 m3\n")
    with pytest.raises(DataError, match="column 'candidates'"):
        read_log_csv(badc)


# --- simulator and CLI ---------------------------------------------------------------------------

def test_simulate_table_and_bands():
    world = bernoulli_world(MEANS)
    result = simulate(world, {"ucb1": lambda s: UCB1(seed=s), "random": lambda s: RandomPolicy(seed=s)},
                      horizon=500, seeds=[0, 1, 2], progress=False)
    table = result.table()
    assert list(table.columns) == ["policy", "t", "regret_mean", "regret_low", "regret_high"]
    end = table[table.t == 500].set_index("policy")
    assert (end.regret_low <= end.regret_mean).all() and (end.regret_mean <= end.regret_high).all()
    assert end.loc["ucb1", "regret_mean"] < end.loc["random", "regret_mean"]
    assert mean_band(np.array([2.0])) == (2.0, 2.0, 2.0)


def test_parse_policies_rejects_unknown_names():
    assert parse_policies("random, ucb1") == ["random", "ucb1"]
    with pytest.raises(ThawError, match="unknown policy 'bogus'"):
        parse_policies("random,bogus")
    with pytest.raises(ThawError):
        make_policy("linucb", bernoulli_world(MEANS), 0)  # no context features in this world


def test_cli_bandit_sim_writes_csv_and_png(tmp_path):
    from thaw.bandits.cli import bandit_sim
    bandit_sim(dataset="synthetic", policies="random,egreedy,thompson,linucb,lints", horizon=400, seeds=2,
               out=tmp_path, progress=False)
    frame = pd.read_csv(tmp_path / "regret.csv")
    assert list(frame.columns) == ["policy", "t", "regret_mean", "regret_low", "regret_high"]
    assert set(frame.policy) == {"random", "egreedy", "thompson", "linucb", "lints"}
    assert (tmp_path / "regret.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    with pytest.raises(ThawError):
        bandit_sim(dataset="synthetic", policies="random,nope", horizon=10, seeds=1, out=tmp_path, progress=False)


def test_cli_bandit_replay(tmp_path, capsys):
    from thaw.bandits.cli import bandit_replay
    env = np.random.default_rng(0)
    n = 2_000
    items = env.integers(0, 5, size=n)
    rewards = (env.random(n) < np.asarray(MEANS)[items]).astype(int)
    pd.DataFrame({"user": env.integers(0, 10, size=n), "item": items, "reward": rewards,
                  "propensity": 0.2}).to_csv(tmp_path / "log.csv", index=False)
    bandit_replay(log=tmp_path / "log.csv", policies="random,ucb1,linucb", out=tmp_path / "out")
    frame = pd.read_csv(tmp_path / "out" / "replay.csv")
    assert set(frame.policy) == {"random", "ucb1", "linucb"}
    assert {"replay", "ips", "snips", "dr"} <= set(frame.columns)
    assert frame.set_index("policy").loc["ucb1", "replay"] > frame.set_index("policy").loc["random", "replay"]
    with pytest.raises(DataError):
        bandit_replay(log=tmp_path / "nope.csv", policies="random")


def test_table_encoder_one_hot_bands_multi_hot_scaled():
    frame = pd.DataFrame({"gender": ["M", "F", "M"], "age": [17, 30, 60], "occupation": ["a", "b", "a"],
                          "genres": [("Drama",), ("Comedy", "Drama"), ()], "year": [1990, 2000, np.nan],
                          "title": ["x", "y", "z"]})
    enc = TableEncoder.fit(frame, max_categories=2)
    names = enc.names
    assert "title=x" not in names  # too many distinct values: left out
    X = enc.encode_frame(frame)
    assert X.shape == (3, enc.dim) and np.all(np.isfinite(X))
    row = dict(zip(names, X[1], strict=False))
    assert row["bias"] == 1 and row["gender=F"] == 1 and row["age:25-35"] == 1
    assert row["genres=Comedy"] == 1 and row["genres=Drama"] == 1 and row["year"] == 1.0
    assert TableEncoder.from_json(json.loads(json.dumps(enc.to_json()))).encode(frame.iloc[0]).tolist() == X[0].tolist()


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    from thaw.compute import one_thread
    with one_thread():
        yield


def _tiny_movielens(seed: int = 0):
    from thaw.data.schema import Dataset
    rng = np.random.default_rng(seed)
    n_users, n_items = 40, 30
    taste = rng.normal(size=(n_users, 2)) @ rng.normal(size=(2, n_items))
    rows = [(f"u{u}", f"i{i}", float(np.clip(np.round(3 + taste[u, i]), 1, 5)), u * 100 + i)
            for u in range(n_users) for i in range(n_items) if rng.random() < 0.4]
    ratings = pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])
    users = pd.DataFrame({"age": rng.integers(15, 70, n_users), "gender": rng.choice(["M", "F"], n_users),
                          "occupation": rng.choice(["a", "b", "c"], n_users)},
                         index=[f"u{u}" for u in range(n_users)])
    genres = ["Drama", "Comedy", "Action"]
    items = pd.DataFrame({"title": [f"t{i}" for i in range(n_items)], "year": rng.integers(1950, 2000, n_items),
                          "genres": [tuple(rng.choice(genres, 2, replace=False)) for _ in range(n_items)]},
                         index=[f"i{i}" for i in range(n_items)])
    return Dataset.from_frames("tiny", ratings, users, items)


def test_movielens_style_world_uses_real_ratings_where_they_exist():
    from thaw.bandits.simulate import ml100k_world
    data = _tiny_movielens()
    world = ml100k_world(data, n_items=20, holdout_frac=0.25, seed=0, embedding_dim=3)
    assert world.expected.shape == (10, 20) and world.info["held_out_users"] == 10
    for ctx in world.contexts:
        assert ctx.user is None and "gender" in ctx.profile  # cold users: the profile only
    # The held-out users are the seeded permutation's first 10; their ratings decide their rewards.
    inter = data.interactions
    held = np.sort(np.random.default_rng(0).permutation(np.unique(inter.user))[:10])
    col = {int(it): j for j, it in enumerate(world.items)}
    checked = 0
    for k, u in enumerate(held):
        for it, r in zip(inter.item[inter.user == u], inter.rating[inter.user == u], strict=False):
            if int(it) in col:
                assert world.expected[k, col[int(it)]] == float(r >= 4)
                checked += 1
    assert checked == world.info["observed_pairs"] > 0
    # Never-rated pairs get a model-based probability strictly between 0 and 1.
    assert world.info["simulated_pairs"] > 0
    simulated = world.expected[~np.isin(world.expected, [0.0, 1.0])]
    assert len(simulated) > 0 and np.all((simulated > 0) & (simulated < 1))
    for name in ("thompson", "linucb", "lints-joined"):
        result = run_policy(world, make_policy(name, world, 0), 200, seed=0)
        assert np.all(np.diff(result.regret) >= 0)  # 0/1 rewards and an oracle that sees them


def test_cli_functions_register_on_a_typer_app(tmp_path):
    import typer
    from typer.testing import CliRunner

    from thaw.bandits.cli import bandit_replay, bandit_sim
    app = typer.Typer()
    app.command("bandit-sim")(bandit_sim)
    app.command("bandit-replay")(bandit_replay)
    runner = CliRunner()
    out = tmp_path / "sim"
    res = runner.invoke(app, ["bandit-sim", "--dataset", "synthetic", "--policies", "random,ucb1", "--horizon", "300",
                              "--seeds", "2", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (out / "regret.csv").exists() and (out / "regret.png").exists()
    res = runner.invoke(app, ["bandit-sim", "--dataset", "synthetic", "--policies", "nope", "--out", str(out)])
    assert isinstance(res.exception, ThawError)
    log = tmp_path / "log.csv"
    log.write_text("item,reward\n1,1\n2,0\n1,0\n2,1\n")
    res = runner.invoke(app, ["bandit-replay", "--log", str(log), "--policies", "random,thompson"])
    assert res.exit_code == 0, res.output
    assert "replay" in res.output


@settings(max_examples=30, deadline=None)
@given(name=st.sampled_from(["random", "egreedy", "egreedy-decay", "ucb1", "thompson", "linucb", "lints"]),
       cands=st.lists(st.integers(0, 60), min_size=1, max_size=12), n=st.integers(1, 5),
       rewards=st.lists(st.tuples(st.integers(0, 60), st.floats(0, 1)), max_size=20), seed=st.integers(0, 3))
def test_slates_are_distinct_candidates_with_valid_propensities(name, cands, n, rewards, seed):
    world = linear_world(np.ones((1, 2)), np.ones((1, 2)))
    policy = make_policy(name, world, seed)
    ctx = world.contexts[0]
    for item, r in rewards:
        policy.update(ctx, item, r)
    d = policy.decide(ctx, cands, n)
    assert len(d.items) == min(n, len(set(cands)))
    assert len(set(d.items.tolist())) == len(d.items) and set(d.items.tolist()) <= set(cands)
    assert np.all((d.propensities > 0) & (d.propensities <= 1))
    probs = policy.action_probabilities(ctx, cands)
    assert np.isclose(probs.sum(), 1.0) and np.all(probs >= 0)


def test_gaussian_thompson_finds_the_best_rated_item():
    policy = ThompsonGaussian(prior_mean=3.0, prior_sd=1.0, noise_sd=1.0, seed=0)
    true = np.array([3.0, 3.5, 4.2, 2.5])
    env = np.random.default_rng(0)
    picks = []
    for _ in range(600):
        item = int(policy.select(CTX, np.arange(4), 1)[0])
        policy.update(CTX, item, float(np.clip(np.round(true[item] + env.normal()), 1, 5)))
        picks.append(item)
    assert np.mean(np.asarray(picks[-200:]) == 2) > 0.8


def test_wrapper_logs_propensities_of_explored_slots():
    log = DecisionLog()
    wrapper = ExploringRecommender(_ByIdModel(), EpsilonGreedy(0.5, seed=0), n_explore=2, pool=4, log=log)
    ctx = Context(user=3)
    slate = wrapper.recommend(ctx, np.arange(10), 5)
    wrapper.update(ctx, int(slate.items[0]), 1.0)
    frame = log.to_frame()
    assert frame["item"].tolist() == slate.items[:2].tolist()
    assert np.allclose(frame["propensity"], slate.propensities[:2])
    assert frame.loc[0, "reward"] == 1.0 and np.isnan(frame.loc[1, "reward"])


def test_replay_with_per_event_candidate_sets():
    env = np.random.default_rng(4)
    n = 6_000
    cands = [np.sort(env.choice(5, size=3, replace=False)) for _ in range(n)]
    items = np.asarray([c[env.integers(3)] for c in cands])
    rewards = (env.random(n) < np.asarray(MEANS)[items]).astype(float)
    log = BanditLog(items, rewards, propensities=np.full(n, 1 / 3), candidates=cands)
    result = replay(RandomPolicy(seed=0), log)
    assert result.uniform and 1_700 < result.matched < 2_300
    assert abs(result.value - np.mean(MEANS)) < 3 * result.estimate.se
    skewed = BanditLog(items, rewards, propensities=np.full(n, 0.5), candidates=cands)
    with pytest.warns(NonUniformLoggingWarning, match=r"differ from 1/\|candidates\|"):
        replay(RandomPolicy(seed=0), skewed)


class _TiedModel(Recommender):
    """Scores items 10..19 alike above every other item, which it also scores alike."""

    name = "tied"

    def score(self, ctx, items):
        return np.where((items >= 10) & (items < 20), 1.0, 0.0)


def test_exploring_recommender_breaks_ties_by_a_seeded_shuffle_not_item_id():
    def slates(seed, n=5):
        wrapper = ExploringRecommender(_TiedModel(), RandomPolicy(seed=0), n_explore=0, seed=seed)
        return [wrapper.recommend(CTX, np.arange(30), 12).items.tolist() for _ in range(n)]

    first = slates(0)
    for items in first:
        assert set(items[:10]) == set(range(10, 20))  # the model's order between score levels holds
        assert set(items[10:]) <= set(range(30)) - set(range(10, 20))
    assert any(items[:10] != sorted(items[:10]) for items in first)  # not by id
    assert len({tuple(items) for items in first}) > 1                # a fresh shuffle per request
    assert slates(0) == first                                        # and seeded
    assert slates(1) != first
    # With no ties, the model's own order decides, whatever the seed.
    by_id = ExploringRecommender(_ByIdModel(), RandomPolicy(seed=0), n_explore=0, seed=3)
    assert by_id.recommend(CTX, np.arange(8), 8).items.tolist() == list(range(8))


def test_best_fixed_item_regret_is_the_best_always_the_same_item_policy():
    """The floor printed by benchmarks/bandits.py: on the same arrivals and per-pair reward
    draws as run_policy, the best of the policies that always show one item."""

    class Always:
        def __init__(self, item):
            self.item = item

        def select(self, ctx, candidates, n=1):
            return np.array([self.item])

        def update(self, ctx, item, reward):
            pass

    expected = np.random.default_rng(3).random((5, 4))
    world = BanditWorld(expected, np.arange(4), [Context(user=None) for _ in range(5)],
                        noise="bernoulli-pair")
    horizon = 500
    per_item = [run_policy(world, Always(j), horizon, seed=2).regret[-1] / horizon for j in range(4)]
    assert best_fixed_item_regret(world, horizon, seed=2) == pytest.approx(min(per_item))
    assert best_fixed_item_regret(world, horizon, seed=3) != pytest.approx(min(per_item))
