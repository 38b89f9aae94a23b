"""Small, deterministic, offline stand-ins for the reranker model, for tests and benchmarks.

The Hugging Face Hub is not reachable from the test machines, so nothing here downloads anything. Two builders
write a complete model folder that `sentence_transformers.CrossEncoder(str(path), ...)` loads exactly like a
downloaded model:

* `build_bert_reranker`: a plain `BertForSequenceClassification` (one logit, so CrossEncoder applies a
  sigmoid) with a WordPiece tokenizer trained here with the `tokenizers` library.
* `build_alibi_reranker`: a JinaBERT-like model (ALiBi attention, GEGLU feed-forward) whose modeling code is
  *remote code*: `configuration_alibert.py` / `modeling_alibert.py` (from `tests/support/alibert/`) sit in the
  folder and `config.json`'s `auto_map` references them, as for `jinaai/jina-reranker-v1-tiny-en`; it needs
  `trust_remote_code=True`. With `auto_map="external"` the references point into a second repository instead
  (`testorg/alibert-implementation--modeling_alibert....`, like the real model's
  `jinaai/jina-bert-implementation--...`), which `build_external_code_repo` lays out as a Hub cache entry.

`cached_model` builds a model once per (kind, arguments, source code) under a cache directory and reuses it.

The synthetic English-like text generator (`english_like_text`, `english_like_query`, `corpus`) trains the
tokenizer and is exported for benchmark workloads.

Public API::

    build_bert_reranker(out_dir, *, seed=0, init_std=None, hidden_size=32, num_layers=2, num_heads=2,
                        intermediate_size=64, max_position_embeddings=512) -> Path
    build_alibi_reranker(out_dir, *, seed=0, init_std=None, hidden_size=32, num_layers=2, num_heads=4,
                         intermediate_size=64, vocab_size=None, max_position_embeddings=8192,
                         auto_map="local", attention_form="module") -> Path
    build_external_code_repo(hf_home, repo_id="testorg/alibert-implementation") -> Path
    cached_model(kind, cache_root, **kwargs) -> Path          # kind: "bert" or "alibi"
    JINA_TINY_DIMS                                             # build_alibi_reranker(dir, **JINA_TINY_DIMS)
    english_like_text(rng, n_words) -> str
    english_like_query(rng, n_words=None) -> str
    corpus(n_sentences=3000, seed=0) -> list[str]
    load_alibert_module() -> module                            # the modeling code, importable in-process
    alibert_modeling_source(attention_form) -> str             # modeling_alibert.py in either code form
    make_alibi_model(*, seed=0, ..., max_position_embeddings=512)  # the in-memory model the builder saves
    resolve_init_std(init_std, hidden_size) -> float           # None -> 0.1 * sqrt(384 / hidden_size)
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import random
import shutil
import sys
import tempfile
import types
from pathlib import Path
from typing import Any, Literal

ALIBERT_SOURCE_DIR = Path(__file__).resolve().parent / "alibert"
ALIBERT_FILES = ("configuration_alibert.py", "modeling_alibert.py")
EXTERNAL_CODE_REPO_ID = "testorg/alibert-implementation"

# The shape of jinaai/jina-reranker-v1-tiny-en (JinaBERT): 4 layers, hidden 384, 12 heads, GEGLU 1536,
# vocab 61,056, ALiBi sized for 8,192 positions.
JINA_TINY_DIMS: dict[str, int] = dict(
    hidden_size=384,
    num_layers=4,
    num_heads=12,
    intermediate_size=1536,
    vocab_size=61056,
    max_position_embeddings=8192,
)

# The trainer's upper bound; the closed synthetic vocabulary saturates at ~2,300 (`tokenizer_vocab_size`).
TOKENIZER_VOCAB_SIZE = 3000
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

__all__ = [
    "ALIBERT_FILES",
    "ALIBERT_SOURCE_DIR",
    "EXTERNAL_CODE_REPO_ID",
    "JINA_TINY_DIMS",
    "build_alibi_reranker",
    "build_bert_reranker",
    "build_external_code_repo",
    "cached_model",
    "corpus",
    "english_like_query",
    "english_like_sentence",
    "english_like_text",
    "load_alibert_module",
    "make_alibi_model",
    "resolve_init_std",
    "tokenizer_vocab_size",
]


# ----------------------------------------------------------------------------------------------------------
# Synthetic English-like text
# ----------------------------------------------------------------------------------------------------------

_NOUNS = """
time year people way day man woman child world life hand part place case week company system program
question work government number night point home water room mother area money story fact month lot right
study book eye job word business issue side kind head house service friend father power hour game line
end member law car city community name president team minute idea kid body information back parent face
others level office door health person art war history party result change morning reason research girl
guy moment air teacher force education foot boy age policy process music market sense nation plan college
interest death experience effect class control care field development role effort rate heart drug show
leader light voice wife police mind price report decision son view relationship town road arm difference
value building action model season society tax director position player record paper space ground form
event official matter center couple site project activity star table need court oil situation cost
industry figure street image phone data picture practice piece land product doctor wall patient worker
news test movie north love support technology step baby computer type attention film tree source window
network energy river garden kitchen bridge island mountain forest ocean village engine machine student
library museum hospital station airport restaurant hotel bank factory farm market theory method answer
problem solution example language science animal plant weather winter summer spring autumn coffee bread
dinner
""".split()

_PROPER_NOUNS = """
London Paris Berlin Tokyo Chicago Boston Denver Seattle Madrid Rome Vienna Dublin Oslo Lisbon Sydney
Toronto Alice Bob Carol David Emma Frank Grace Henry Irene James Karen Louis Maria Nathan Olivia Peter
Rachel Samuel Monday Tuesday Friday January March June October December Europe Africa Asia America
Atlantic Pacific
""".split()

_VERBS = """
be have do say get make go know take see come think look want give use find tell ask work seem feel try
leave call keep let begin help talk turn start show hear play run move like live believe hold bring
happen write provide sit stand lose pay meet include continue set learn change lead understand watch
follow stop create speak read allow add spend grow open walk win offer remember love consider appear buy
wait serve die send expect build stay fall cut reach kill remain suggest raise pass sell require report
decide pull explain develop carry break receive agree support hit produce eat cover catch draw choose
cause measure improve describe share compare
""".split()

_IRREGULAR_PAST = {
    "be": "was",
    "have": "had",
    "do": "did",
    "say": "said",
    "get": "got",
    "make": "made",
    "go": "went",
    "know": "knew",
    "take": "took",
    "see": "saw",
    "come": "came",
    "think": "thought",
    "give": "gave",
    "find": "found",
    "tell": "told",
    "feel": "felt",
    "leave": "left",
    "keep": "kept",
    "let": "let",
    "begin": "began",
    "hold": "held",
    "bring": "brought",
    "write": "wrote",
    "sit": "sat",
    "stand": "stood",
    "lose": "lost",
    "pay": "paid",
    "meet": "met",
    "lead": "led",
    "understand": "understood",
    "set": "set",
    "speak": "spoke",
    "read": "read",
    "spend": "spent",
    "grow": "grew",
    "win": "won",
    "buy": "bought",
    "send": "sent",
    "build": "built",
    "fall": "fell",
    "cut": "cut",
    "break": "broke",
    "hit": "hit",
    "eat": "ate",
    "catch": "caught",
    "draw": "drew",
    "choose": "chose",
    "run": "ran",
    "hear": "heard",
    "die": "died",
    "sell": "sold",
}

_ADJECTIVES = """
good new first last long great little own other old right big high different small large next early young
important few public bad same able late hard major better economic strong possible whole free military
true federal international full special easy clear recent certain personal open red difficult available
likely short single medical current wrong private past foreign fine common poor natural significant
similar hot dead central happy serious ready simple left physical general environmental financial blue
democratic dark various entire close legal religious cold final main green nice huge popular traditional
cultural quiet bright careful modern ancient quick slow heavy light warm fresh rich deep narrow wide safe
dangerous famous strange beautiful useful
""".split()

_ADVERBS = """
also very often however too usually really early never always sometimes together likely simply generally
instead actually again rather almost especially ever quickly probably already below directly therefore
else thus easily eventually exactly certainly normally currently extremely finally constantly slowly
carefully
""".split()

_PREPOSITIONS = (
    "in on at with from into during including until against among throughout despite towards upon "
    "about across after around before behind beyond near over under without within".split()
)

_CONJUNCTIONS = ["and", "but", "because", "although", "while", "so", "since", "when", "after", "before"]

_PRONOUN_SUBJECTS = ["he", "she", "they", "we", "it", "someone", "everyone", "nobody"]

_DETERMINERS = ["the", "a", "this", "that", "every", "some", "each", "another", "her", "his", "their", "our"]


def _pick(rng: random.Random, words: list[str]) -> str:
    return words[rng.randrange(len(words))]


def _noun_phrase(rng: random.Random) -> str:
    if rng.random() < 0.08:
        return _pick(rng, _PROPER_NOUNS)
    det = _pick(rng, _DETERMINERS)
    noun = _pick(rng, _NOUNS)
    if det not in ("a", "every", "each", "another") and rng.random() < 0.3:
        noun = _plural(noun)
        det = {"this": "these", "that": "those"}.get(det, det)
    if rng.random() < 0.45:
        noun = f"{_pick(rng, _ADJECTIVES)} {noun}"
    if det == "a" and noun[0] in "aeiou":
        det = "an"
    return f"{det} {noun}"


def _plural(noun: str) -> str:
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    if noun in ("man", "woman"):
        return noun[:-2] + "en"
    if noun == "child":
        return "children"
    return noun + "s"


def _past(verb: str) -> str:
    if verb in _IRREGULAR_PAST:
        return _IRREGULAR_PAST[verb]
    if verb.endswith("e"):
        return verb + "d"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ied"
    return verb + "ed"


def _third_person(verb: str) -> str:
    if verb == "be":
        return "is"
    if verb == "have":
        return "has"
    if verb.endswith(("s", "x", "ch", "sh", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _gerund(verb: str) -> str:
    if verb == "be":
        return "being"
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith("ee"):
        return verb[:-1] + "ing"
    return verb + "ing"


def _clause(rng: random.Random) -> str:
    subject = _pick(rng, _PRONOUN_SUBJECTS) if rng.random() < 0.3 else _noun_phrase(rng)
    verb = _pick(rng, _VERBS)
    form = rng.random()
    if form < 0.45:
        verb_phrase = _past(verb)
    elif form < 0.75:
        verb_phrase = "are" if subject in ("they", "we") else "is"
        verb_phrase = f"{verb_phrase} {_gerund(verb)}"
    elif form < 0.9:
        verb_phrase = f"will {verb}"
    else:
        verb_phrase = _third_person(verb) if subject not in ("they", "we") else verb
    parts = [subject]
    if rng.random() < 0.2:
        parts.append(_pick(rng, _ADVERBS))
    parts.append(verb_phrase)
    parts.append(_noun_phrase(rng))
    if rng.random() < 0.6:
        parts.append(f"{_pick(rng, _PREPOSITIONS)} {_noun_phrase(rng)}")
    if rng.random() < 0.15:
        parts.append(f"in {rng.randrange(1950, 2030)}")
    elif rng.random() < 0.1:
        parts.append(
            f"for {rng.randrange(2, 99)} {_plural(_pick(rng, ['day', 'week', 'month', 'year', 'hour']))}"
        )
    return " ".join(parts)


def english_like_sentence(rng: random.Random) -> str:
    """One sentence: one or two clauses from a built-in vocabulary of a few hundred common English words."""
    text = _clause(rng)
    if rng.random() < 0.35:
        text = f"{text}, {_pick(rng, _CONJUNCTIONS)} {_clause(rng)}"
    end = "?" if rng.random() < 0.05 else "."
    return text[0].upper() + text[1:] + end


def english_like_text(rng: random.Random, n_words: int) -> str:
    """Realistic-looking English prose of exactly `n_words` whitespace-separated words, deterministic."""
    if n_words <= 0:
        return ""
    words: list[str] = []
    while len(words) < n_words:
        words.extend(english_like_sentence(rng).split())
    words = words[:n_words]
    if words[-1][-1] not in ".?!":
        words[-1] = words[-1].rstrip(",") + "."
    return " ".join(words)


def english_like_query(rng: random.Random, n_words: int | None = None) -> str:
    """A search-query-like question, e.g. "why did the local council change the market in Berlin?".

    With `n_words`, exactly that many words (padded with noun phrases or cut).
    """
    np1, np2, verb = _noun_phrase(rng), _noun_phrase(rng), _pick(rng, _VERBS)
    template = rng.randrange(5)
    if template == 0:
        text = f"what is {np1} {_pick(rng, _PREPOSITIONS)} {np2}"
    elif template == 1:
        text = f"how does {np1} {verb} {np2}"
    elif template == 2:
        text = f"why did {np1} {verb} {np2}"
    elif template == 3:
        text = f"where can {_pick(rng, _PRONOUN_SUBJECTS)} {verb} {np1}"
    else:
        text = f"best way to {verb} {np1} {_pick(rng, _PREPOSITIONS)} {np2}"
    if rng.random() < 0.3:
        text += f" {_pick(rng, _PREPOSITIONS)} {_noun_phrase(rng)}"
    words = text.split()
    if n_words is not None:
        while len(words) < n_words:
            words.extend(_noun_phrase(rng).split())
        words = words[:n_words]
    return " ".join(words) + "?"


def corpus(n_sentences: int = 3000, seed: int = 0) -> list[str]:
    """A deterministic list of English-like sentences (the tokenizer's training corpus)."""
    rng = random.Random(seed)
    return [english_like_sentence(rng) for _ in range(n_sentences)]


# ----------------------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _trained_tokenizer_json(vocab_size: int) -> str:
    """Train a lower-cased BERT-style WordPiece tokenizer on the synthetic corpus; return its JSON."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    # Every printable ASCII character is in the vocabulary, so [UNK] is rare even for unseen text.
    alphabet = [chr(c) for c in range(33, 127)]
    # Determinism: the trainer gives the "##x" continuation characters ids in hash-map order (random per
    # process), and merge ties are broken by id, so two processes would learn different vocabularies.
    # Registering every "##x" up front (as special tokens, the only way to pre-seed the trainer's vocabulary)
    # fixes their ids and makes training reproducible; they are demoted to ordinary vocabulary entries below.
    continuation = [f"##{c}" for c in alphabet]
    trainer_tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    trainer_tokenizer.normalizer = normalizer
    trainer_tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS + continuation,
        initial_alphabet=alphabet,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    lines = corpus(4000, seed=1234)
    trainer_tokenizer.train_from_iterator(lines, trainer=trainer, length=len(lines))
    vocab = trainer_tokenizer.get_vocab(with_added_tokens=True)

    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer.to_str()


def tokenizer_vocab_size(vocab_size: int = TOKENIZER_VOCAB_SIZE) -> int:
    """Number of tokens in the trained tokenizer (2,317 with the defaults)."""
    return len(json.loads(_trained_tokenizer_json(vocab_size))["model"]["vocab"])


def _save_tokenizer(out_dir: Path, *, model_max_length: int, vocab_size: int = TOKENIZER_VOCAB_SIZE) -> int:
    """Write the tokenizer files (tokenizer.json, vocab.txt, configs) to `out_dir`; return the vocab size."""
    from tokenizers import Tokenizer
    from transformers import BertTokenizerFast

    backend = Tokenizer.from_str(_trained_tokenizer_json(vocab_size))
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_file = Path(tmp) / "tokenizer.json"
        tokenizer_file.write_text(backend.to_str())
        vocab = backend.get_vocab()
        vocab_file = Path(tmp) / "vocab.txt"
        vocab_file.write_text("".join(f"{tok}\n" for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])))
        tokenizer = BertTokenizerFast(
            vocab_file=str(vocab_file),
            tokenizer_file=str(tokenizer_file),
            do_lower_case=True,
            model_max_length=model_max_length,
        )
        tokenizer.save_pretrained(str(out_dir))
    return len(vocab)


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------


def _prepare_out_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


REFERENCE_INIT_STD = 0.1
REFERENCE_HIDDEN_SIZE = 384


def resolve_init_std(init_std: float | None, hidden_size: int) -> float:
    """The weight std a builder uses: `init_std` if given, else 0.1 * sqrt(384 / hidden_size).

    0.1 is the std that gives a JinaBERT-tiny-shaped model (hidden 384) clearly different logits for different
    documents (std of logits ~1 over random documents); BERT's usual 0.02 gives ~0.003, i.e. nearly constant
    scores, so rankings would be meaningless. What matters is each layer's gain, std * sqrt(hidden_size) (~2
    here): at hidden 32, std 0.1 has a gain of 0.57, attention stays nearly uniform and the logits of
    different documents differ by ~0.01 only (measured), so narrower models get a proportionally larger std
    (0.35 at hidden 32).
    """
    if init_std is not None:
        return float(init_std)
    return REFERENCE_INIT_STD * (REFERENCE_HIDDEN_SIZE / hidden_size) ** 0.5


def _seeded_construct(seed: int, factory):
    """Construct a model under a private RNG state: same seed, same weights; the global RNG is untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def _save_model(model, out_dir: Path) -> None:
    model.eval()
    model.save_pretrained(str(out_dir), safe_serialization=True)


