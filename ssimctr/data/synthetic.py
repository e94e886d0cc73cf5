"""The built-in synthetic dataset: multi-scenario CTR logs with a known hidden click model.

`generate` draws everything from ``np.random.default_rng(generator_seed)`` in a fixed order (the
newcomers' own streams aside, see below), so the same parameters always give the same frame (byte
for byte). The parameters and their defaults are those of ``SyntheticConfig``
(ssimctr.config.datasets). Each row carries the true
probability its label was drawn from (``click_prob``), so any model's AUC can be compared
with the best achievable ("oracle") AUC per scenario. All draws are vectorized numpy.

The generative model (the "known answer"), with d = ``latent_dim``:

Scenarios
    Row i belongs to scenario s with probability w_s / sum(w) where w = ``scenario_weights``;
    by default w_k = 0.5**k, so s0 is the largest and the last scenario the smallest
    (K=3: 4/7, 2/7, 1/7). Scenarios are named "s0" .. "s{K-1}".

Users and items
    Each row draws a popularity rank r with P(r) proportional to 1 / (r + 1)**zipf_exponent
    (r = 0 is the most popular). With probability 0.7 (GLOBAL_POPULARITY_SHARE) the rank is
    looked up in a global seeded permutation of the ids, otherwise in the row's scenario's
    own permutation: scenarios share their heavy hitters but each has some of its own.
    Users and items are drawn independently this way.

Users (attributes first, latent factors built from them)
    user_age     one of 5 buckets ("18-24" .. "55+"), drawn with AGE_SHARES.
    user_gender  "F" or "M", equally likely.
    user_city    city level 1..4, drawn with CITY_SHARES.
    u            = ATTRIBUTE_SHARE * (a_age + a_gender + a_city) / sqrt(3)
                   + sqrt(1 - ATTRIBUTE_SHARE^2) * e_user, every vector ~ N(0, I/d):
                   the attributes explain ATTRIBUTE_SHARE^2 = 64% of a user's taste, the user id
                   the rest, so a model learns from attributes what rare ids cannot teach it.
    user_activity  log1p(number of rows of that user in the generated frame): a profile-style
                   statistic over the whole log (val and test rows included), like an activity
                   level taken from a user table.

Items
    item_category  uniform over 20 categories; item_brand: 10 brands per category (200 in all),
                   nested: brand = 10 * category + k, k uniform.
    v              = 0.75 c_category + 0.5 b_brand + 0.43 e_item (each ~ N(0, I/d), so v ~ N(0, ~I/d)).
    item_price     exp(m_category + N(0, 0.4^2)), rounded to cents, with the category's
                   log-mean m ~ U(log 5, log 300).
    title          4..8 distinct words (length uniform) from a vocabulary of 300 made-up
                   two-syllable words ("bako", "zeti", ...). Word vectors ω ~ N(0, I/d);
                   an item's words are drawn without replacement with probability
                   softmax(4 * sqrt(d) * <v, ω>) (Gumbel top-k), most likely first, so titles
                   carry the item's latent factors and items of one category share words.
                   One title per item, repeated on each of its rows.

Time
    timestamp = 2024-01-01 00:00 UTC + a uniform day in [0, days) + an hour drawn from a
    diurnal traffic profile proportional to 1 + 0.8 cos(2π (h - 19) / 24) + a uniform
    second within the hour (newcomers' rows: another day, below). Rows are not sorted by time.
    hour = the timestamp's UTC hour.

Newcomers (``newcomers`` = f; default 0: none, and none of this is drawn)
    Each user and each item is a newcomer with probability f, except the heavy ids: an id with
    more than NEWCOMER_MAX_ROWS = 10 times the mean number of rows per id never is (by default
    about 1% of the ids, holding over half of the rows; one heavy newcomer would crowd a large
    share of the log into the last days). A row whose user OR item is a newcomer keeps
    everything (ids, attributes, hour, click_prob, click) but its day, redrawn uniformly among
    the last max(1, round(NEWCOMER_WINDOW * days)) days (NEWCOMER_WINDOW = 0.1: 3 of 30 days):
    newcomers arrive late, so under a time split their rows fall in val or test and they are
    cold (no train row), several rows each unless rare. Their taste comes mostly from their
    attributes, as for every id. These draws use their own streams, default_rng((generator_seed,
    1)) for the flags (users, then items) and default_rng((generator_seed, 2)) for the days, so
    every column but ``timestamp`` is that of f = 0; ``newcomer_flags`` gives the flags.
    f = 0.1 moves about 8.5% of the rows, so the window then holds ~18% of all rows: under the
    20% of val + test in an 80/10/10 time split, and no newcomer row is in train. From about
    f = 0.13 (or a window over 3 of 30 days) the window holds more than 20% and the train cutoff
    falls inside it, so some newcomer rows land in train.

Click model, for a row of scenario s
    logit = b_s + 1.7 * sqrt(d) * (shared_weight * <u, v> + (1 - shared_weight) * <u, R_s v>)
            + e_age + e_gender + e_city + e_category     (each effect ~ N(0, 0.15^2))
            - 0.15 * std(log price) + 0.1 * std(user_activity)
            + 0.2 cos(2π (hour - 21) / 24)
    where std(x) standardizes x over the generated rows, R_s is a random orthogonal d x d
    matrix per scenario and sqrt(d) * <u, v> has unit variance. ``click_prob`` = sigmoid(logit) and
    ``click`` ~ Bernoulli(click_prob). The bias b_s is solved (Newton steps) so that the mean
    click_prob of scenario s equals its target CTR; the targets are spread geometrically over
    3%..15% (scenario k gets 0.03 * 5**((k + 0.5) / K) after a seeded shuffle). With
    shared_weight = 0.8 the shared part dominates, so data from the big scenarios
    helps the small ones; the oracle AUC of click_prob is about 0.8 in each scenario.

Planted shareability (``shareable`` = q; default None: off, nothing of this is drawn)
    A known answer for SSIM's selection (docs/results/ssim-planted.md). Each row carries a hidden
    flag, the column ``shareable`` after ``click_prob`` (never a feature), drawn with
    P(flag) = sigmoid(c + a_category + a_age): a_category ~ N(0, SHAREABLE_CATEGORY_STD^2) per item
    category, a_age ~ N(0, SHAREABLE_AGE_STD^2) per user age bucket, c solved (bisection) so that the
    mean probability over the rows is q. The flag depends on two observed features only (the flag
    rate of a row's category and age bucket ranks the flags with AUC about 0.94 at q = 0.5), so a
    selector reading a row's embeddings can learn it. A flagged row's shared weight is 1 and an
    unflagged row's 0 (``shared_weight`` is then unused): flagged rows click by sqrt(d) <u, v>, the
    function shared by every scenario, unflagged rows of scenario s by sqrt(d) <u, R_s v>, their own
    scenario's, where R_s turns every plane of a random orthonormal basis by 2π (s + 1) / (K + 1): the
    shared function and the K own ones are spread evenly around the circle, corr = cos of the angle
    between two (K = 3: s0 and s2 uncorrelated with the shared function, s1 its negation, s0 and s2
    each other's negation).
    The flagged rows are one more calibration group, and every group (each scenario's unflagged
    rows, all flagged rows) gets the same target CTR, the mean of the scenario targets (``ctr``
    when set): a flagged row's click probability does not depend on its scenario at all, and base
    rates tell neither flagged from unflagged rows nor one scenario from another. Sharing the
    flagged rows with every scenario's tower teaches each tower more of its own click model;
    sharing the unflagged ones teaches it another scenario's, opposed one. The draws use their own
    streams, default_rng((generator_seed, 3)) for the effects then the flags and
    default_rng((generator_seed, 4)) for the basis, so every other column is that of q = None
    (``shareable_flags`` and ``planted_rotations`` give the flags and the R_s).

``ctr`` (default None)
    Every scenario's target CTR (the geometric spread above is drawn and then replaced).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from ssimctr.config.datasets import SyntheticConfig

LABEL = "click"
SCENARIO = "scenario"
TIME = "timestamp"
ORACLE = "click_prob"
SHAREABLE = "shareable"  # the planted flag's column (shareable = q only)
CATEGORICAL = ["user_id", "item_id", "user_age", "user_gender", "user_city", "item_category", "item_brand", "hour"]
NUMERIC = ["item_price", "user_activity"]
TEXT = ["title"]

COLUMNS = pl.Schema(
    {
        "user_id": pl.Int64,
        "item_id": pl.Int64,
        "user_age": pl.Utf8,
        "user_gender": pl.Utf8,
        "user_city": pl.Int64,
        "item_category": pl.Int64,
        "item_brand": pl.Int64,
        "hour": pl.Int64,
        "item_price": pl.Float64,
        "user_activity": pl.Float64,
        "title": pl.Utf8,
        SCENARIO: pl.Utf8,
        TIME: pl.Int64,
        LABEL: pl.Int8,
        ORACLE: pl.Float64,
    }
)
"""The generated frame's columns in order, with their dtypes."""

