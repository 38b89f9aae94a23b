"""AliBERT configuration: a test stand-in for JinaBERT's `JinaBertConfig` (jinaai/jina-bert-implementation).

This file is copied into test model folders (or into a fake Hub cache entry) and loaded as *remote code*
(`trust_remote_code=True`), the way `jinaai/jina-reranker-v1-tiny-en` loads its `configuration_bert.py`.

It mirrors JinaBERT where it matters for serving:

* `position_embedding_type="alibi"`: no learned position embeddings; the encoder builds an ALiBi bias buffer
  of `num_attention_heads x max_position_embeddings^2` floats at construction.
* `feed_forward_type="geglu"`: a gated feed-forward (JinaBERT's `JinaBertGLUMLP`).
* `attn_implementation` is a *named* constructor argument stored as a plain attribute, defaulting to
  `"torch"` (PyTorch SDPA), exactly like JinaBERT's. Because `PretrainedConfig.from_dict` in transformers 4.x
  always calls `cls(**config_dict, attn_implementation=kwargs.pop("attn_implementation", None))`, a config
  loaded with `from_pretrained` / `AutoConfig` ends up with `attn_implementation=None`, so the model takes
  the eager attention path (matmul, softmax) unless a caller switches
  `encoder.layer[i].attention.self.attn_implementation` to `"torch"` after loading. Same as the real model.
"""

from transformers import PretrainedConfig


class AliBertConfig(PretrainedConfig):
    model_type = "alibert"

    def __init__(
        self,
        vocab_size=30528,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        max_position_embeddings=8192,
        type_vocab_size=2,
        initializer_range=0.02,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        position_embedding_type="alibi",
        use_cache=True,
        classifier_dropout=None,
        feed_forward_type="geglu",
        emb_pooler=None,
        attn_implementation="torch",
        **kwargs,
    ):
        super().__init__(pad_token_id=pad_token_id, **kwargs)

        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.hidden_act = hidden_act
        self.intermediate_size = intermediate_size
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.position_embedding_type = position_embedding_type
        self.use_cache = use_cache
        self.classifier_dropout = classifier_dropout
        self.feed_forward_type = feed_forward_type
        self.emb_pooler = emb_pooler
        # Plain attribute, not PretrainedConfig's `_attn_implementation` (see the module docstring).
        self.attn_implementation = attn_implementation