def build_bert_reranker(
    out_dir: Path,
    *,
    seed: int = 0,
    init_std: float | None = None,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 64,
    max_position_embeddings: int = 512,
) -> Path:
    """Write a random-weight `BertForSequenceClassification` (num_labels=1) + WordPiece tokenizer.

    Weights are drawn from normal(0, std) (biases zero, LayerNorms identity) via `config.initializer_range`,
    with std = `init_std`, by default 0.1 scaled to the width (`resolve_init_std`: 0.1 at hidden 384, 0.35 at
    the default hidden 32). Deliberately far above BERT's usual 0.02: with 0.02 a random model's pooled output
    is almost constant, so the logits of different documents barely differ (std ~1e-3) and tests that compare
    rankings would be meaningless; with the default they differ clearly (std of logits ~0.3-1.5).

    Loads with `CrossEncoder(str(path))`; one logit, so CrossEncoder applies a sigmoid: scores in [0, 1].
    Returns `out_dir`.
    """
    from transformers import BertConfig, BertForSequenceClassification

    out_dir = _prepare_out_dir(out_dir)
    vocab_size = _save_tokenizer(out_dir, model_max_length=max_position_embeddings)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        initializer_range=resolve_init_std(init_std, hidden_size),
        num_labels=1,
        pad_token_id=0,
        architectures=["BertForSequenceClassification"],
    )
    model = _seeded_construct(seed, lambda: BertForSequenceClassification(config))
    _save_model(model, out_dir)
    return out_dir