START = 1_704_067_200  # 2024-01-01 00:00:00 UTC
AGE_BUCKETS = ["18-24", "25-34", "35-44", "45-54", "55+"]
AGE_SHARES = [0.2, 0.3, 0.25, 0.15, 0.1]
GENDERS = ["F", "M"]
CITY_SHARES = [0.15, 0.25, 0.3, 0.3]
ATTRIBUTE_SHARE = 0.8
ITEM_MIX = (0.75, 0.5, 0.43)  # weights of category centroid, brand offset and item noise in v
GLOBAL_POPULARITY_SHARE = 0.7
NUM_CATEGORIES = 20
BRANDS_PER_CATEGORY = 10
PRICE_LOG_RANGE = (np.log(5.0), np.log(300.0))
PRICE_LOG_STD = 0.4
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
VOCAB_SIZE = 300
TITLE_WORDS = (4, 8)
TITLE_BETA = 4.0
TRAFFIC_AMPLITUDE, TRAFFIC_PEAK_HOUR = 0.8, 19
GAMMA = 1.7
ATTRIBUTE_EFFECT_STD = 0.15
PRICE_COEF = -0.15
ACTIVITY_COEF = 0.1
HOUR_AMPLITUDE, CTR_PEAK_HOUR = 0.2, 21
CTR_RANGE = (0.03, 0.15)
BIAS_NEWTON_STEPS = 8
NEWCOMER_WINDOW = 0.1  # newcomers' rows lie in the last round(NEWCOMER_WINDOW * days) days (at least 1)
NEWCOMER_MAX_ROWS = 10.0  # ids with more rows than this many times the mean per id are never newcomers
SHAREABLE_CATEGORY_STD = 4.0  # spread of the flag's logit over item categories
SHAREABLE_AGE_STD = 2.0  # and over user age buckets


