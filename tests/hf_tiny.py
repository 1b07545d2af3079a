"""Tiny Hugging Face checkpoints written by the tests: a WordPiece vocabulary and a BPE
vocabulary the test writes itself, BertConfig / GPT2Config of a few hundred thousand
parameters, `save_pretrained` into a temporary directory (safetensors). Offline."""

from __future__ import annotations

from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _words() -> list[str]:
    """Every lower-case word of the stdlib_docstrings corpus that occurs often, plus letters,
    so most tokens are whole words (the tokenizer is real WordPiece all the same)."""
    import collections
    import re

    from workbench.hf.data import stdlib_docstrings

    texts, _, _ = stdlib_docstrings()
    counts = collections.Counter(w for t in texts for w in re.findall(r"[a-z]+|[^\sa-z]", t.lower()))
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    common = [w for w, c in counts.most_common() if c >= 3 and w not in letters][:600]
    return letters + [f"##{c}" for c in letters] + common


def write_bert(root: Path, *, kind: str = "encoder", num_labels: int = 5, hidden: int = 32, layers: int = 2,
               heads: int = 4, seed: int = 0) -> Path:
    """A tiny BERT (bare encoder, or with a sequence-classification head) + WordPiece tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + _words()
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tok.save_pretrained(str(root))
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=4 * hidden, max_position_embeddings=64, num_labels=num_labels, pad_token_id=0)
    torch.manual_seed(seed)
    model = (BertForSequenceClassification if kind == "classifier" else BertModel)(cfg)
    model.save_pretrained(str(root), safe_serialization=True)
    return root


def write_gpt2(root: Path, *, hidden: int = 32, layers: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """A tiny GPT-2 + byte-level BPE tokenizer (256 byte tokens + merges learnt from pydoc text)."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    from workbench.hf.data import pydoc_topics

    root.mkdir(parents=True, exist_ok=True)
    docs, _ = pydoc_topics()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(docs[:20], vocab_size=400, min_frequency=2, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    bpe.save_model(str(root))
    tok = GPT2TokenizerFast(vocab=str(root / "vocab.json"), merges=str(root / "merges.txt"))
    tok.save_pretrained(str(root))
    cfg = GPT2Config(vocab_size=len(tok), n_embd=hidden, n_layer=layers, n_head=heads, n_positions=64,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    GPT2LMHeadModel(cfg).save_pretrained(str(root), safe_serialization=True)
    return root