@functools.lru_cache(maxsize=1)
def load_alibert_module() -> types.ModuleType:
    """Import `tests/support/alibert/modeling_alibert.py` in-process (as package `_alibert_test_code`).

    Works however this file was imported (as `tests.support.model_factory` or from another sys.path). The
    classes are distinct from the ones transformers imports from `transformers_modules.*` when loading a
    folder with `trust_remote_code=True`, but the code is the same.
    """
    package_name = "_alibert_test_code"
    if package_name not in sys.modules:
        package = types.ModuleType(package_name)
        package.__path__ = [str(ALIBERT_SOURCE_DIR)]
        sys.modules[package_name] = package
    return importlib.import_module(f"{package_name}.modeling_alibert")


def alibert_config(
    *,
    vocab_size: int,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 64,
    max_position_embeddings: int = 8192,
    init_std: float | None = None,
    **extra: Any,
):
    """An `AliBertConfig` for the in-process modeling module (used by the builder and by tests)."""
    module = load_alibert_module()
    return module.AliBertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        initializer_range=resolve_init_std(init_std, hidden_size),
        num_labels=1,
        pad_token_id=0,
        **extra,
    )


def make_alibi_model(
    *,
    seed: int = 0,
    init_std: float | None = None,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 64,
    vocab_size: int | None = None,
    max_position_embeddings: int = 512,
):
    """The in-memory `AliBertForSequenceClassification` that `build_alibi_reranker` saves (same arguments).

    Built from the in-process copy of the modeling code (`load_alibert_module`), in eval mode. Its config was
    constructed directly, so `attn_implementation` is "torch" (SDPA); a model loaded from disk has None
    (eager).
    """
    module = load_alibert_module()
    config = alibert_config(
        vocab_size=vocab_size if vocab_size is not None else tokenizer_vocab_size(),
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        init_std=init_std,
        architectures=["AliBertForSequenceClassification"],
    )
    return _seeded_construct(seed, lambda: module.AliBertForSequenceClassification(config)).eval()


