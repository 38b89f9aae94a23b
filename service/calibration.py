"""A fixed, deterministic set of realistic (query, passage) pairs: the calibration set of the precision gate
(service/fidelity_gate.py), generated in code so that the image build, the scripts and the tests all score
exactly the same pairs, with no data file to ship or lose.

What it looks like (RAG retrieval results): `n_queries` questions, each with `per_query` candidate passages
of the lengths RAG chunks have (about 40-380 words, i.e. 60-500 tokens; a few are longer than 512 tokens so
truncation is exercised). For each query, some passages are on its topic and contain its key terms (the
documents a retriever rightly returned), some are on its topic but about something else (near misses), and the
rest come from other topics (retrieval noise), so a trained reranker's scores spread over the whole [0, 1]
range, as they do in production. Per-query top-10 overlap needs more than 10 candidates per query: the
default is 32 queries x 16 passages = 512 pairs.

`relevance_examples(n, seed)` draws labelled pairs from the same generator with another seed: the synthetic
relevance task the trained test model learns (tests/support/model_factory.py).

Pure Python, standard library only: the ONNX image (no torch) can import it.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

CALIBRATION_SEED = 20261201
DEFAULT_QUERIES = 32
DEFAULT_PER_QUERY = 16

# topic -> (entities, actions, properties): content words that make passages about one subject.
TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "kubernetes": (("pod", "cluster", "node", "deployment", "container", "service mesh", "ingress", "namespace"),
                   ("schedules", "restarts", "scales", "drains", "evicts", "mounts"),
                   ("memory limit", "readiness probe", "rolling update", "resource quota", "liveness check")),
    "postgres": (("table", "index", "query planner", "vacuum process", "replica", "transaction", "WAL segment"),
                 ("locks", "scans", "replicates", "rewrites", "checkpoints", "commits"),
                 ("isolation level", "autovacuum threshold", "connection pool", "sequential scan", "b-tree")),
    "gardening": (("tomato plant", "seedling", "compost", "raised bed", "rose bush", "soil", "mulch layer"),
                  ("waters", "prunes", "fertilizes", "transplants", "shades", "harvests"),
                  ("drainage", "acidity", "frost date", "sun exposure", "root rot", "nitrogen level")),
    "espresso": (("espresso shot", "grinder", "portafilter", "milk jug", "bean blend", "boiler", "tamper"),
                 ("extracts", "grinds", "steams", "tamps", "brews", "pours"),
                 ("extraction time", "grind size", "water temperature", "crema", "pressure profile")),
    "marathon": (("runner", "long run", "training plan", "running shoe", "race pace", "taper week"),
                 ("trains", "recovers", "hydrates", "paces", "stretches", "sprints"),
                 ("heart rate zone", "weekly mileage", "lactate threshold", "carbohydrate intake", "cadence")),
    "tax": (("tax return", "deduction", "invoice", "freelancer", "capital gain", "tax bracket", "receipt"),
            ("files", "deducts", "declares", "reports", "withholds", "amends"),
            ("filing deadline", "marginal rate", "business expense", "audit risk", "estimated payment")),
    "volcano": (("volcano", "magma chamber", "lava flow", "ash cloud", "crater", "tectonic plate", "caldera"),
                ("erupts", "vents", "deforms", "collapses", "releases", "cools"),
                ("gas emission", "seismic swarm", "eruption column", "silica content", "pyroclastic flow")),
    "python": (("function", "decorator", "generator", "virtual environment", "package", "interpreter",
                "type hint"),
               ("imports", "raises", "yields", "caches", "installs", "profiles"),
               ("garbage collector", "global interpreter lock", "dependency pin", "import path", "wheel file")),
    "mortgage": (("mortgage", "lender", "down payment", "interest rate", "home buyer", "loan term", "appraisal"),
                 ("refinances", "approves", "amortizes", "locks", "borrows", "repays"),
                 ("credit score", "closing cost", "fixed rate", "monthly payment", "loan-to-value ratio")),
    "bees": (("honeybee", "hive", "queen", "worker bee", "honeycomb", "pollen", "beekeeper"),
             ("forages", "swarms", "pollinates", "stores", "guards", "overwinters"),
             ("colony collapse", "varroa mite", "nectar flow", "brood pattern", "wax production")),
    "solar": (("solar panel", "inverter", "battery bank", "roof", "charge controller", "grid connection"),
              ("converts", "stores", "exports", "shades", "tracks", "degrades"),
              ("peak wattage", "panel efficiency", "net metering", "payback period", "tilt angle")),
    "vaccines": (("vaccine", "antibody", "immune system", "booster dose", "clinical trial", "antigen"),
                 ("triggers", "protects", "neutralizes", "boosts", "wanes", "trains"),
                 ("side effect", "efficacy rate", "cold chain", "herd immunity", "adjuvant")),
    "chess": (("opening", "pawn structure", "endgame", "bishop pair", "knight", "king safety", "gambit"),
              ("sacrifices", "castles", "pins", "forks", "promotes", "blockades"),
              ("tempo", "open file", "zugzwang", "center control", "piece activity")),
    "rust": (("borrow checker", "lifetime", "trait", "crate", "ownership", "async runtime", "macro"),
             ("borrows", "moves", "compiles", "implements", "drops", "clones"),
             ("memory safety", "zero-cost abstraction", "compile time", "unsafe block", "error handling")),
    "sleep": (("sleep cycle", "melatonin", "insomnia", "circadian rhythm", "nap", "bedroom", "REM phase"),
              ("regulates", "disrupts", "restores", "delays", "deepens", "shortens"),
              ("sleep debt", "blue light", "caffeine half-life", "core temperature", "sleep hygiene")),
    "railways": (("train", "signal box", "track gauge", "locomotive", "timetable", "freight wagon", "platform"),
                 ("departs", "brakes", "couples", "switches", "electrifies", "delays"),
                 ("axle load", "overhead line", "level crossing", "dwell time", "block section")),
}

_FILLER_SUBJECTS = ("the team", "most users", "the manual", "a recent report", "the author", "our guide",
                    "many experts", "the first chapter", "the community", "this article")
_FILLER_VERBS = ("explains", "describes", "notes", "suggests", "argues", "shows", "mentions", "reviews")
_FILLER_OBJECTS = ("the history of the project", "a few common mistakes", "the results of a small survey",
                   "what changed last year", "the cost over ten years", "how the process started",
                   "several open questions", "a simple checklist", "the trade-offs involved",
                   "the limits of the approach")
_CONNECTIVES = ("In practice,", "As a rule,", "However,", "For example,", "In most cases,", "Meanwhile,",
                "On the other hand,", "Typically,", "In short,", "Surprisingly,")
_QUESTION_FORMS = ("how does the {e} affect the {p}", "why the {e} {a} when the {p} changes",
                   "what is the best {p} for a {e}", "how to check the {p} of a {e}",
                   "when should I worry about the {p} of my {e}", "does the {e} {a} faster with a higher {p}",
                   "{e} {p} explained", "troubleshooting a {e} that {a} too often")


@dataclass(frozen=True)
class CalibrationPair:
    query_id: int
    query: str
    passage: str
    kind: str  # "relevant" | "near" | "other": how it was generated (not used by the gate)


@dataclass(frozen=True)
class CalibrationSet:
    pairs: tuple[CalibrationPair, ...]
    seed: int
    n_queries: int
    per_query: int

    @property
    def queries(self) -> list[str]:
        seen: dict[int, str] = {}
        for pair in self.pairs:
            seen.setdefault(pair.query_id, pair.query)
        return list(seen.values())

    def by_query(self) -> list[tuple[str, list[str]]]:
        """(query, passages) per query, in order: one rerank call each."""
        groups: dict[int, tuple[str, list[str]]] = {}
        for pair in self.pairs:
            groups.setdefault(pair.query_id, (pair.query, []))[1].append(pair.passage)
        return list(groups.values())

    @property
    def query_ids(self) -> list[int]:
        return [pair.query_id for pair in self.pairs]

    def sha256(self) -> str:
        payload = json.dumps([[p.query_id, p.query, p.passage] for p in self.pairs], ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def describe(self) -> dict:
        """What fidelity.json records about the set (enough to tell whether a verdict used this one)."""
        words = [len(p.passage.split()) for p in self.pairs]
        return {"generator": "service.calibration.calibration_set", "seed": self.seed, "pairs": len(self.pairs),
                "queries": self.n_queries, "passages_per_query": self.per_query, "sha256": self.sha256(),
                "passage_words": {"min": min(words), "mean": round(sum(words) / len(words), 1),
                                  "max": max(words)}}


def _sentence(rng: random.Random, topic: str, *, focus: tuple[str, str] | None = None) -> str:
    entities, actions, properties = TOPICS[topic]
    entity = focus[0] if focus and rng.random() < 0.6 else rng.choice(entities)
    prop = focus[1] if focus and rng.random() < 0.5 else rng.choice(properties)
    other = rng.choice(entities)
    form = rng.randrange(6)
    if form == 0:
        text = f"the {entity} {rng.choice(actions)} the {other} when the {prop} is too high"
    elif form == 1:
        text = f"a well tuned {prop} means the {entity} rarely {rng.choice(actions)} on its own"
    elif form == 2:
        text = f"{rng.choice(_FILLER_SUBJECTS)} {rng.choice(_FILLER_VERBS)} how the {prop} of the {entity} " \
               f"changed after {rng.randrange(2, 40)} {rng.choice(('days', 'weeks', 'months', 'years'))}"
    elif form == 3:
        text = f"if the {entity} {rng.choice(actions)} every {rng.randrange(2, 12)} hours, check the {prop} " \
               f"and the {other} first"
    elif form == 4:
        text = f"{rng.choice(_FILLER_SUBJECTS)} {rng.choice(_FILLER_VERBS)} {rng.choice(_FILLER_OBJECTS)}, " \
               f"including the {prop}"
    else:
        text = f"the {prop} depends on the {entity} more than on the {other}, and it {rng.choice(actions)} " \
               f"about {rng.randrange(3, 95)} percent of the time"
    if rng.random() < 0.35:
        text = f"{rng.choice(_CONNECTIVES)} {text}"
    return text[0].upper() + text[1:] + "."


def _passage(rng: random.Random, topic: str, n_words: int, focus: tuple[str, str] | None = None) -> str:
    words: list[str] = []
    while len(words) < n_words:
        words.extend(_sentence(rng, topic, focus=focus).split())
    words = words[:n_words]
    words[-1] = words[-1].rstrip(",.") + "."
    return " ".join(words)


def _passage_words(rng: random.Random) -> int:
    """RAG chunk lengths: mostly 80-250 words, some short, a few over the 512-token cut."""
    bucket = rng.random()
    if bucket < 0.15:
        return rng.randint(40, 80)
    if bucket < 0.85:
        return rng.randint(80, 250)
    if bucket < 0.97:
        return rng.randint(250, 380)
    return rng.randint(400, 480)


def _query(rng: random.Random, topic: str) -> tuple[str, tuple[str, str]]:
    entities, actions, properties = TOPICS[topic]
    entity, prop = rng.choice(entities), rng.choice(properties)
    text = rng.choice(_QUESTION_FORMS).format(e=entity, p=prop, a=rng.choice(actions))
    return text[0].upper() + text[1:] + "?", (entity, prop)


def _candidates(rng: random.Random, topic: str, focus: tuple[str, str], n: int) -> list[tuple[str, str]]:
    """(kind, passage): a mix of on-topic passages about the query's terms, on-topic near misses and others."""
    n_relevant = rng.randint(max(1, n // 8), max(2, n // 3))
    n_near = rng.randint(1, max(1, n // 3))
    others = [t for t in TOPICS if t != topic]
    out = []
    for i in range(n):
        if i < n_relevant:
            out.append(("relevant", _passage(rng, topic, _passage_words(rng), focus=focus)))
        elif i < n_relevant + n_near:
            out.append(("near", _passage(rng, topic, _passage_words(rng))))
        else:
            out.append(("other", _passage(rng, rng.choice(others), _passage_words(rng))))
    rng.shuffle(out)
    return out


def calibration_set(n_queries: int = DEFAULT_QUERIES, per_query: int = DEFAULT_PER_QUERY,
                    seed: int = CALIBRATION_SEED) -> CalibrationSet:
    """The gate's fixed pairs (same arguments -> the same pairs, byte for byte, on every machine)."""
    if per_query <= 10:
        raise ValueError("per-query top-10 overlap needs more than 10 passages per query")
    rng = random.Random(seed)
    topics = list(TOPICS)
    pairs = []
    for query_id in range(n_queries):
        topic = topics[query_id % len(topics)]
        query, focus = _query(rng, topic)
        for kind, passage in _candidates(rng, topic, focus, per_query):
            pairs.append(CalibrationPair(query_id, query, passage, kind))
    return CalibrationSet(tuple(pairs), seed, n_queries, per_query)


def relevance_examples(n: int, seed: int = 1, max_words: int = 120) -> list[tuple[str, str, float]]:
    """`n` labelled (query, passage, label) examples of the same task (label 1.0 relevant, 0.0 not; near misses
    are 0.0 too, which teaches the model to read the query's terms, not only the topic). Shorter passages than
    the calibration set (training cost), and another seed (the gate never scores what the model was trained on).
    """
    rng = random.Random(seed)
    topics = list(TOPICS)
    out = []
    while len(out) < n:
        topic = rng.choice(topics)
        query, focus = _query(rng, topic)
        words = rng.randint(20, max_words)
        kind = rng.choice(("relevant", "relevant", "near", "other", "other"))
        if kind == "relevant":
            passage = _passage(rng, topic, words, focus=focus)
        elif kind == "near":
            passage = _passage(rng, topic, words)
        else:
            passage = _passage(rng, rng.choice([t for t in topics if t != topic]), words)
        out.append((query, passage, 1.0 if kind == "relevant" else 0.0))
    return out