def generate(config: SyntheticConfig) -> pl.DataFrame:
    """Draw `config.rows` rows of multi-scenario click logs (see the module docstring for the model)."""
    rows, num_scenarios, users, items = config.rows, config.num_scenarios, config.users, config.items
    latent_dim, zipf_exponent, shared_weight, days = (
        config.latent_dim,
        config.zipf_exponent,
        config.shared_weight,
        config.days,
    )
    weights = _scenario_probabilities(num_scenarios, config.scenario_weights)  # SyntheticConfig checked the values
    rng = np.random.default_rng(config.generator_seed)
    scenario = rng.choice(num_scenarios, size=rows, p=weights)
    user = _popular_ids(rng, users, zipf_exponent, scenario, num_scenarios)
    item = _popular_ids(rng, items, zipf_exponent, scenario, num_scenarios)
    u, age, gender, city = _users(rng, users, latent_dim)
    v, category, brand = _items(rng, items, latent_dim)
    price = _prices(rng, category)
    titles = _titles(rng, v)
    hour, timestamp = _times(rng, rows, days)
    if config.newcomers > 0:
        new_user, new_item = newcomer_flags(config, user, item)
        timestamp = _late_times(config.generator_seed, timestamp, new_user[user] | new_item[item], days)
    activity = np.log1p(np.bincount(user, minlength=users)[user])
    flags = None if config.shareable is None else shareable_flags(config, age[user], category[item])
    weight = shared_weight if flags is None else flags.astype(np.float64)

    # drawn in every case, so that the later draws are those of shareable=None
    rotations = np.linalg.qr(rng.normal(size=(num_scenarios, latent_dim, latent_dim)))[0]
    if flags is not None:
        rotations = planted_rotations(config)
    logit = GAMMA * _interaction(u, v, user, item, scenario, rotations, weight)
    logit += _attribute_effects(rng, age[user], gender[user], city[user], category[item])
    logit += PRICE_COEF * _standardize(np.log(price[item])) + ACTIVITY_COEF * _standardize(activity)
    logit += HOUR_AMPLITUDE * np.cos(2 * np.pi * (hour - CTR_PEAK_HOUR) / 24)
    targets = _target_ctrs(rng, num_scenarios)
    if config.ctr is not None:
        targets = np.full(num_scenarios, config.ctr)
    if flags is None:
        prob = _calibrated_probs(logit, scenario, targets)
    else:  # the flagged rows are one more group; every group gets the mean target
        groups = np.where(flags, num_scenarios, scenario)
        prob = _calibrated_probs(logit, groups, np.full(num_scenarios + 1, targets.mean()))
    click = rng.random(rows) < prob

    columns = {
        "user_id": user,
        "item_id": item,
        "user_age": _labels(AGE_BUCKETS, age[user]),
        "user_gender": _labels(GENDERS, gender[user]),
        "user_city": city[user] + 1,
        "item_category": category[item],
        "item_brand": brand[item],
        "hour": hour,
        "item_price": price[item],
        "user_activity": activity,
        "title": titles.gather(item),
        SCENARIO: _labels([f"s{k}" for k in range(num_scenarios)], scenario),
        TIME: timestamp,
        LABEL: click,
        ORACLE: prob,
    }
    if flags is None:
        return pl.DataFrame(columns).cast(COLUMNS)
    return pl.DataFrame({**columns, SHAREABLE: flags}).cast({**COLUMNS, SHAREABLE: pl.Boolean})