ATTENTION_FORMS = ("module", "config")
# JinaBERT's two code forms of the attention switch (service/backends/attention.py): the module attribute
# (what tests/support/alibert/modeling_alibert.py has) or the shared config, read in the forward.
_CONFIG_FORM_EDITS = (
    ("        self.attn_implementation = config.attn_implementation\n",
     "        self.config = config  # the shared config; forward reads its attn_implementation\n"),
    ('        if self.attn_implementation == "torch" and scaled_dot_product_attention is not None:\n',
     '        if self.config.attn_implementation == "torch" and scaled_dot_product_attention is not None:\n'),
)


def alibert_modeling_source(attention_form: str = "module") -> str:
    """modeling_alibert.py as written (`"module"`: `self.attn_implementation`, read in the forward), or its
    config form (`"config"`: the self-attention module keeps `self.config` and the forward reads
    `self.config.attn_implementation`), the two forms public copies of JinaBERT's code have."""
    source = (ALIBERT_SOURCE_DIR / "modeling_alibert.py").read_text()
    if attention_form == "module":
        return source
    if attention_form != "config":
        raise ValueError(f"attention_form must be one of {ATTENTION_FORMS}, not {attention_form!r}")
    for old, new in _CONFIG_FORM_EDITS:
        if source.count(old) != 1:
            raise RuntimeError(f"modeling_alibert.py changed: cannot derive the config form ({old.strip()!r})")
        source = source.replace(old, new)
    return source


