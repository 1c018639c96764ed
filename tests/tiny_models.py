"""Tiny random HF models of every family the nnsight backend maps, built without any hub: a config
class, random weights, a byte-level tokenizer built here, saved as a folder `load_model` opens."""

from __future__ import annotations

from pathlib import Path

SPECIALS = ["<|endoftext|>", "<pad>"]


def byte_tokenizer(add_bos: bool = False):
    """A byte-level tokenizer with no merges: 256 byte tokens + `SPECIALS` (vocab 258); with `add_bos` it
    puts its BOS first by default, as Gemma's does (the model then counts as trained with it: `needs_bos`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 printable stand-ins for bytes
    vocab = {t: i for i, t in enumerate([*sorted(alphabet), *SPECIALS])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if add_bos:
        bos = SPECIALS[0]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<pad>")


def make_tiny(folder: Path, family: str, seed: int = 0, add_bos: bool = False) -> Path:
    """A 2-layer random `family` model (a key of RECIPES) saved with `byte_tokenizer(add_bos)` as an HF folder."""
    import torch

    config, model_cls = RECIPES[family]()
    torch.manual_seed(seed)
    model = model_cls(config)
    with torch.no_grad():  # norms and biases initialise to 1 and 0: move them, so no two hooks agree by accident
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(folder)
    byte_tokenizer(add_bos).save_pretrained(folder)
    return folder


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaConfig(vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False), LlamaForCausalLM


def _mistral():
    from transformers import MistralConfig, MistralForCausalLM

    return MistralConfig(vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, sliding_window=4), MistralForCausalLM


def _qwen2():  # biases on q/k/v
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2Config(vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True), Qwen2ForCausalLM


def _qwen3():
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return Qwen3Config(vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, max_position_embeddings=64, tie_word_embeddings=True), Qwen3ForCausalLM


def _gemma2():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    return Gemma2Config(vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=16, max_position_embeddings=64, sliding_window=4,
                        query_pre_attn_scalar=16, attn_logit_softcapping=5.0, final_logit_softcapping=30.0,
                        layer_types=["sliding_attention", "full_attention"]), Gemma2ForCausalLM


def _gemma3():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    return Gemma3TextConfig(vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=1, head_dim=16, max_position_embeddings=64, sliding_window=4,
                            query_pre_attn_scalar=16, layer_types=["sliding_attention", "full_attention"]), Gemma3ForCausalLM


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2Config(vocab_size=258, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=256, eos_token_id=256), GPT2LMHeadModel


def _gpt2_reorder():  # the attention in GPT2Attention._upcast_and_reordered_attn, scaled by 1 / (layer + 1) too
    config, model_cls = _gpt2()
    config.reorder_and_upcast_attn = config.scale_attn_by_inverse_layer_idx = True
    return config, model_cls


def _neox():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    return GPTNeoXConfig(vocab_size=258, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=64, rotary_pct=0.5, use_parallel_residual=True,
                         tie_word_embeddings=False), GPTNeoXForCausalLM


def _opt():  # a family the nnsight backend does not map
    from transformers import OPTConfig, OPTForCausalLM

    return OPTConfig(vocab_size=258, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                     max_position_embeddings=64, word_embed_proj_dim=32), OPTForCausalLM


RECIPES = {"llama": _llama, "mistral": _mistral, "qwen2": _qwen2, "qwen3": _qwen3, "gemma2": _gemma2, "gemma3": _gemma3,
           "gpt2": _gpt2, "gpt2_reorder": _gpt2_reorder, "gpt_neox": _neox, "opt": _opt}