def _scenario_probabilities(num_scenarios: int, scenario_weights: Sequence[float] | None) -> np.ndarray:
    """The scenarios' probabilities: `scenario_weights` normalized, or geometric (1, 1/2, 1/4, ...)."""
    weights = 0.5 ** np.arange(num_scenarios) if scenario_weights is None else np.asarray(list(scenario_weights), float)
    return weights / weights.sum()


def _popular_ids(
    rng: np.random.Generator, n: int, exponent: float, scenario: np.ndarray, num_scenarios: int
) -> np.ndarray:
    """Zipf-ranked ids: a rank per row, looked up in the global or the row's scenario permutation."""
    cdf = np.cumsum(1.0 / np.arange(1, n + 1) ** exponent)
    rank = np.minimum(np.searchsorted(cdf, rng.random(len(scenario)) * cdf[-1], side="right"), n - 1)
    permutations = np.stack([rng.permutation(n) for _ in range(num_scenarios + 1)])
    own = rng.random(len(scenario)) >= GLOBAL_POPULARITY_SHARE
    table = np.where(own, scenario + 1, 0)
    return permutations[table, rank]


def _users(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, ...]:
    """Per user: latent vector u (n x d), age bucket, gender (0=F, 1=M) and city level index 0..3."""
    age = rng.choice(len(AGE_BUCKETS), size=n, p=AGE_SHARES)
    gender = rng.integers(0, len(GENDERS), size=n)
    city = rng.choice(len(CITY_SHARES), size=n, p=CITY_SHARES)
    parts = [
        rng.normal(0.0, 1.0 / np.sqrt(d), size=(size, d))[values]
        for values, size in ((age, len(AGE_BUCKETS)), (gender, len(GENDERS)), (city, len(CITY_SHARES)))
    ]
    own = rng.normal(0.0, 1.0 / np.sqrt(d), size=(n, d))
    u = ATTRIBUTE_SHARE * sum(parts) / np.sqrt(len(parts)) + np.sqrt(1.0 - ATTRIBUTE_SHARE**2) * own
    return u, age, gender, city