def _write_alibert_code(out_dir: Path, attention_form: str) -> None:
    shutil.copyfile(ALIBERT_SOURCE_DIR / "configuration_alibert.py", out_dir / "configuration_alibert.py")
    (out_dir / "modeling_alibert.py").write_text(alibert_modeling_source(attention_form))


def _auto_map(mode: str, repo_id: str) -> dict[str, str]:
    refs = {
        "AutoConfig": "configuration_alibert.AliBertConfig",
        "AutoModel": "modeling_alibert.AliBertModel",
        "AutoModelForSequenceClassification": "modeling_alibert.AliBertForSequenceClassification",
    }
    if mode == "local":
        return refs
    if mode == "external":
        return {key: f"{repo_id}--{value}" for key, value in refs.items()}
    raise ValueError(f"auto_map must be 'local' or 'external', not {mode!r}")


def build_alibi_reranker(
    out_dir: Path,
    *,
    seed: int = 0,
    init_std: float | None = None,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 64,
    vocab_size: int | None = None,
    max_position_embeddings: int = 8192,
    auto_map: Literal["local", "external"] = "local",
    attention_form: Literal["module", "config"] = "module",
) -> Path:
    """Write a random-weight JinaBERT-like reranker (ALiBi, GEGLU, one logit) loaded as remote code.

    `attention_form` picks which of JinaBERT's two code forms the copied `modeling_alibert.py` has: the switch
    on the self-attention module (`"module"`) or on the shared config read in the forward (`"config"`); the
    weights are the same.

    The folder holds `config.json` (model_type "alibert", `position_embedding_type: "alibi"`,
    `architectures: ["AliBertForSequenceClassification"]`, num_labels 1, and an `auto_map`),
    `model.safetensors`, the tokenizer files and, with `auto_map="local"`, `configuration_alibert.py` and
    `modeling_alibert.py`.
    With `auto_map="external"` the `.py` files are left out and `auto_map` points to
    `testorg/alibert-implementation--...`; loading then needs `build_external_code_repo(HF_HOME)` and
    `HF_HOME` pointing there (with `HF_HUB_OFFLINE=1`).

    `vocab_size=None` means the tokenizer's size (~2,300); a larger value (61,056 for `JINA_TINY_DIMS`) gives
    an embedding matrix of that many rows, of which the tokenizer uses the first few thousand.

    Weights: normal(0, std) via `config.initializer_range`, std = `init_std` or `resolve_init_std`'s default
    (exactly 0.1 for `JINA_TINY_DIMS`; see `build_bert_reranker` and `resolve_init_std` for why).
    The saved config says `max_position_embeddings` as given (8,192 by default, like JinaBERT), so a plain
    load allocates the full (1, heads, n, n) float32 ALiBi buffer; building never does (the buffer is not
    saved, so the builder constructs the model with at most 512 positions; the weights are identical).

    Load with `CrossEncoder(str(path), trust_remote_code=True)`, optionally
    `config_kwargs={"max_position_embeddings": 512}` to cap the buffer. Returns `out_dir`.
    """
    out_dir = _prepare_out_dir(out_dir)
    tokenizer_vocab = _save_tokenizer(out_dir, model_max_length=max_position_embeddings)
    if vocab_size is None:
        vocab_size = tokenizer_vocab
    if vocab_size < tokenizer_vocab:
        raise ValueError(
            f"vocab_size={vocab_size} is smaller than the tokenizer's vocabulary ({tokenizer_vocab})"
        )

    # The ALiBi buffer is not saved, so build with at most 512 positions (12 MB instead of 3.2 GB for
    # JINA_TINY_DIMS); the weights do not depend on it. The saved config then says the real value.
    model = make_alibi_model(
        seed=seed,
        init_std=init_std,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=intermediate_size,
        vocab_size=vocab_size,
        max_position_embeddings=min(max_position_embeddings, 512),
    )
    model.config.max_position_embeddings = max_position_embeddings
    model.config.auto_map = _auto_map(auto_map, EXTERNAL_CODE_REPO_ID)
    _save_model(model, out_dir)
    if attention_form not in ATTENTION_FORMS:
        raise ValueError(f"attention_form must be one of {ATTENTION_FORMS}, not {attention_form!r}")
    if auto_map == "local":
        _write_alibert_code(out_dir, attention_form)
    return out_dir