def _items(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per item: latent vector v (n x d), category and nested brand."""
    category = rng.integers(0, NUM_CATEGORIES, size=n)
    brand = category * BRANDS_PER_CATEGORY + rng.integers(0, BRANDS_PER_CATEGORY, size=n)
    centroids = rng.normal(0.0, 1.0 / np.sqrt(d), size=(NUM_CATEGORIES, d))
    offsets = rng.normal(0.0, 1.0 / np.sqrt(d), size=(NUM_CATEGORIES * BRANDS_PER_CATEGORY, d))
    own = rng.normal(0.0, 1.0 / np.sqrt(d), size=(n, d))
    w_category, w_brand, w_item = ITEM_MIX
    return w_category * centroids[category] + w_brand * offsets[brand] + w_item * own, category, brand


def _prices(rng: np.random.Generator, category: np.ndarray) -> np.ndarray:
    """Per item: a lognormal price (in cents precision) whose log-mean depends on the category."""
    log_mean = rng.uniform(*PRICE_LOG_RANGE, size=NUM_CATEGORIES)
    return np.round(np.exp(log_mean[category] + rng.normal(0.0, PRICE_LOG_STD, size=len(category))), 2)


def _titles(rng: np.random.Generator, v: np.ndarray) -> pl.Series:
    """Per item: a title of 4..8 distinct words drawn by softmax(beta * sqrt(d) * <v, word vector>)."""
    d = v.shape[1]
    syllables = np.char.add(np.repeat(list(CONSONANTS), len(VOWELS)), np.tile(list(VOWELS), len(CONSONANTS)))
    codes = rng.choice(len(syllables) ** 2, size=VOCAB_SIZE, replace=False)
    vocabulary = pl.Series(np.char.add(syllables[codes // len(syllables)], syllables[codes % len(syllables)]))
    word_vectors = rng.normal(0.0, 1.0 / np.sqrt(d), size=(VOCAB_SIZE, d))
    scores = TITLE_BETA * np.sqrt(d) * (v @ word_vectors.T) + rng.gumbel(size=(len(v), VOCAB_SIZE))
    low, high = TITLE_WORDS
    top = np.argpartition(-scores, high, axis=1)[:, :high]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
    length = rng.integers(low, high + 1, size=len(v))
    words = pl.DataFrame({f"w{j}": vocabulary.gather(top[:, j]) for j in range(high)}).with_columns(length=length)
    title = pl.concat_str(
        [pl.when(pl.col("length") > j).then(pl.col(f"w{j}")) for j in range(high)], separator=" ", ignore_nulls=True
    )
    return words.select(title.alias("title")).to_series()


def _times(rng: np.random.Generator, rows: int, days: int) -> tuple[np.ndarray, np.ndarray]:
    """UTC hour and unix timestamp per row: uniform day, diurnal hour, uniform second."""
    traffic = 1.0 + TRAFFIC_AMPLITUDE * np.cos(2 * np.pi * (np.arange(24) - TRAFFIC_PEAK_HOUR) / 24)
    hour = rng.choice(24, size=rows, p=traffic / traffic.sum())
    seconds = rng.integers(0, days, size=rows) * 86_400 + hour * 3_600 + rng.integers(0, 3_600, size=rows)
    return hour, START + seconds


def newcomer_flags(config: SyntheticConfig, user: np.ndarray, item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per user id and per item id (boolean arrays of length users / items): whether it is a newcomer.

    `user` and `item` are the frame's user_id and item_id columns (the flags exclude ids with many rows).
    """
    rng = np.random.default_rng((config.generator_seed, 1))
    return _flags(rng, config.newcomers, user, config.users), _flags(rng, config.newcomers, item, config.items)


def _flags(rng: np.random.Generator, fraction: float, ids: np.ndarray, n: int) -> np.ndarray:
    """Per id: a newcomer with probability `fraction`, unless it has over NEWCOMER_MAX_ROWS x the mean rows per id."""
    drawn = rng.random(n) < fraction
    return drawn & (np.bincount(ids, minlength=n) <= NEWCOMER_MAX_ROWS * len(ids) / n)


def _late_times(seed: int, timestamp: np.ndarray, late: np.ndarray, days: int) -> np.ndarray:
    """The timestamps with each `late` row moved to a uniform day of the newcomer window, same time of day."""
    window = max(1, int(np.floor(NEWCOMER_WINDOW * days + 0.5)))
    day = days - window + np.random.default_rng((seed, 2)).integers(0, window, size=int(late.sum()))
    moved = timestamp.copy()
    moved[late] = START + day * 86_400 + (timestamp[late] - START) % 86_400
    return moved


def shareable_flags(config: SyntheticConfig, age: np.ndarray, category: np.ndarray) -> np.ndarray:
    """Per row (bool): the planted flag, from the rows' user age bucket and item category index."""
    rng = np.random.default_rng((config.generator_seed, 3))
    effects = rng.normal(0.0, SHAREABLE_CATEGORY_STD, size=NUM_CATEGORIES)[category]
    effects += rng.normal(0.0, SHAREABLE_AGE_STD, size=len(AGE_BUCKETS))[age]
    prob = _sigmoid(effects + _intercept(effects, config.shareable))
    return rng.random(len(prob)) < prob


def _intercept(effects: np.ndarray, target: float) -> float:
    """c with mean(sigmoid(c + effects)) = target (bisection: the mean rises with c)."""
    low, high = -50.0, 50.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if _sigmoid(effects + middle).mean() < target else (low, middle)
    return (low + high) / 2


def planted_rotations(config: SyntheticConfig) -> np.ndarray:
    """R_s (K x d x d) of planted data: scenario s turns every plane of a random orthonormal basis by
    2π (s + 1) / (K + 1), so corr(<u, R_s v>, <u, R_k v>) = cos of the angle between (angle 0: the shared <u, v>)."""
    d, k = config.latent_dim, config.num_scenarios
    basis = np.linalg.qr(np.random.default_rng((config.generator_seed, 4)).normal(size=(d, d)))[0]
    rotations = np.tile(np.eye(d), (k, 1, 1))
    for s in range(k):
        angle = 2 * np.pi * (s + 1) / (k + 1)
        for plane in range(d // 2):
            i, j = 2 * plane, 2 * plane + 1
            rotations[s, [i, i, j, j], [i, j, i, j]] = np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)
    return basis @ rotations @ basis.T


def _interaction(
    u: np.ndarray,
    v: np.ndarray,
    user: np.ndarray,
    item: np.ndarray,
    scenario: np.ndarray,
    rotations: np.ndarray,
    shared_weight: float | np.ndarray,
) -> np.ndarray:
    """sqrt(d) (w <u, v> + (1 - w) <u, R_s v>) per row, w = shared_weight (one value, or one per row);
    each part has unit variance."""
    rotated = np.einsum("kde,ie->kid", rotations, v)
    user_rows = u[user]
    shared = np.einsum("nd,nd->n", user_rows, v[item])
    specific = np.einsum("nd,nd->n", user_rows, rotated[scenario, item])
    return np.sqrt(u.shape[1]) * (shared_weight * shared + (1.0 - shared_weight) * specific)


def _attribute_effects(
    rng: np.random.Generator, age: np.ndarray, gender: np.ndarray, city: np.ndarray, category: np.ndarray
) -> np.ndarray:
    """Sum of small per-value effects of age bucket, gender, city level and category."""
    effects = np.zeros(len(age))
    for values, size in [
        (age, len(AGE_BUCKETS)),
        (gender, len(GENDERS)),
        (city, len(CITY_SHARES)),
        (category, NUM_CATEGORIES),
    ]:
        effects += rng.normal(0.0, ATTRIBUTE_EFFECT_STD, size=size)[values]
    return effects


def _standardize(x: np.ndarray) -> np.ndarray:
    """(x - mean) / std, or zeros where x is constant."""
    std = x.std()
    return (x - x.mean()) / std if std > 0 else np.zeros_like(x)


def _target_ctrs(rng: np.random.Generator, num_scenarios: int) -> np.ndarray:
    """Per scenario: a target CTR, geometrically spread over CTR_RANGE, in a seeded order."""
    low, high = CTR_RANGE
    return rng.permutation(low * (high / low) ** ((np.arange(num_scenarios) + 0.5) / num_scenarios))


def _calibrated_probs(logit: np.ndarray, scenario: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """sigmoid(b_s + logit), with b_s set by Newton steps on log(mean) so each scenario's mean hits its target.

    A scenario without rows counts as already on target.
    """
    counts = np.bincount(scenario, minlength=len(targets))
    size, empty = np.maximum(counts, 1), counts == 0
    bias = np.log(targets / (1.0 - targets))
    for _ in range(BIAS_NEWTON_STEPS):
        prob = _sigmoid(logit + bias[scenario])
        mean = (np.bincount(scenario, weights=prob, minlength=len(targets)) + empty * targets) / size
        slope = np.bincount(scenario, weights=prob * (1.0 - prob), minlength=len(targets)) / size
        bias -= np.log(mean / targets) * mean / np.maximum(slope, 1e-300)
    return _sigmoid(logit + bias[scenario])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _labels(values: list[str], index: np.ndarray) -> pl.Series:
    """The string values[index[i]] per row, gathered in polars."""
    return pl.Series(values, dtype=pl.Utf8).gather(index)