def build_external_code_repo(hf_home: Path, repo_id: str = EXTERNAL_CODE_REPO_ID,
                             attention_form: Literal["module", "config"] = "module") -> Path:
    """Lay out the AliBERT `.py` files as a Hugging Face Hub cache entry for `repo_id` under `hf_home/hub`.

    Layout (what `huggingface_hub` leaves after a download, minus the blob symlinks, which are optional)::

        hf_home/hub/models--testorg--alibert-implementation/
            refs/main                                   # the commit hash, no newline
            snapshots/<40-hex commit>/configuration_alibert.py
            snapshots/<40-hex commit>/modeling_alibert.py

    With `HF_HOME=hf_home` and `HF_HUB_OFFLINE=1`, transformers resolves
    `testorg/alibert-implementation--modeling_alibert.AliBertForSequenceClassification` from `refs/main`, then
    copies the files to
    `$HF_MODULES_CACHE/transformers_modules/testorg/alibert_hyphen_implementation/<commit>/`.
    The commit is derived from the file contents, so it changes when the code does.
    Returns the snapshot folder.
    """
    from tests.support.hub_cache import install_in_hub_cache

    with tempfile.TemporaryDirectory() as tmp:
        _write_alibert_code(Path(tmp), attention_form)
        return install_in_hub_cache(Path(tmp), hf_home, repo_id, names=ALIBERT_FILES)


# ----------------------------------------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------------------------------------

def build_trained(out_dir: Path, **kwargs: Any) -> Path:
    """The trained MiniLM reranker (tests/support/trained_reranker.py): trained weights for fidelity tests."""
    from tests.support.trained_reranker import build_trained_reranker

    return build_trained_reranker(out_dir, **kwargs)


_BUILDERS = {"bert": build_bert_reranker, "alibi": build_alibi_reranker, "trained": build_trained}


def _source_files(kind: str) -> list[Path]:
    if kind == "trained":  # its own code only: edits to this file do not retrain it
        from service import calibration
        from tests.support import trained_reranker

        return [Path(trained_reranker.__file__).resolve(), Path(calibration.__file__).resolve()]
    return [Path(__file__).resolve(), *(ALIBERT_SOURCE_DIR / name for name in ALIBERT_FILES)]


def _source_fingerprint(kind: str = "alibi") -> str:
    import tokenizers
    import torch
    import transformers

    digest = hashlib.sha256()
    for path in _source_files(kind):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(f"{transformers.__version__}/{tokenizers.__version__}/{torch.__version__}".encode())
    return digest.hexdigest()


def cached_model(kind: str, cache_root: Path, **kwargs: Any) -> Path:
    """Build a model once into `cache_root/<kind>-<hash>` and reuse it afterwards.

    `kind` is "bert" (`build_bert_reranker`), "alibi" (`build_alibi_reranker`) or "trained" (the trained
    MiniLM reranker, `tests/support/trained_reranker.py`); `kwargs` go to the builder.
    The hash covers the kind, the arguments, this file and the AliBERT modeling code (for "trained": its own
    module and service/calibration.py) and library versions,
    so a change to any of them builds a fresh folder. Safe across processes: the model is built in a temporary
    sibling folder and renamed into place atomically; a loser of a race discards its copy.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"kind must be one of {sorted(_BUILDERS)}, not {kind!r}")
    cache_root = Path(cache_root)
    key = json.dumps(
        {"kind": kind, "kwargs": kwargs, "source": _source_fingerprint(kind)}, sort_keys=True, default=str
    )
    final = cache_root / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if (final / "config.json").is_file():
        return final
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=cache_root))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; the folder may be mounted into a container as another user
    try:
        _BUILDERS[kind](tmp, **kwargs)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
